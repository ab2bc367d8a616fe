"""Accuracy at equal measured latency: latency-aware pruning against Torch-Pruning to a MACs target (issue 22).

    .venv/bin/python benchmarks/latency_accuracy.py dense --seeds 0,1,2,3,4,5   # each seed's dense model
    .venv/bin/python benchmarks/latency_accuracy.py run --budgets 0.25 --seeds 0,1,2  # the spread first
    .venv/bin/python benchmarks/latency_accuracy.py seeds                       # n from the spread (PLAN.md)
    .venv/bin/python benchmarks/latency_accuracy.py run --budgets 0.5,0.25 --seeds 0,...,n-1
    .venv/bin/python benchmarks/latency_accuracy.py timing                      # final models, one loop each
    .venv/bin/python benchmarks/latency_accuracy.py summary

The regime and the decision rule are in benchmarks/PLAN.md (issue 22 and its amendment, both written before any
run): ResNet-20 on regime 2's Fashion-MNIST split (2,000 training images, 5,000 validation images that decide,
the full 10,000-image test set that only reports), onnxruntime fp32 on this CPU, 1 thread, batch 1.

Per seed, the dense model is trained to its validation plateau exactly as regime 2's gate models were (crop + flip,
`PlateauRule(patience=5, max_epochs=100)`). Per seed and budget (a fraction of the dense latency):
  tp_macs  plain Torch-Pruning (global l2, round_to 4) to a MACs target, searched by bisection so that the dense
           model pruned in one shot to it runs at the budget (timed beside the dense model, within 2%);
  latency  `prune.target.latency` = the budget: edgecomp's latency model and closed loop.
Both: 3 pruning steps, 15 fine-tune epochs per step, crop + flip, the same seed (regime 2's `tp_baseline`).
`timing` then times dense, tp_macs and latency alternately in one loop (300 rounds) per seed and budget, with
nothing else running. One JSON per finished piece under benchmarks/results/latency_accuracy/, so a stopped job
resumes; compress resumes a half-finished run from benchmarks/runs/latency_accuracy/.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
RECIPE = HERE / "recipes" / "fmnist_regime_2k.yaml"
OUT = HERE / "results" / "latency_accuracy"
RUNS = HERE / "runs" / "latency_accuracy"
SHAPE = (1, 28, 28)
STEPS, EPOCHS_PER_STEP = 3, 15
METHODS = ("tp_macs", "latency")
SEARCH_TOLERANCE, SEARCH_ROUNDS, SEARCH_ITERATIONS = 0.02, 200, 12
FINAL_ROUNDS = 300
BASELINE_SETS = ["augment.policy=none", "augment.schedule.kind=constant", "augment.schedule.dense=0"]
EFFECT, HALF_WIDTH, MIN_SEEDS = 1.0, 0.5, 5  # points (PLAN.md)


def stamp() -> dict:
    return {"host": platform.node(), "python": sys.version.split()[0],
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": "benchmarks/latency_accuracy.py " + " ".join(sys.argv[1:])}


def dense_weights(seed: int) -> Path:
    return OUT / f"dense-s{seed}.pt"


# ---------------------------------------------------------------- dense models


def train_dense(seed: int) -> dict:
    """Regime 2's gate model for `seed`: crop + flip, trained to its validation plateau (one torch thread)."""
    import torch

    torch.set_num_threads(1)
    from dense_reference import train_reference

    from edgecomp.compression.convergence import PlateauRule
    from edgecomp.core.console import console
    from edgecomp.core.recipe import load_recipe

    console.quiet = True
    recipe = load_recipe(str(RECIPE), [f"seed={seed}", "augment.policy=none"])
    record = train_reference(recipe, OUT / f"dense-s{seed}", dense_weights(seed),
                             PlateauRule(patience=5, max_epochs=100))
    return {"seed": seed, **{k: record[k] for k in ("epochs", "val_accuracy", "test_accuracy", "weights_sha256")}}


def pool(jobs: list, workers: int) -> None:
    """Run (function, *args) jobs in worker processes, printing each result as it lands."""
    with ProcessPoolExecutor(max_workers=workers) as executor:
        futures = {executor.submit(job[0], *job[1:]): job for job in jobs}
        for future in as_completed(futures):
            print(json.dumps(future.result()), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["dense", "run", "seeds", "timing", "summary"])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budgets", default="0.5,0.25")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [float(b) for b in args.budgets.split(",")]
    OUT.mkdir(parents=True, exist_ok=True)
    if args.what == "dense":
        pool([(train_dense, s) for s in seeds], args.workers)


if __name__ == "__main__":
    main()
