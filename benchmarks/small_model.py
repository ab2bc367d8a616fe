"""Accuracy of small models from the shipped ResNet-20 reference: which training gives the better model for one
fixed pruned network? (Issue 35; issue 32 planned its planner comparison here too, see PLAN.md.)

    .venv/bin/python benchmarks/small_model.py arch [--budgets 0.5 0.3] [--max-block 4]   # timing: nothing else may run
    .venv/bin/python benchmarks/small_model.py train --cells training --seeds 0 1 2 3 4 5 [--workers 1] [--arms ...]
    .venv/bin/python benchmarks/small_model.py page

`arch` prunes the reference (edgecomp/recipes/weights/fmnist_resnet20.pt, 94.09% test) once per budget with the
product's latency target (onnxruntime fp32, 1 thread, batch 1, this host; `prune.target.max_block` caps the
channel block, since a block of 16 leaves ResNet-20's 16-channel stage unprunable), times every architecture
beside the dense model in one final loop of 300 rounds, and saves them under results/small_model/arch/. Every
arm at a budget then fine-tunes the same pruned weights, so latency and MACs are equal by construction.

`train`: each cell fine-tunes one architecture for 20 epochs (SGD, lr 0.02 cosine, weight decay 5e-4, batch
128) on a fixed 10,000-image subset of the training split (data.split_seed 0: the same images in every cell);
the seed sets only the fine-tune's randomness. Arms (ARMS): plain (crop + flip, cross-entropy), kd (plain +
distillation from the reference), magnitude (RandAugment at the study's linear schedule's magnitude for the
size), rep (training-only rep branches learning a RandAugment M = 10 view, folded at the end), kd_rep. Validation
(5,000 images, disjoint from training) after every epoch is committed as the curve; the full 10,000-image test
set is evaluated once at the end and chooses nothing. One torch thread per cell; one JSON per finished cell
under results/small_model/cells/, so a stopped job resumes. Rules: benchmarks/PLAN.md (issue 35).
"""

from __future__ import annotations

import argparse
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
EPOCHS = 20
RECIPE = {
    "name": "small_model", "seed": 0,
    "model": {"arch": "cifar_resnet20", "num_classes": 10, "in_channels": 1, "input_size": 28},
    "data": {"dataset": "fashion_mnist", "train_subset": 10000, "val_subset": 5000, "batch_size": 128},
    "finetune": {"epochs_per_step": EPOCHS, "optim": {"optimizer": "sgd", "lr": 0.02, "weight_decay": 0.0005}},
    "augment": {"policy": "none", "erasing": False, "flip": True, "crop_padding": 2,
                "schedule": {"kind": "constant", "dense": 0}},
}
KD_WEIGHT, STRONG, DENSE_M = 0.5, 10.0, 14.0  # PLAN.md, issue 35: frozen before the runs
ARMS = {  # recipe sections each arm changes (plain: none); magnitude's M is set per size in `arm_recipe`
    "plain": {},
    "kd": {"teacher": {"kd_weight": KD_WEIGHT}},
    "magnitude": {"augment": {"policy": "randaugment", "num_ops": 2}},
    "rep": {"augment": {"policy": "randaugment", "num_ops": 2}, "aux": {"kind": "rep", "strong_magnitude": STRONG}},
    "kd_rep": {"augment": {"policy": "randaugment", "num_ops": 2}, "aux": {"kind": "rep", "strong_magnitude": STRONG},
               "teacher": {"kd_weight": KD_WEIGHT}},
}
CELL_SETS = {  # which cells `train --cells NAME` runs: (arm, architecture)
    "training": [(arm, f"aligned_{budget}") for budget in (0.5, 0.3) for arm in ("plain", "kd", "magnitude", "rep")],
    "training_kd_rep": [("kd_rep", f"aligned_{budget}") for budget in (0.5, 0.3)],
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


def build_architectures(budgets: list[float], max_block: int) -> None:
    """aligned_B per budget B: the product's latency target, one step from the reference; then all timed beside
    the dense model in one final loop (arch/arch.json)."""
    import tempfile

    import torch

    torch.set_num_threads(1)
    from edgecomp.compression.latency import prepare_latency
    from edgecomp.core.models import channel_counts, measure_size, model_payload
    from edgecomp.core.recipe import ModelSection, PruneSection
    from edgecomp.core.rundir import save_tensors

    dense, example = reference()
    cfg_model = ModelSection(**RECIPE["model"])
    dense_macs = measure_size(dense, example).macs
    record: dict = {"budgets": {}, "max_block": max_block, **stamp()}
    models: dict = {"dense": dense}
    with tempfile.TemporaryDirectory() as scratch:
        for budget in budgets:
            prune = PruneSection(steps=1, target={"latency": budget, "max_block": max_block})
            run = prepare_latency(Path(scratch) / str(budget), prune, dense, example, "cifar_resnet20", 10, 0)
            models[f"aligned_{budget}"], row = run.prune_step(dense, dense, example, 1, 10, None, "cifar_resnet20")
            record["budgets"][str(budget)] = row
        with run.timer() as timer:
            names = list(models)
            final = timer.compare([models[n] for n in names], iterations=FINAL_ROUNDS)
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


def arm_recipe(arm: str, seed: int, macs_ratio: float):
    """The recipe of one arm's cell: RECIPE with the arm's sections merged in; `magnitude` gets the study's
    linear schedule's magnitude for this size, M = DENSE_M x the MACs share (finding A)."""
    from edgecomp.compression.magnitude import linear
    from edgecomp.core.recipe import validate

    data = {**RECIPE, "seed": seed}
    for section, values in ARMS[arm].items():
        data[section] = {**data.get(section, {}), **values}
    if arm == "magnitude":
        data["augment"] = {**data["augment"], "schedule": {"kind": "constant", "dense": linear(DENSE_M, 0.0, macs_ratio)}}
    return validate(data)


def train_cell(cells: str, arm: str, arch: str, seed: int) -> dict:
    """Fine-tune architecture `arch` with arm `arm`'s training for EPOCHS epochs; the validation curve and the
    final test accuracy go to the cell's JSON. Branches (rep) are folded at the end and the folded model is
    checked to be the plain architecture before it is evaluated."""
    import torch

    torch.set_num_threads(1)
    from edgecomp.compression.augment import Augmenter
    from edgecomp.compression.auxiliary import assert_plain, attach, detach
    from edgecomp.compression.objective import Objective
    from edgecomp.compression.teacher import Teacher
    from edgecomp.compression.train import InputSpec, TrainJob, evaluate, train
    from edgecomp.core.console import console
    from edgecomp.core.data import load_data
    from edgecomp.core.models import load_model_file, measure_size, model_structure

    console.quiet = True
    path = cell_path(cells, arm, arch, seed)
    if path.is_file():
        return {"cell": path.name, "skipped": True}
    model = load_model_file(ARCH / f"{arch}.pt")
    dense, example = reference()
    size = measure_size(model, example)
    ratio = size.macs / measure_size(dense, example).macs
    recipe = arm_recipe(arm, seed, ratio)
    data = load_data(recipe.data, recipe.model)
    spec = InputSpec.create(recipe.model, data.mean, data.std, torch.device("cpu"))
    teacher = Teacher(dense) if recipe.teacher.kd_weight > 0 else None
    branched = attach(model, recipe.aux, example) if recipe.aux.kind.value != "none" else None
    trained = branched.model if branched is not None else model
    objective = Objective(recipe.teacher, ratio, teacher, branched=branched,
                          aux_weight=recipe.aux.loss_weight() if branched is not None else 1.0)
    magnitude = recipe.augment.schedule.dense
    curve: list[float] = []
    started = time.perf_counter()
    torch.manual_seed(seed)
    job = TrainJob(data=data.train, spec=spec, augment=Augmenter(recipe.augment), magnitude=magnitude,
                   optim=recipe.finetune.optim, epochs=EPOCHS, seed=seed, label=f"{arm} {arch} s{seed}",
                   objective=objective, strong_magnitude=STRONG if branched is not None else None)
    history = train(trained, job, lambda epoch, stats: curve.append(evaluate(trained, data.val, spec)))
    if branched is not None:
        plain_structure = model_structure(load_model_file(ARCH / f"{arch}.pt"))
        model, _ = detach(branched)
        assert_plain(model, plain_structure, size.params, lambda m: measure_size(m, example).macs, size.macs,
                     [name for name, _ in load_model_file(ARCH / f"{arch}.pt").named_parameters()])
    result = {"cells": cells, "arm": arm, "arch": arch, "seed": seed, "epochs": EPOCHS, "magnitude": magnitude,
              "macs_ratio": ratio, "val_curve": curve, "val_accuracy": evaluate(model, data.val, spec),
              "val_accuracy_last_epoch": curve[-1], "test_accuracy": evaluate(model, data.test, spec),
              "train_loss": [round(h.loss, 5) for h in history], "seconds": round(time.perf_counter() - started, 1),
              **stamp()}
    CELLS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    return {k: result[k] for k in ("arm", "arch", "seed", "val_accuracy", "test_accuracy", "seconds")}


def run_cells(cells: str, seeds: list[int], workers: int, arms: list[str] | None = None) -> None:
    """Every (arm, architecture) of the set for each seed (only `arms`, if given), seed by seed, in `workers`
    processes. A cell's result does not depend on the order or the worker count (one thread, seeded)."""
    missing = sorted(set(arms or ()) - {arm for arm, _ in CELL_SETS[cells]})
    if missing:
        raise SystemExit(f"--arms: {', '.join(missing)} not in --cells {cells}")
    jobs = [(cells, arm, arch, seed) for seed in seeds for arm, arch in CELL_SETS[cells]
            if (arms is None or arm in arms) and not cell_path(cells, arm, arch, seed).is_file()]
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
    arch.add_argument("--budgets", nargs="+", type=float, default=[0.5, 0.3])
    arch.add_argument("--max-block", type=int, default=4)
    train_parser = commands.add_parser("train", help="fine-tune the cells of a set")
    train_parser.add_argument("--cells", choices=sorted(CELL_SETS), default="training")
    train_parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4, 5])
    train_parser.add_argument("--workers", type=int, default=1)
    train_parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), help="only these arms' cells")
    commands.add_parser("page", help="write results/small_model.md from the cells")
    args = parser.parse_args()
    if args.command == "arch":
        build_architectures(args.budgets, args.max_block)
    elif args.command == "train":
        run_cells(args.cells, args.seeds, args.workers, args.arms)
    else:
        from small_model_page import write_page

        write_page()


if __name__ == "__main__":
    main()
