"""Accuracy of small models from the shipped ResNet-20 reference: which plan, and which training, gives the better
model at the same latency? One script for issue 32 (planners at matched latency) and issue 35 (training arms on
one fixed pruned network).

    .venv/bin/python benchmarks/small_model.py arch [--budgets 0.6 0.5 0.4]   # timing: nothing else may run
    .venv/bin/python benchmarks/small_model.py train --cells planners --seeds 0 1 2 3 4 5 [--workers 2]
    .venv/bin/python benchmarks/small_model.py page

Every architecture is pruned in one shot from benchmarks/../edgecomp/recipes/weights/fmnist_resnet20.pt (94.09%
test), so every run starts from the same dense weights. `arch` (onnxruntime fp32, 1 thread, batch 1, this host):
  model_B    `prune.target.planner: model` at budget B (a fraction of the dense latency), the closed loop
  aligned_B  Torch-Pruning (global group L2, round_to = the probed block) at the MACs share, among a grid around
             the aligned closed loop's own, whose latency is closest to model_B's (timed in one loop, 300 rounds)
  control_B  model_B's per-layer channel counts with the channels inside each layer chosen at random (the same
             shapes: the same latency; it separates layer allocation from channel choice)
and then times every architecture beside the dense model in one final loop of 300 rounds (order shuffled).

`train`: each cell fine-tunes one architecture for 20 epochs (SGD, lr 0.02 cosine, weight decay 5e-4, batch
128, crop + flip) on a fixed 10,000-image subset of the training split (data.split_seed 0: the same images in
every cell); the seed sets only the fine-tune's randomness (order, crops, flips). Validation (5,000 images,
disjoint from training) after every epoch is committed as the curve; the full 10,000-image test set is evaluated
once at the end and chooses nothing. One torch thread per cell; one JSON per finished cell under
benchmarks/results/small_model/cells/, so a stopped job resumes. Rules: benchmarks/PLAN.md (issue 32, 35).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
REFERENCE = HERE.parent / "edgecomp" / "recipes" / "weights" / "fmnist_resnet20.pt"
OUT = HERE / "results" / "small_model"
ARCH = OUT / "arch"
CELLS = OUT / "cells"
SHAPE = (1, 28, 28)
FINAL_ROUNDS = 300
MATCH_GRID = (0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.15)  # aligned MACs shares tried around its own closed loop's
EPOCHS = 20
RECIPE = {
    "name": "small_model", "seed": 0,
    "model": {"arch": "cifar_resnet20", "num_classes": 10, "in_channels": 1, "input_size": 28},
    "data": {"dataset": "fashion_mnist", "train_subset": 10000, "val_subset": 5000, "batch_size": 128},
    "finetune": {"epochs_per_step": EPOCHS, "optim": {"optimizer": "sgd", "lr": 0.02, "weight_decay": 0.0005}},
    "augment": {"policy": "none", "erasing": False, "flip": True, "crop_padding": 2,
                "schedule": {"kind": "constant", "dense": 0}},
}
CELL_SETS = {  # which cells `train --cells NAME` runs: (arm, architecture) per budget
    "planners": [(arm, f"{arm}_{budget}") for budget in (0.6, 0.5, 0.4) for arm in ("model", "aligned", "control")],
}


def stamp() -> dict:
    return {"host": platform.node(), "python": sys.version.split()[0],
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": "benchmarks/small_model.py " + " ".join(sys.argv[1:])}


def reference():
    import torch

    from edgecomp.core.models import load_model_file

    return load_model_file(REFERENCE).eval(), torch.zeros(1, *SHAPE)


# ---------------------------------------------------------------- architectures (timing)


def random_channels(dense, example, counts: dict, seed: int):
    """A copy of `dense` pruned to the per-layer `counts` (channel_counts of another plan), the channels inside
    each dependency group drawn at random (Torch-Pruning's RandomImportance, seeded)."""
    import torch

    from edgecomp.compression.prune import Planner, dense_profile, ignored_layers, traceable
    from edgecomp.core.recipe import PruneSection
    from edgecomp.deploy.latency import channel_counts

    torch.manual_seed(seed)
    variant = copy.deepcopy(dense).eval()
    cfg = PruneSection(target={"macs": 0.5}, importance="random", round_to=1, max_layer_ratio=0.99)
    names = {module: name for name, module in variant.named_modules()}
    with traceable(variant) as fixed:
        planner = Planner(variant, example, cfg, ignored_layers(variant, cfg, 10) + fixed,
                          dense_profile(variant, example))
        graph, plan = planner.pruner.DG, []
        for ranked in planner.ranked:
            wanted = counts[names[ranked.root]][1 if graph.is_out_channel_pruning_fn(ranked.fn) else 0]
            if wanted < ranked.size:
                plan.append((ranked, ranked.size - wanted, ranked.removed(ranked.size - wanted)))
        for group in planner.groups(plan):
            group.prune()
    if channel_counts(variant) != counts:
        raise RuntimeError("the random-channel control did not land on the plan's counts")
    return variant


def build_architectures(budgets: list[float]) -> None:
    """model_B, aligned_B (latency matched to model_B) and control_B per budget, saved as model files, then all
    timed beside the dense model in one final loop (arch/arch.json)."""
    import torch

    torch.set_num_threads(1)
    from planner_speed import measurer

    from edgecomp.compression.latency_prune import aligned_proposals, build_table, meet_budget, model_proposals
    from edgecomp.compression.latency_run import whole_timer
    from edgecomp.core.models import measure_size, model_payload
    from edgecomp.core.recipe import ModelSection, PruneSection
    from edgecomp.core.rundir import save_tensors
    from edgecomp.deploy.latency import channel_counts
    from edgecomp.deploy.latency.profiles import Profiler, ProfileSettings
    from edgecomp.deploy.runners import HostRunner

    dense, example = reference()
    cfg_model = ModelSection(**RECIPE["model"])
    dense_macs = measure_size(dense, example).macs
    settings = ProfileSettings(device="host", runtime="onnxruntime", threads=1, iterations=30)
    record: dict = {"budgets": {}, **stamp()}
    models: dict = {"dense": dense}
    with HostRunner() as runner:
        profiler = Profiler(runner, settings, SHAPE)
        base = PruneSection(target={"latency": budgets[0]})
        table, build = build_table(dense, example, base, 10, settings.key(SHAPE, "cifar_resnet20"), profiler.observe,
                                   base.target.profiles, 0, whole=whole_timer(profiler, 100), widths="probed")
        block = build.probe_step or base.round_to
        unit = table.predict({n: c for n, c in channel_counts(dense).items() if n in table.layers})
        record.update(block=block, probe=build.probe, steps=table.steps)
        measure = measurer(profiler, dense)
        for budget in budgets:
            cfg = base.model_copy(update={"target": base.target.model_copy(update={"latency": budget})})
            planned = meet_budget(*model_proposals(dense, example, cfg, table, unit, 10), budget, cfg.target, measure)
            aligned = meet_budget(*aligned_proposals(dense, example, cfg, block, dense_macs, 1.0, 10), budget,
                                  cfg.target, measure)
            propose, _ = aligned_proposals(dense, example, cfg, block, dense_macs, 1.0, 10)
            share = measure_size(aligned.model, example).macs / dense_macs
            grid = [propose(share * g).model for g in MATCH_GRID]
            timed = profiler.compare([dense, planned.model, *grid], iterations=FINAL_ROUNDS)["ratios"]
            target = timed[1]["p50"]
            closest = min(range(len(grid)), key=lambda i: abs(timed[2 + i]["p50"] - target))
            models[f"model_{budget}"], models[f"aligned_{budget}"] = planned.model, grid[closest]
            models[f"control_{budget}"] = random_channels(dense, example, channel_counts(planned.model), 0)
            record["budgets"][str(budget)] = {
                "model_loop": [a.as_dict() for a in planned.attempts], "aligned_loop": [a.as_dict() for a in aligned.attempts],
                "match": [{"macs_share": round(share * g, 4), "latency": timed[2 + i]["p50"]}
                          for i, g in enumerate(MATCH_GRID)], "model_latency_in_match": target}
        names = list(models)
        final = profiler.compare([models[n] for n in names], iterations=FINAL_ROUNDS)
    ARCH.mkdir(parents=True, exist_ok=True)
    record["architectures"] = {}
    for name, ratio in zip(names, final["ratios"]):
        size = measure_size(models[name], example)
        record["architectures"][name] = {"latency": ratio["p50"], "low": ratio["low"], "high": ratio["high"],
                                         "macs": size.macs / dense_macs, "params": size.params,
                                         "counts": channel_counts(models[name])}
        if name != "dense":
            save_tensors(ARCH / f"{name}.pt", model_payload(models[name], cfg_model))
    record["final_rounds"] = final["rounds"]
    (ARCH / "arch.json").write_text(json.dumps(record, indent=1))
    for name, row in record["architectures"].items():
        print(f"{name:14s} latency {row['latency']:.3f} [{row['low']:.3f}-{row['high']:.3f}]  MACs {row['macs']:.3f}")


# ---------------------------------------------------------------- fine-tuning cells


def cell_path(cells: str, arm: str, arch: str, seed: int) -> Path:
    return CELLS / f"{cells}__{arm}__{arch}__s{seed}.json"


def train_cell(cells: str, arm: str, arch: str, seed: int) -> dict:
    """Fine-tune architecture `arch` with arm `arm`'s training for EPOCHS epochs; the validation curve and the
    final test accuracy go to the cell's JSON."""
    import torch

    torch.set_num_threads(1)
    from edgecomp.compression.augment import Augmenter
    from edgecomp.compression.objective import Objective
    from edgecomp.compression.train import InputSpec, TrainJob, evaluate, train
    from edgecomp.core.console import console
    from edgecomp.core.data import load_data
    from edgecomp.core.models import load_model_file, measure_size
    from edgecomp.core.recipe import validate

    console.quiet = True
    path = cell_path(cells, arm, arch, seed)
    if path.is_file():
        return {"cell": path.name, "skipped": True}
    recipe = validate({**RECIPE, "seed": seed})
    data = load_data(recipe.data, recipe.model)
    spec = InputSpec.create(recipe.model, data.mean, data.std, torch.device("cpu"))
    model = load_model_file(ARCH / f"{arch}.pt").train()
    curve: list[float] = []
    started = time.perf_counter()
    torch.manual_seed(seed)
    job = TrainJob(data=data.train, spec=spec, augment=Augmenter(recipe.augment), magnitude=0.0,
                   optim=recipe.finetune.optim, epochs=EPOCHS, seed=seed, label=f"{arm} {arch} s{seed}",
                   objective=Objective(recipe.teacher, 1.0))
    history = train(model, job, lambda epoch, stats: curve.append(evaluate(model, data.val, spec)))
    result = {"cells": cells, "arm": arm, "arch": arch, "seed": seed, "epochs": EPOCHS, "val_curve": curve,
              "val_accuracy": curve[-1], "test_accuracy": evaluate(model, data.test, spec),
              "train_loss": [round(h.loss, 5) for h in history], "macs": measure_size(model, spec.example()).macs,
              "seconds": round(time.perf_counter() - started, 1), **stamp()}
    CELLS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return {k: result[k] for k in ("arm", "arch", "seed", "val_accuracy", "test_accuracy", "seconds")}


def run_cells(cells: str, seeds: list[int], workers: int) -> None:
    """Every (arm, architecture) of the set for each seed, seed by seed, in `workers` processes."""
    jobs = [(cells, arm, arch, seed) for seed in seeds for arm, arch in CELL_SETS[cells]
            if not cell_path(cells, arm, arch, seed).is_file()]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(train_cell, *job): job for job in jobs}
        for future in as_completed(futures):
            try:
                print(json.dumps(future.result()), flush=True)
            except Exception as exc:  # one failed cell is reported; the others go on
                print(f"FAILED {futures[future]}: {type(exc).__name__}: {exc}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    arch = commands.add_parser("arch", help="prune and time the architectures (nothing else may run)")
    arch.add_argument("--budgets", nargs="+", type=float, default=[0.6, 0.5, 0.4])
    train_parser = commands.add_parser("train", help="fine-tune the cells of a set")
    train_parser.add_argument("--cells", choices=sorted(CELL_SETS), default="planners")
    train_parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4, 5])
    train_parser.add_argument("--workers", type=int, default=2)
    commands.add_parser("page", help="write results/small_model.md from the cells")
    args = parser.parse_args()
    if args.command == "arch":
        build_architectures(args.budgets)
    elif args.command == "train":
        run_cells(args.cells, args.seeds, args.workers)
    else:
        from small_model_page import write_page

        write_page()


if __name__ == "__main__":
    main()
