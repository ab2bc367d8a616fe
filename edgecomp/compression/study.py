"""`edgecomp study`: which augmentation magnitude suits which model size (finding A), on your data.

The dense model (the recipe's dense stage) is pruned once to each size; every
(size, magnitude) cell then fine-tunes that pruned model at a constant
magnitude until its validation accuracy plateaus (`edgecomp.compression.convergence`: the
rule is stated there and recorded in every cell with the curve), so a cell
measures the converged model a magnitude gives, not how fast a model re-adapts.
Validation chooses (grid, best magnitude per size, fitted schedule); the test
accuracy of every cell is recorded beside it and never chooses anything. The
output is the grid, the best magnitude per size, a heatmap, the least-squares
linear schedule M = min + (dense - min) * s through the best magnitudes, and a
recipe snippet that uses it. Cells are written one file each (and each cell
saves its training state every epoch), so a killed study resumes where it
stopped; cells run in several processes where cores allow.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml

from ..core.errors import UserInputError
from ..core.recipe import MAX_MAGNITUDE, MacsTarget, Policy, Recipe, dump_recipe, validate
from ..core.rundir import save_tensors, write_text
from ..report import save_figure
from .convergence import PlateauRule


@dataclass
class StudyResult:
    out: Path
    grid: dict[float, dict[float, float]]  # size -> magnitude -> val accuracy
    best: dict[float, float]  # size -> best magnitude
    fit: dict[str, float]  # {"dense": .., "min": ..}
    snippet_path: Path
    heatmap_path: Path


# ---------------------------------------------------------------- pure analysis


def best_per_size(grid: dict[float, dict[float, float]]) -> dict[float, float]:
    """Magnitude with the highest accuracy for each size (ties: the smaller magnitude)."""
    return {size: min(cells, key=lambda m: (-cells[m], m)) for size, cells in grid.items()}


def fit_linear(best: dict[float, float]) -> dict[str, float]:
    """Least squares M = min + (dense - min) * s through (s, best M) (numpy.polyfit), clamped to 0..30."""
    sizes = list(best)
    if len(set(sizes)) < 2:
        value = float(next(iter(best.values())))
        return {"dense": value, "min": value}
    slope, intercept = np.polyfit(np.array(sizes, dtype=float), np.array([best[s] for s in sizes], dtype=float), 1)
    clamp = lambda v: float(min(max(v, 0.0), MAX_MAGNITUDE))  # noqa: E731
    return {"dense": round(clamp(intercept + slope), 2), "min": round(clamp(intercept), 2)}


def recipe_snippet(fit: dict[str, float]) -> str:
    return yaml.safe_dump({"augment": {"schedule": {"kind": "linear", "dense": fit["dense"], "min": fit["min"]}}},
                          sort_keys=False)


# ---------------------------------------------------------------- running cells


def _cell_name(size: float, magnitude: float) -> str:
    return f"s{size:.3f}_m{magnitude:05.2f}.json"


def _prepare_sizes(recipe: Recipe, sizes: list[float], out: Path) -> dict[float, Path]:
    """The dense model (trained or loaded as the recipe says) pruned once to each size, saved."""
    from ..core.data import load_data
    from ..core.models import build_model, load_state_file, model_payload
    from .prune import Size, measure_size, prune_to
    from .train import InputSpec

    paths = {size: out / "models" / f"size_{size:.3f}.pt" for size in sizes}
    if all(p.is_file() for p in paths.values()):
        return paths
    data = load_data(recipe.data, recipe.model)
    spec = InputSpec.create(recipe.model, data.mean, data.std, torch.device("cpu"))
    torch.manual_seed(recipe.seed)
    dense = build_model(recipe.model)
    if recipe.dense.weights:  # as in compress: start from the weights, train dense.epochs further
        load_state_file(dense, recipe.dense.weights, "dense.weights")
    if recipe.dense.epochs:
        _train_dense(recipe, dense, data, spec)
    dense_size = measure_size(dense, spec.example())
    for size in sorted(sizes, reverse=True):
        model = _copy(dense)
        target = Size(int(dense_size.macs * size), int(dense_size.params * size))
        if size < 1.0:
            cfg = recipe.prune.model_copy(update={"target": MacsTarget(macs=size)})
            prune_to(model, spec.example(), cfg, target, recipe.model.num_classes)
        save_tensors(paths[size], model_payload(model, recipe.model))
    return paths


def _copy(model):
    import copy

    return copy.deepcopy(model)


def _train_dense(recipe: Recipe, model, data, spec) -> None:
    from .augment import Augmenter
    from .objective import Objective
    from .train import TrainJob, train

    magnitude = recipe.augment.schedule.dense
    job = TrainJob(data=data.train, spec=spec, augment=Augmenter(recipe.augment), magnitude=magnitude,
                   optim=recipe.dense.optim, epochs=recipe.dense.epochs, seed=recipe.seed * 1000, label="dense",
                   objective=Objective(recipe.teacher))
    train(model, job)


def run_cell(recipe_plain: dict, model_path: str, size: float, magnitude: float, rule: dict, threads: int,
             state_path: str) -> dict:
    """One cell, in a worker process: fine-tune the sized model at a constant magnitude to a validation
    plateau; validation accuracy (which chooses) and test accuracy (which only reports) of the final model."""
    torch.set_num_threads(threads)
    from ..core.data import load_data
    from ..core.models import load_model_file
    from .augment import Augmenter
    from .objective import Objective
    from .train import InputSpec, TrainJob, console, evaluate, train_until_plateau

    console.quiet = True
    recipe = validate(recipe_plain)
    data = load_data(recipe.data, recipe.model)
    spec = InputSpec.create(recipe.model, data.mean, data.std, torch.device("cpu"))
    model = load_model_file(model_path, recipe.model)
    torch.manual_seed(recipe.seed)
    job = TrainJob(data=data.train, spec=spec, augment=Augmenter(recipe.augment), magnitude=magnitude,
                   optim=recipe.finetune.optim, epochs=0, seed=recipe.seed * 1000 + 1, label=f"s={size} M={magnitude}",
                   objective=Objective(recipe.teacher))
    result = train_until_plateau(model, job, data.val, PlateauRule(**rule), Path(state_path))
    val_accuracy = evaluate(model, data.val, spec)
    return {"size": size, "magnitude": magnitude, "seed": recipe.seed, "accuracy": val_accuracy,
            # no held-out split, no test figure: null, never an accuracy over zero images
            "val_accuracy": val_accuracy, "test_accuracy": evaluate(model, data.test, spec) if data.has_test else None,
            "train_images": len(data.train), "test_images": len(data.test), **result.as_dict()}


def study(recipe: Recipe, *, sizes: list[float], magnitudes: list[float], rule: Optional[PlateauRule] = None,
          out: Path, workers: Optional[int] = None, threads: Optional[int] = None, progress=None) -> StudyResult:
    """Run (or resume) the grid; see the module docstring. `rule`: the cells' plateau rule (default PlateauRule())."""
    rule = rule if rule is not None else PlateauRule()
    _check_inputs(recipe, sizes, magnitudes, out)
    if workers is not None and workers < 1:
        raise UserInputError(f"--workers: must be >= 1 (got {workers})")
    if rule.max_epochs < 1:
        raise UserInputError(f"--max-epochs: must be >= 1 (got {rule.max_epochs})")
    if recipe.prune.importance.value == "taylor":
        raise UserInputError("prune.importance: taylor is not supported by study (it prunes without gradients)")
    _check_data_and_model(recipe, min(sizes))
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "recipe.yaml", dump_recipe(recipe))
    models = _prepare_sizes(recipe, sizes, out)
    workers = workers or max(1, min(len(sizes) * len(magnitudes), (os.cpu_count() or 1)))
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    todo = [(s, m) for s in sizes for m in magnitudes if not (out / "cells" / _cell_name(s, m)).is_file()]
    # spawn, not fork: a forked child of a process whose torch/OpenMP threads already ran can deadlock
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_cell, recipe.to_plain(), str(models[s]), s, m, rule.as_dict(), threads,
                               str(out / "cells" / (_cell_name(s, m) + ".state.pt"))) for s, m in todo]
        for future in as_completed(futures):
            cell = future.result()
            name = _cell_name(cell["size"], cell["magnitude"])
            write_text(out / "cells" / name, json.dumps(cell))
            (out / "cells" / (name + ".state.pt")).unlink(missing_ok=True)  # the cell file now says it all
            if progress is not None:
                progress(cell)
    return _summarize(out, sizes, magnitudes)


def _check_data_and_model(recipe: Recipe, smallest: float) -> None:
    """Data root, model name, weights file and the smallest size, checked before the study folder exists."""
    from ..core.data import load_data
    from ..core.models import build_model, load_state_file
    from .prune import check_prunable

    load_data(recipe.data, recipe.model)
    model = build_model(recipe.model)
    if recipe.dense.weights:
        load_state_file(model, recipe.dense.weights, "dense.weights")
    if smallest < 1.0:
        example = torch.zeros(1, recipe.model.in_channels, recipe.model.input_size, recipe.model.input_size)
        cfg = recipe.prune.model_copy(update={"target": MacsTarget(macs=smallest)})
        check_prunable(model, example, cfg, recipe.model.num_classes, recipe.model.arch)


def _check_inputs(recipe: Recipe, sizes: list[float], magnitudes: list[float], out: Path) -> None:
    bad_sizes = [s for s in sizes if not 0 < s <= 1]
    if not sizes or bad_sizes:
        raise UserInputError(f"--sizes: MACs ratios must be in (0, 1], got {bad_sizes or 'none'}")
    if recipe.augment.policy == Policy.none:  # every cell would train on the same crop + flip
        raise UserInputError("augment.policy: none applies no magnitude, so a study would compare identical cells; "
                             "use --set augment.policy=randaugment (or trivialaugment)")
    bad = [m for m in magnitudes if not 0 <= m <= MAX_MAGNITUDE]
    if not magnitudes or bad:
        raise UserInputError(f"--magnitudes: must be in 0..{MAX_MAGNITUDE}, got {bad or 'none'}")
    stored = out / "recipe.yaml"
    if stored.is_file() and yaml.safe_load(stored.read_text()) != recipe.to_plain():
        raise UserInputError(f"--out: {out} holds a study of another recipe; choose another --out")


def _summarize(out: Path, sizes: list[float], magnitudes: list[float]) -> StudyResult:
    cells = {(s, m): json.loads((out / "cells" / _cell_name(s, m)).read_text()) for s in sizes for m in magnitudes}
    grid = {s: {m: cells[s, m]["accuracy"] for m in magnitudes} for s in sizes}  # validation: it chooses
    best = best_per_size(grid)
    fit = fit_linear(best)
    snippet = out / "schedule_snippet.yaml"
    write_text(snippet, recipe_snippet(fit))
    as_table = lambda key: {str(s): {str(m): cells[s, m].get(key) for m in magnitudes} for s in sizes}  # noqa: E731
    summary = {"grid": as_table("accuracy"), "test_grid": as_table("test_accuracy"), "epochs": as_table("epochs"),
               "converged": as_table("converged"), "best": {str(s): m for s, m in best.items()}, "fit": fit,
               "choice": "validation accuracy chooses; test accuracy is reported only"}
    write_text(out / "study.json", json.dumps(summary, indent=1))
    heatmap = out / "heatmap.png"
    plot_heatmap(grid, best, heatmap)
    return StudyResult(out, grid, best, fit, snippet, heatmap)


def plot_heatmap(grid: dict[float, dict[float, float]], best: dict[float, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(grid, reverse=True)
    magnitudes = sorted(next(iter(grid.values())))
    values = [[grid[s][m] for m in magnitudes] for s in sizes]
    fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(magnitudes), 1.2 + 0.6 * len(sizes)), dpi=120)
    image = ax.imshow(values, cmap="viridis", aspect="auto")
    for i, s in enumerate(sizes):
        for j, m in enumerate(magnitudes):
            mark = "*" if best[s] == m else ""
            ax.text(j, i, f"{grid[s][m]:.3f}{mark}", ha="center", va="center", color="w", fontsize=8)
    ax.set_xticks(range(len(magnitudes)), [f"{m:g}" for m in magnitudes])
    ax.set_yticks(range(len(sizes)), [f"{s:g}" for s in sizes])
    ax.set_xlabel("magnitude M")
    ax.set_ylabel("MACs ratio")
    ax.set_title("val accuracy (* best per size)")
    fig.colorbar(image)
    fig.tight_layout()
    save_figure(fig, path)


def summary_table(result: StudyResult) -> str:
    magnitudes = sorted(next(iter(result.grid.values())))
    lines = ["| MACs ratio | " + " | ".join(f"M={m:g}" for m in magnitudes) + " | best M |",
             "|---:|" + "---:|" * (len(magnitudes) + 1)]
    for size in sorted(result.grid, reverse=True):
        cells = " | ".join(f"{result.grid[size][m]:.4f}" for m in magnitudes)
        lines.append(f"| {size:g} | {cells} | {result.best[size]:g} |")
    return "\n".join(lines)
