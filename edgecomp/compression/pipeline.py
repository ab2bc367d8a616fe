"""`compress`: dense stage, then N × (prune → fine-tune → evaluate → checkpoint).

Orchestration only; every mechanism lives in its own module. Everything the
user can get wrong (recipe, data root, model name, weights file) is checked
before the run directory is created.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.data import DataBundle, load_data
from ..core.errors import DivergenceError, RecipeError, RunDirError
from ..core.models import build_model, load_state_file, model_from_payload, model_payload, model_structure
from ..core.recipe import (
    AuxKind,
    LatencyTarget,
    MacsTarget,
    NoAux,
    OptimSettings,
    Recipe,
    ScheduleKind,
    dump_recipe,
    read_yaml,
    validate,
)
from ..core.rundir import RunDir, save_tensors, write_text
from ..report import write_report
from .augment import Augmenter
from .cpu_guard import unit_stride_1x1
from .distributed import Dist, init_from_env
from .latency import LatencyRun, prepare_latency
from .magnitude import magnitude_for
from .objective import LossStats, Objective
from .prune import Size, check_prunable, measure_size, prune_to
from .steps import step_targets
from .teacher import Calibration, Teacher, calibrate, first_samples, load_teacher
from .train import InputSpec, TrainJob, console, evaluate, host_latency_ms, train


@dataclass
class CompressResult:
    run_dir: Path
    rows: list[dict[str, Any]]
    model_path: Path
    report_path: Path

    @property
    def dense(self) -> dict[str, Any]:
        return self.rows[0]

    @property
    def final(self) -> dict[str, Any]:
        return self.rows[-1]


@dataclass
class Context:
    recipe: Recipe
    run: RunDir
    data: DataBundle
    spec: InputSpec
    augmenter: Augmenter
    dist: Dist
    dense_size: Optional[Size] = None
    teacher: Optional[Teacher] = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    latency: Optional[LatencyRun] = None  # with a latency target: its measured block, dense timing and closed loop


def compress(recipe: Recipe, *, out: Optional[Path] = None, resume: bool = False) -> CompressResult:
    """Run (or resume) a compression run; returns where everything was written.

    Under torchrun every rank runs this; only rank 0 reads and writes the run directory.
    """
    dist = init_from_env()
    console.quiet = not dist.is_main  # one log, from rank 0
    run = RunDir(out if out is not None else Path("runs") / recipe.name)
    finished = dist.on_main(lambda: _check_run_dir(run, recipe, resume))
    ctx, dense_model = _prepare(recipe, run, dist)
    if recipe.prune.target.kind == "latency" and max(finished, default=0) < recipe.prune.steps:
        ctx.latency = _latency_run(ctx, dense_model)  # a budget under the floor is refused before anything is written
    if dist.is_main:
        run.root.mkdir(parents=True, exist_ok=True)
        if not run.recipe.is_file():
            write_text(run.recipe, dump_recipe(recipe))
        if ctx.latency is not None:
            ctx.latency.save(run.root / "latency")
    if resume:
        console.print(_resume_words(run, finished, recipe.prune.steps))
    model = _dense_stage(ctx, dense_model.to(ctx.spec.device), 0 in finished)
    start = max(finished, default=0) + 1 if finished else 1
    if start > 1:
        model = _restore(ctx, start - 1)
    if finished and dist.is_main:
        run.write_rows(ctx.rows)  # drop any row of a step that is not (or no longer) finished
    if ctx.latency is not None and len(ctx.rows) > 1 and ctx.rows[-1].get("latency_correction") is not None:
        ctx.latency.correction = ctx.rows[-1]["latency_correction"]  # a resumed run goes on as the live run would
    for step in range(start, recipe.prune.steps + 1):
        model = _prune_step(ctx, model, step)
    return _finish(ctx, model)


def _resume_words(run: RunDir, finished: list[int], steps: int) -> str:
    if not finished:
        return f"[bold]resuming[/] {run.root}: no finished step kept, starting at the dense stage"
    last = max(finished)
    where = "nothing left to run" if last >= steps else f"continuing at step {last + 1}/{steps}"
    kept = f"steps 0–{last} kept (step 0 = dense)" if last else "step 0 (the dense model) kept"
    return f"[bold]resuming[/] {run.root}: {kept}, {where}"


def _prepare(recipe: Recipe, run: RunDir, dist: Dist) -> tuple[Context, nn.Module]:
    """Everything the user can get wrong, checked before the run directory is touched."""
    data = load_data(recipe.data, recipe.model)
    torch.manual_seed(recipe.seed)  # the dense model's initial weights, equal on every rank
    dense_model = build_model(recipe.model)
    if recipe.dense.weights:
        load_state_file(dense_model, recipe.dense.weights, "dense.weights", recipe.model)
    example = torch.zeros(1, recipe.model.in_channels, recipe.model.input_size, recipe.model.input_size)
    check_prunable(dense_model, example, recipe.prune, recipe.model.num_classes, recipe.model.arch)
    if isinstance(recipe.prune.target, LatencyTarget):
        from ..deploy.devices import resolve_device

        device = resolve_device(recipe.prune.target.device)  # an unknown device fails before writing
        if device.is_local and device.profile is not None and device.profile.name != "host":
            raise RecipeError(f"prune.target.device: profile {device.profile.name} has no connection; give "
                              "ssh://user@host[:port] or a profile file with connection: set")
    if dist.active:
        dist.local_batch(recipe.data.batch_size)
        if recipe.aux.kind != AuxKind.none:
            raise RecipeError("aux.kind: auxiliary branches are not supported under torchrun yet; use one process")
        if recipe.prune.target.kind == "latency":
            raise RecipeError("prune.target: a latency target is not supported under torchrun yet; use one process")
    if recipe.aux.kind != AuxKind.none:  # a wrong heads_at or a model without conv+BN fails now, not at step 1
        from .auxiliary import attach, detach

        example = torch.zeros(1, recipe.model.in_channels, recipe.model.input_size, recipe.model.input_size)
        detach(attach(copy.deepcopy(dense_model), recipe.aux, example))
    spec = InputSpec.create(recipe.model, data.mean, data.std, dist.device())
    ctx = Context(recipe, run, data, spec, Augmenter(recipe.augment), dist)
    if recipe.teacher.weights:
        ctx.teacher = load_teacher(recipe, dense_model, spec.example()).to(spec.device)
    return ctx, dense_model


def _check_run_dir(run: RunDir, recipe: Recipe, resume: bool) -> list[int]:
    """Refuse to overwrite a run; on resume, insist on the same recipe."""
    has_content = run.root.is_dir() and any(run.root.iterdir())
    if run.root.exists() and not run.root.is_dir():
        raise RunDirError(f"--out: {run.root} exists and is not a folder")
    if has_content and not resume:
        raise RunDirError(f"{run.root} already holds a run; pass --resume to continue it or --out for a new one")
    if not has_content or not run.recipe.is_file():
        return []
    stored = validate(read_yaml(run.recipe), source=str(run.recipe))
    if stored.to_plain() != recipe.to_plain():
        changed = _changed_keys(stored.to_plain(), recipe.to_plain())
        raise RunDirError(f"--resume: the recipe differs from {run.recipe} in {', '.join(changed[:5])}")
    return run.finished_steps()


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [k for key in keys for k in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [prefix.rstrip(".")] if old != new else []


def _dense_stage(ctx: Context, model: nn.Module, done: bool) -> nn.Module:
    recipe = ctx.recipe
    if done:
        checkpoint = _read_step(ctx, 0)
        model = model_from_payload(checkpoint["model"], recipe.model).to(ctx.spec.device)
        ctx.dense_size, ctx.rows = Size(**checkpoint["dense_size"]), [checkpoint["row"]]
    else:
        ctx.dense_size = measure_size(model, ctx.spec.example())
        magnitude = magnitude_for(recipe.augment.schedule, 0, 1.0)
        objective = _objective(ctx, 1.0, recipe.dense.optim)
        stats = _fit(ctx, model, 0, magnitude, recipe.dense.epochs, recipe.dense.optim, "dense", objective)
        row = _row(ctx, model, 0, ctx.dense_size, magnitude, recipe.dense.epochs, stats)
        _save_step(ctx, model, 0, row)
    if ctx.teacher is None and (recipe.teacher.needed() or recipe.augment.schedule.kind == ScheduleKind.teacher):
        ctx.teacher = Teacher(model)
    return model


def _read_step(ctx: Context, step: int) -> dict[str, Any]:
    return ctx.dist.on_main(lambda: ctx.run.load_step(step))


def _restore(ctx: Context, step: int) -> nn.Module:
    ctx.rows = [_read_step(ctx, k)["row"] for k in range(step + 1)]
    return model_from_payload(_read_step(ctx, step)["model"], ctx.recipe.model).to(ctx.spec.device)


def _prune_step(ctx: Context, model: nn.Module, step: int) -> nn.Module:
    recipe, dense = ctx.recipe, ctx.dense_size
    assert dense is not None  # measured (or read back) by the dense stage
    torch.manual_seed(_seed(recipe, step))
    if ctx.latency is not None:
        model, budget = _prune_for_latency(ctx, model, step)
        size, goal = measure_size(model, ctx.spec.example()), f"latency budget {budget['latency_budget']:g}"
    else:
        assert not isinstance(recipe.prune.target, LatencyTarget)  # a latency target has its ctx.latency
        fraction = step_targets(recipe.prune.target.macs if isinstance(recipe.prune.target, MacsTarget)
                                else recipe.prune.target.params, recipe.prune.steps,
                                recipe.prune.schedule.value == "geometric")[step - 1]
        target = Size(int(dense.macs * fraction), int(dense.params * fraction))
        size = prune_to(model, ctx.spec.example(), recipe.prune, target, recipe.model.num_classes,
                        grad_fn=lambda m: _taylor_grads(ctx, m), name=recipe.model.arch)
        budget, goal = {}, f"target {fraction:.3f}"
    ctx.dist.check_same("pruned structure", model_structure(model))
    ratio = size.macs / dense.macs
    magnitude, calibration = _magnitude(ctx, step, ratio)
    console.print(
        f"[bold]step {step}/{recipe.prune.steps}[/]: MACs {ratio:.3f} of dense "
        f"({goal}), params {size.params / dense.params:.3f}, magnitude {magnitude:.1f}"
    )
    model, stats, aux_record = _finetune(ctx, model, step, magnitude, ratio)
    row = _row(ctx, model, step, size, magnitude, recipe.finetune.epochs_per_step, stats)
    row.update(budget)
    if stats:
        _check_collapse(ctx, step, row["accuracy"])
    row["aux"] = aux_record
    if calibration is not None:
        row["calibration"] = calibration.as_dict()
    _save_step(ctx, model, step, row)
    return model


def _latency_run(ctx: Context, dense: nn.Module) -> LatencyRun:
    """The run's latency target: the block, the dense timing and the floor measured on the device from the dense
    architecture (or read back on --resume), before the dense stage trains it: its weights do not change latency."""
    return prepare_latency(ctx.run.root / "latency", ctx.recipe.prune, copy.deepcopy(dense).cpu().eval(),
                           ctx.spec.example().cpu(), ctx.recipe.model.arch, ctx.recipe.model.num_classes,
                           ctx.recipe.seed)


def _prune_for_latency(ctx: Context, model: nn.Module, step: int) -> tuple[nn.Module, dict[str, Any]]:
    """Channels kept on the runtime's block, the step's model timed beside the dense one, re-planned until its
    measured latency meets the step's budget (compression/latency/)."""
    recipe = ctx.recipe
    assert ctx.latency is not None  # _prune_step calls this only with a latency run

    def grads(m: nn.Module) -> None:  # the backward pass on the training device, the model back on the CPU
        _taylor_grads(ctx, m.to(ctx.spec.device))
        m.cpu()

    pruned, record = ctx.latency.prune_step(
        model.cpu(), _dense_copy(ctx), ctx.spec.example().cpu(), step, recipe.model.num_classes,
        grads, recipe.model.arch)  # plans on the CPU
    console.print(f"  step {step}: latency {record['measured_latency']:.3f} measured against a budget of "
                  f"{record['latency_budget']:.3f} ({record['latency_unit']}, {len(record['latency_attempts'])} "
                  f"plan(s) timed, channel counts on multiples of {record['latency_block']})")
    return pruned.to(ctx.spec.device), record


def _dense_copy(ctx: Context) -> nn.Module:
    return model_from_payload(ctx.run.load_step(0)["model"], ctx.recipe.model).cpu().eval()


def _check_collapse(ctx: Context, step: int, accuracy: float) -> None:
    """Fine-tuning that leaves a model at chance (when the dense one was well above) is not kept."""
    chance = 1.0 / ctx.recipe.model.num_classes
    if accuracy <= 1.5 * chance < ctx.rows[0]["accuracy"] / 2:
        raise DivergenceError(
            f"step {step}: validation accuracy collapsed to {accuracy:.3f} (chance {chance:.3f}, dense "
            f"{ctx.rows[0]['accuracy']:.3f}) after fine-tuning; step {step} was not saved, step {step - 1} is the "
            f"last good checkpoint. Lower finetune.optim.lr or the magnitude, or prune less per step "
            f"(more prune.steps), and start a new run from the dense checkpoint "
            f"(--set dense.weights=RUN/checkpoints/step_000.pt --set dense.epochs=0 --out NEW_DIR)"
        )


def _magnitude(ctx: Context, step: int, ratio: float) -> tuple[float, Optional[Calibration]]:
    schedule = ctx.recipe.augment.schedule
    if schedule.kind != ScheduleKind.teacher:
        return magnitude_for(schedule, step, ratio), None
    cfg = ctx.recipe.teacher.calibration
    images, labels = first_samples(ctx.data.val, cfg.samples)
    ceiling = min(row["magnitude"] for row in ctx.rows)  # the dense stage's and every larger step's magnitude
    assert ctx.teacher is not None  # the dense stage sets one for the teacher schedule
    calibration = calibrate(ctx.teacher, images, labels, ctx.spec.prepare, ctx.augmenter, cfg, ratio,
                            ctx.recipe.seed, schedule.dense, ceiling)
    return calibration.magnitude, calibration


def _finetune(ctx: Context, model: nn.Module, step: int, magnitude: float, ratio: float):
    """Fine-tune, with auxiliary branches attached for the duration when the recipe asks for them."""
    recipe = ctx.recipe
    if recipe.aux.kind == AuxKind.none or recipe.finetune.epochs_per_step == 0:
        stats = _fit(ctx, model, step, magnitude, recipe.finetune.epochs_per_step, recipe.finetune.optim,
                     f"step {step}", _objective(ctx, ratio, recipe.finetune.optim))
        return model, stats, None
    from .auxiliary import assert_plain, attach, detach

    plain_structure, plain_size = model_structure(model), measure_size(model, ctx.spec.example())
    plain_names = [name for name, _ in model.named_parameters()]
    branched = attach(model, recipe.aux, ctx.spec.example())
    strong = strong_magnitude(recipe, magnitude)
    stats = _fit(ctx, branched.model, step, magnitude, recipe.finetune.epochs_per_step, recipe.finetune.optim,
                 f"step {step} ({recipe.aux.kind.value})", _objective(ctx, ratio, recipe.finetune.optim, branched), strong)
    model, record = detach(branched)
    # nothing leaks: same modules, parameter names, counts and MACs as the plain pruned model
    assert_plain(model, plain_structure, plain_size.params, lambda m: measure_size(m, ctx.spec.example()).macs,
                 plain_size.macs, plain_names)
    return model, stats, {**record.as_dict(), "strong_magnitude": strong}


def strong_magnitude(recipe: Recipe, weak: float) -> float:
    """The strong view's magnitude for a step whose weak view has `weak`: never weaker than it."""
    assert not isinstance(recipe.aux, NoAux)  # a strong view exists only with branches (rep or heads)
    strong = recipe.aux.strong_magnitude
    strong = max(recipe.augment.schedule.dense, weak) if strong is None else strong
    if strong < weak:  # the recipe check rules this out; a schedule that breaks it must not train silently
        raise RecipeError(f"aux.strong_magnitude: {strong:g} is weaker than this step's weak view ({weak:g})")
    return strong


def _objective(ctx: Context, ratio: float, optim: OptimSettings, branched=None) -> Objective:
    recipe, label_smoothing = ctx.recipe, optim.label_smoothing
    if branched is None:
        return Objective(recipe.teacher, ratio, ctx.teacher, label_smoothing=label_smoothing)
    assert not isinstance(recipe.aux, NoAux)  # branches are attached only for aux.kind rep or heads
    return Objective(recipe.teacher, ratio, ctx.teacher, branched=branched, aux_weight=recipe.aux.loss_weight(),
                     head_kd=recipe.aux.kd_weight(), label_smoothing=label_smoothing)


def _seed(recipe: Recipe, step: int) -> int:
    return recipe.seed * 1000 + step


def _fit(ctx: Context, model: nn.Module, step: int, magnitude: float, epochs: int, optim, label: str,
         objective: Objective, strong_magnitude: Optional[float] = None):
    if epochs == 0:
        return []
    torch.manual_seed(_seed(ctx.recipe, step))
    job = TrainJob(data=ctx.data.train, spec=ctx.spec, augment=ctx.augmenter, magnitude=magnitude, optim=optim,
                   epochs=epochs, seed=_seed(ctx.recipe, step), label=label, objective=objective,
                   strong_magnitude=strong_magnitude, dist=ctx.dist)
    return train(model, job)


def _taylor_grads(ctx: Context, model: nn.Module) -> None:
    model.eval()
    with unit_stride_1x1(model, ctx.spec.device):  # a backward pass on a model pruned in earlier steps
        for index, (raw, labels) in enumerate(ctx.data.train.batches(ctx.recipe.seed)):
            if index >= ctx.recipe.prune.calib_batches:
                break
            F.cross_entropy(model(ctx.spec.prepare(raw)), labels.to(ctx.spec.device)).backward()


def _row(ctx: Context, model, step: int, size: Size, magnitude: float, epochs: int, stats) -> dict[str, Any]:
    dense = ctx.dense_size
    assert dense is not None  # the dense stage measures it before its own row
    images, seconds = sum(s.images for s in stats), sum(s.seconds for s in stats)
    row = {
        "step": step, "stage": "dense" if step == 0 else "prune",
        "macs": size.macs, "params": size.params,
        "macs_ratio": size.macs / dense.macs, "params_ratio": size.params / dense.params,
        "magnitude": magnitude, "epochs": epochs,
        "accuracy": evaluate(model, ctx.data.val, ctx.spec, f"step {step}: validation", show=True),
        # no held-out split, no test figure: null, never an accuracy over zero images
        "test_accuracy": (evaluate(model, ctx.data.test, ctx.spec, f"step {step}: test", show=True)
                          if ctx.data.has_test else None),
        **_host_latency(ctx, model, step),
        "train_seconds": round(seconds, 3), "train_throughput": round(images / seconds, 1) if seconds else None,
        "final_loss": stats[-1].loss if stats else None,
        **_teacher_stats(stats),
    }
    if step == 0:
        row["splits"] = ctx.data.splits  # where validation and test came from, for the report
    console.print(f"  step {step}: val accuracy {row['accuracy']:.4f}, {_test_words(row)}, {_latency_words(row)}")
    return row


def _test_words(row: dict[str, Any]) -> str:
    return "no test split" if row["test_accuracy"] is None else f"test accuracy {row['test_accuracy']:.4f}"


def _latency_words(row: dict[str, Any]) -> str:
    """The host timing as a result, or why it is none (a spread that says more about the load than the model)."""
    if row.get("latency_ms") is None:
        return "host latency not timed"
    if row.get("latency_unreliable"):
        return f"host latency not meaningful ({row['latency_unreliable']})"
    words = f"host latency {row['latency_ms']:.2f} ms on {row['latency_threads']} thread(s)"
    if row["step"] and row.get("latency_speedup_unreliable"):
        words += f", speed-up over dense not meaningful ({row['latency_speedup_unreliable']})"
    elif row["step"] and row.get("latency_speedup") is not None and row.get("latency_dense_ms") is not None:
        # both figures from the same alternating loop, so a reader's ratio of the two is the speed-up given
        words += (f" against {row['latency_dense_ms']:.2f} ms for the dense model in the same loop: "
                  f"{row['latency_speedup']:.2f}× as fast (median of paired ratios)")
    return words


def _host_latency(ctx: Context, model: nn.Module, step: int) -> dict[str, Any]:
    """Per-step host latency: median and quartiles of batch-1 PyTorch forwards, timed alternately with the
    dense model (read back from its step-0 checkpoint), so that both see the same load; on
    `device.latency_threads` threads; flagged `latency_unreliable` / `latency_speedup_unreliable` when the spread
    makes the time / the paired ratio meaningless."""
    iterations = ctx.recipe.device.latency_iterations if ctx.dist.is_main else 0
    dense = None
    if iterations and step > 0:
        dense = model_from_payload(ctx.run.load_step(0)["model"], ctx.recipe.model).to(ctx.spec.device)
    stats = host_latency_ms(model, ctx.spec, iterations, reference=dense,
                            threads=ctx.recipe.device.latency_threads) or {}
    return {"latency_ms": stats.get("p50"), "latency_p25_ms": stats.get("p25"), "latency_p75_ms": stats.get("p75"),
            "latency_dense_ms": stats.get("dense_p50"),
            "latency_iterations": stats.get("iterations"), "latency_threads": stats.get("threads"),
            "latency_speedup": stats.get("speedup", 1.0 if stats and step == 0 else None),
            "latency_speedup_p25": stats.get("speedup_p25"), "latency_speedup_p75": stats.get("speedup_p75"),
            "latency_unreliable": stats.get("unreliable"),
            "latency_speedup_unreliable": stats.get("speedup_unreliable"),
            "latency_device": f"host-{ctx.spec.device.type}"}


def _teacher_stats(stats) -> dict[str, Any]:
    total = LossStats()
    for epoch in stats:
        total.merge(epoch.teacher)
    return total.as_dict()


def _save_step(ctx: Context, model: nn.Module, step: int, row: dict[str, Any]) -> None:
    """Checkpoint first (atomically), then the metrics file rebuilt from all rows (rank 0 only)."""
    ctx.rows = ctx.rows[:step] + [row]
    if not ctx.dist.is_main:
        return
    assert ctx.dense_size is not None  # the dense stage measures it before its own checkpoint
    ctx.run.save_step(step, {"model": model_payload(model, ctx.recipe.model), "row": row,
                             "dense_size": {"macs": ctx.dense_size.macs, "params": ctx.dense_size.params}})
    ctx.run.write_rows(ctx.rows)


def _finish(ctx: Context, model: nn.Module) -> CompressResult:
    if not ctx.dist.is_main:
        ctx.dist.barrier()
        return CompressResult(ctx.run.root, ctx.rows, ctx.run.model, ctx.run.report)
    ctx.run.write_rows(ctx.rows)
    save_tensors(ctx.run.model, model_payload(model, ctx.recipe.model))
    report = write_report(ctx.run, ctx.rows, ctx.recipe)
    final, dense = ctx.rows[-1], ctx.rows[0]
    if final["test_accuracy"] is None:
        accuracy = (f"no held-out test split, so no test accuracy; validation accuracy {final['accuracy']:.4f} "
                    f"(dense {dense['accuracy']:.4f})")
    else:
        accuracy = f"test accuracy {final['test_accuracy']:.4f} (dense {dense['test_accuracy']:.4f})"
    console.print(f"[bold green]done[/]: {final['macs_ratio']:.1%} of the dense MACs, {accuracy}; report: {report}")
    ctx.dist.barrier()
    return CompressResult(ctx.run.root, ctx.rows, ctx.run.model, report)
