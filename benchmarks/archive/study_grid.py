"""Finding A on Fashion-MNIST: best magnitude vs model size, 3 seeds, mean ± std.

    python benchmarks/archive/study_grid.py

For each seed, `edgecomp study` on the quickstart recipe (8,000 training images), starting from that seed's
dense model of benchmarks/archive/findings.sh (benchmarks/archive/runs/findings/constant-s<seed>; trained here first if
missing), sizes 1.0/0.5/0.25 of the dense MACs × magnitudes 0/5/10/15/20, 1 fine-tune epoch per cell, one process
with one thread (it shares the machine with benchmarks/archive/findings.sh).
Writes benchmarks/archive/results/study_magnitude_vs_size.{json,md}.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import edgecomp
from edgecomp.core.recipe import load_recipe
from edgecomp.compression.study import best_per_size, fit_linear, study

HERE = Path(__file__).resolve().parent
SEEDS, SIZES, MAGNITUDES, EPOCHS = [0, 1, 2], [1.0, 0.5, 0.25], [0.0, 5.0, 10.0, 15.0, 20.0], 1
COMMON = ["data.train_subset=8000"]


def dense_weights(seed: int) -> Path:
    run = HERE / "runs" / "findings" / f"constant-s{seed}"
    checkpoint = run / "checkpoints" / "step_000.pt"
    if not checkpoint.is_file():
        edgecomp.compress(load_recipe("quickstart.yaml", COMMON + [f"seed={seed}", "augment.schedule.kind=constant"]),
                          out=run, resume=True)
    return checkpoint


def main() -> None:
    start, per_seed = time.perf_counter(), {}
    for seed in SEEDS:
        sets = COMMON + [f"seed={seed}", f"dense.weights={dense_weights(seed)}", "dense.epochs=0"]
        result = study(load_recipe("quickstart.yaml", sets), sizes=SIZES, magnitudes=MAGNITUDES, epochs=EPOCHS,
                       out=HERE / "runs" / f"study-s{seed}", workers=1, threads=1)
        per_seed[seed] = result.grid
    wall = time.perf_counter() - start
    mean = {s: {m: statistics.mean(per_seed[k][s][m] for k in SEEDS) for m in MAGNITUDES} for s in SIZES}
    std = {s: {m: statistics.stdev(per_seed[k][s][m] for k in SEEDS) for m in MAGNITUDES} for s in SIZES}
    best_each = {k: best_per_size(per_seed[k]) for k in SEEDS}
    best_mean = best_per_size(mean)
    fit = fit_linear(best_mean)
    payload = {"seeds": SEEDS, "sizes": SIZES, "magnitudes": MAGNITUDES, "epochs": EPOCHS, "wall_s": round(wall),
               "grid_per_seed": {str(k): {str(s): {str(m): a for m, a in row.items()} for s, row in g.items()}
                                 for k, g in per_seed.items()},
               "best_per_seed": {str(k): {str(s): m for s, m in b.items()} for k, b in best_each.items()},
               "best_of_mean": {str(s): m for s, m in best_mean.items()}, "fit": fit}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "study_magnitude_vs_size.json").write_text(json.dumps(payload, indent=1))
    lines = ["# Best magnitude vs model size (finding A)", "", "Command: `python benchmarks/archive/study_grid.py`", "",
             f"Quickstart recipe (ResNet-20, Fashion-MNIST, 8,000 training images), seeds {SEEDS}, {EPOCHS} "
             f"fine-tune epoch per cell from each seed's dense model; validation accuracy mean ± std. Host: "
             f"{platform.platform()}; wall time {wall / 60:.1f} min; {datetime.now(timezone.utc):%Y-%m-%d}.", "",
             "| MACs ratio | " + " | ".join(f"M={m:g}" for m in MAGNITUDES) + " | best M (mean) | best M per seed |",
             "|---:|" + "---:|" * (len(MAGNITUDES) + 2)]
    for s in SIZES:
        cells = " | ".join(f"{mean[s][m]:.4f} ± {std[s][m]:.4f}" for m in MAGNITUDES)
        lines.append(f"| {s:g} | {cells} | {best_mean[s]:g} | {', '.join(f'{best_each[k][s]:g}' for k in SEEDS)} |")
    lines += ["", f"Least-squares linear schedule through the best magnitudes: dense = {fit['dense']}, "
              f"min = {fit['min']}.", ""]
    (HERE / "results" / "study_magnitude_vs_size.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
