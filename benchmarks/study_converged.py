"""Table (a), redone: converged accuracy per (size, magnitude), 3 seeds, in the gated regime.

    python benchmarks/study_converged.py [--recipe benchmarks/recipes/fmnist_regime_2k.yaml] [--seeds 0,1,2]
        [--sizes 1.0,0.25,0.1,0.05] [--magnitudes 0,5,10,15] [--dense-patience 5] [--workers 2 --threads 1]
    python benchmarks/study_converged.py --seeds 3,4,5 --gate-only    # dense models only, for decisive.py

For each seed: the regime's dense model (crop + flip only) trained to a validation plateau (its gate
figures: clean train accuracy, validation accuracy, gap). Every seed's gate is measured before any cell
runs; if one fails, the script stops. Then `edgecomp.compression.study` from each dense model: every (size, M) cell
fine-tuned to its own validation plateau. Everything is written under
benchmarks/results/converged/<recipe name>/, one file per finished cell (a killed run resumes), and the
finished cells are summarised into benchmarks/results/study_converged.json after every seed.
Decision rules: benchmarks/PLAN.md (written before these runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from dense_reference import train_reference  # noqa: E402

from edgecomp.compression.convergence import PlateauRule  # noqa: E402
from edgecomp.core.recipe import load_recipe  # noqa: E402
from paired_stats import mean_interval, paired_difference  # noqa: E402
from edgecomp.compression.study import study  # noqa: E402

RECIPE = HERE / "recipes" / "fmnist_regime_2k.yaml"
RESULTS = HERE / "results" / "converged"  # one folder per regime; cells committed as they land
GATE_GAP = 0.03


def parse_list(text: str, kind=float) -> list:
    return [kind(v) for v in text.split(",") if v.strip()]


def gate(recipe_path: Path, runs: Path, seed: int, rule: PlateauRule, stop_on_fail: bool = True) -> dict:
    """The seed's dense model (crop + flip only) trained to its plateau; stops the script if the gate fails
    (unless stop_on_fail is off: --gate-only records every seed's verdict in gates.json instead)."""
    dense_recipe = load_recipe(str(recipe_path), [f"seed={seed}", "augment.policy=none"])
    dense = train_reference(dense_recipe, runs / f"dense-s{seed}", runs / f"dense-s{seed}.pt", rule)
    gap = dense["train_val_gap"]
    record_gate(runs, seed, gap)
    if gap > GATE_GAP:
        print(f"seed {seed}: gate passes (train - val gap {gap:.4f})", flush=True)
    elif stop_on_fail:  # PLAN.md: no claim is tested in a regime that fails its gate
        raise SystemExit(f"seed {seed}: the gate fails (train - val gap {gap:.4f} <= {GATE_GAP}); no cell is run. "
                         "Choose another regime first (a dated section in benchmarks/PLAN.md).")
    else:
        print(f"seed {seed}: the gate fails (train - val gap {gap:.4f} <= {GATE_GAP}); recorded, seed dropped")
    return dense


def record_gate(runs: Path, seed: int, gap: float) -> None:
    """runs/gates.json: every gated seed's gap and verdict (decisive.py judges only on seeds that pass)."""
    path = runs / "gates.json"
    gates = json.loads(path.read_text()) if path.is_file() else {}
    gates[str(seed)] = {"train_val_gap": gap, "threshold": GATE_GAP, "passes": gap > GATE_GAP}
    path.write_text(json.dumps(dict(sorted(gates.items(), key=lambda kv: int(kv[0]))), indent=1) + "\n")


def run_seed(recipe_path: Path, runs: Path, seed: int, dense: dict, sizes: list[float], magnitudes: list[float],
             rule: PlateauRule, workers: int, threads: int) -> dict:
    sets = [f"seed={seed}", f"dense.weights={runs / f'dense-s{seed}.pt'}", "dense.epochs=0"]
    result = study(load_recipe(str(recipe_path), sets), sizes=sizes, magnitudes=magnitudes, rule=rule,
                   out=runs / f"study-s{seed}", workers=workers, threads=threads)
    summary = json.loads((result.out / "study.json").read_text())
    return {"dense": {k: dense[k] for k in ("epochs", "converged", "train_accuracy_clean", "val_accuracy",
                                              "test_accuracy", "train_val_gap", "val_curve")},
            "val": summary["grid"], "test": summary["test_grid"], "epochs": summary["epochs"],
            "converged": summary["converged"], "best": summary["best"]}


def summarise(per_seed: dict[int, dict], sizes: list[float], magnitudes: list[float], rule: PlateauRule,
              dense_rule: PlateauRule, recipe_path: Path) -> dict:
    seeds = sorted(per_seed)
    key = lambda v: str(float(v))  # noqa: E731
    table = {}
    for size in sizes:
        row = {}
        for m in magnitudes:
            vals = [per_seed[k]["val"][key(size)][key(m)] for k in seeds]
            tests = [per_seed[k]["test"][key(size)][key(m)] for k in seeds]
            row[key(m)] = {"val_mean": statistics.fmean(vals), "test": mean_interval(tests)}
        best_m = max(magnitudes, key=lambda m: (row[key(m)]["val_mean"], -m))  # validation chooses
        zero = {k: per_seed[k]["test"][key(size)][key(0.0)] for k in seeds} if 0.0 in magnitudes else None
        best = {k: per_seed[k]["test"][key(size)][key(best_m)] for k in seeds}
        table[key(size)] = {"cells": row, "best_m_by_val": best_m,
                            "best_vs_m0_test": paired_difference(best, zero).as_dict() if zero else None}
    gaps = [per_seed[k]["dense"]["train_val_gap"] for k in seeds]
    return {"recipe": str(recipe_path.relative_to(HERE.parent)), "seeds": seeds, "sizes": sizes,
            "magnitudes": magnitudes, "rule": rule.as_dict(), "rule_text": rule.describe(),
            "dense_rule_text": dense_rule.describe(), "gate": {"threshold": GATE_GAP, "train_val_gap": gaps,
                                                   "passes": all(g > GATE_GAP for g in gaps)},
            "table": table, "per_seed": {str(k): v for k, v in per_seed.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sizes", default="1.0,0.25,0.1,0.05")
    parser.add_argument("--magnitudes", default="0,5,10,15")
    parser.add_argument("--dense-patience", type=int, default=5, help="the dense models' plateau patience")
    parser.add_argument("--dense-max-epochs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="cell processes in parallel")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per cell process")
    parser.add_argument("--gate-only", action="store_true",
                        help="train and gate the seeds' dense models, run no cell (new seeds for decisive.py)")
    args = parser.parse_args()
    seeds, sizes, magnitudes = parse_list(args.seeds, int), parse_list(args.sizes), parse_list(args.magnitudes)
    recipe_path = args.recipe.resolve()
    runs = RESULTS / load_recipe(str(recipe_path)).name
    rule, dense_rule = PlateauRule(patience=3), PlateauRule(patience=args.dense_patience,
                                                            max_epochs=args.dense_max_epochs)
    if args.gate_only:  # new seeds for decisive.py: a failing seed is recorded and dropped, not fatal
        for seed in seeds:
            gate(recipe_path, runs, seed, dense_rule, stop_on_fail=False)
        return
    dense = {seed: gate(recipe_path, runs, seed, dense_rule) for seed in seeds}  # every gate before any cell
    per_seed = {}
    for seed in seeds:
        per_seed[seed] = run_seed(recipe_path, runs, seed, dense[seed], sizes, magnitudes, rule,
                                  args.workers, args.threads)
        out = HERE / "results" / "study_converged.json"
        out.write_text(json.dumps(summarise(per_seed, sizes, magnitudes, rule, dense_rule, recipe_path),
                                  indent=1) + "\n")
        print(f"seed {seed} done: {out}", flush=True)


if __name__ == "__main__":
    main()
