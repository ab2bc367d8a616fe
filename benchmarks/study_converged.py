"""Table (a), redone: converged accuracy per (size, magnitude), 3 seeds, in the gated regime.

    python benchmarks/study_converged.py [--seeds 0,1,2] [--sizes 1.0,0.25,0.1,0.05] [--magnitudes 0,5,10,15]

For each seed: the regime's dense model (benchmarks/recipes/fmnist_regime_5k.yaml, M = 0) trained to a
validation plateau (its gate figures: clean train accuracy, validation accuracy, gap), then
`edgecomp.study` from it: every (size, M) cell fine-tuned to its own validation plateau. Everything is
written under benchmarks/results/converged/ one file per finished cell (a killed run resumes), and the
finished cells are summarised into benchmarks/results/study_converged.{json,md} after every seed.
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

from edgecomp.convergence import PlateauRule  # noqa: E402
from edgecomp.recipe import load_recipe  # noqa: E402
from edgecomp.stats import mean_interval, paired_difference  # noqa: E402
from edgecomp.study import study  # noqa: E402

RECIPE = HERE / "recipes" / "fmnist_regime_5k.yaml"
RUNS = HERE / "results" / "converged"  # cells committed as they land; size models and states ignored
GATE_GAP = 0.03


def parse_list(text: str, kind=float) -> list:
    return [kind(v) for v in text.split(",") if v.strip()]


def run_seed(seed: int, sizes: list[float], magnitudes: list[float], rule: PlateauRule) -> dict:
    sets = [f"seed={seed}"]
    dense_recipe = load_recipe(str(RECIPE), sets + ["augment.policy=none"])  # the gate's model: crop + flip only
    dense = train_reference(dense_recipe, RUNS / f"dense-s{seed}", RUNS / f"dense-s{seed}.pt", rule)
    if dense["train_val_gap"] <= GATE_GAP:  # PLAN.md: no claim is tested in a regime that fails its gate
        raise SystemExit(f"seed {seed}: the gate fails (train - val gap {dense['train_val_gap']:.4f} <= {GATE_GAP}); "
                         "no cell is run. Choose another regime first (a dated section in benchmarks/PLAN.md).")
    recipe = load_recipe(str(RECIPE), sets + [f"dense.weights={RUNS / f'dense-s{seed}.pt'}", "dense.epochs=0"])
    result = study(recipe, sizes=sizes, magnitudes=magnitudes, rule=rule, out=RUNS / f"study-s{seed}",
                   workers=1, threads=2)
    summary = json.loads((result.out / "study.json").read_text())
    return {"dense": {k: dense[k] for k in ("epochs", "converged", "train_accuracy_clean", "val_accuracy",
                                              "test_accuracy", "train_val_gap", "val_curve")},
            "val": summary["grid"], "test": summary["test_grid"], "epochs": summary["epochs"],
            "converged": summary["converged"], "best": summary["best"]}


def summarise(per_seed: dict[int, dict], sizes: list[float], magnitudes: list[float], rule: PlateauRule) -> dict:
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
    return {"seeds": seeds, "sizes": sizes, "magnitudes": magnitudes, "rule": rule.as_dict(),
            "rule_text": rule.describe(), "gate": {"threshold": GATE_GAP, "train_val_gap": gaps,
                                                   "passes": all(g > GATE_GAP for g in gaps)},
            "table": table, "per_seed": {str(k): v for k, v in per_seed.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sizes", default="1.0,0.25,0.1,0.05")
    parser.add_argument("--magnitudes", default="0,5,10,15")
    args = parser.parse_args()
    seeds, sizes, magnitudes = parse_list(args.seeds, int), parse_list(args.sizes), parse_list(args.magnitudes)
    rule, per_seed = PlateauRule(patience=3), {}
    for seed in seeds:
        per_seed[seed] = run_seed(seed, sizes, magnitudes, rule)
        out = HERE / "results" / "study_converged.json"
        out.write_text(json.dumps(summarise(per_seed, sizes, magnitudes, rule), indent=1) + "\n")
        print(f"seed {seed} done: {out}", flush=True)


if __name__ == "__main__":
    main()
