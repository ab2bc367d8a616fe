"""Training, evaluation and host latency of one model.

The loop is deliberately plain: uint8 batch → adapt to the model → augment at
magnitude M → normalise → forward/backward. Progress bars (rich) show the
loss, throughput and ETA; one line per epoch is printed for logs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import torch
import torch.nn as nn

from ..core.console import console, progress, stage
from ..core.data import BatchSource, InputSpec  # noqa: F401 - InputSpec: re-exported, it lives with the data
from ..core.errors import DivergenceError
from ..core.models import read_checkpoint
from ..core.recipe import Optimizer, OptimSettings
from ..core.rundir import save_tensors
from .augment import Augmenter
from .convergence import Plateau, PlateauRule
from .cpu_guard import unit_stride_1x1
from .distributed import Dist
from .objective import LossStats, Objective, Views
from .watchdog import Watchdog

if TYPE_CHECKING:
    from rich.progress import Progress


@dataclass
class EpochStats:
    loss: float
    images: int
    seconds: float
    teacher: LossStats = field(default_factory=LossStats)

    @property
    def throughput(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def make_optimizer(model: nn.Module, cfg: OptimSettings) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == Optimizer.sgd:
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass(kw_only=True)
class TrainJob:
    """Everything one training stage needs besides the model."""

    data: BatchSource
    spec: InputSpec
    augment: Augmenter
    magnitude: float
    optim: OptimSettings
    epochs: int
    seed: int
    label: str
    objective: Objective
    strong_magnitude: Optional[float] = None  # a strong view is made per batch when set
    dist: Dist = field(default_factory=Dist)


def train(model: nn.Module, job: TrainJob,
          after_epoch: Optional[Callable[[int, EpochStats], None]] = None) -> list[EpochStats]:
    """Train for job.epochs with cosine LR (stepped per batch); deterministic given job.seed on CPU.
    `after_epoch(epoch, stats)` runs after each epoch (e.g. a validation curve), with the guard still on."""
    optimizer = make_optimizer(model, job.optim)
    per_epoch = job.data.num_batches(job.dist if job.dist.active else None)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(per_epoch * job.epochs, 1))
    generator = torch.Generator().manual_seed(job.seed + 100_003 * job.dist.rank)  # each rank its own views
    trained, history = job.dist.wrap(model), []
    with progress() as bar, Watchdog(job.label) as watchdog, unit_stride_1x1(model, job.spec.device):
        for epoch in range(job.epochs):
            task = bar.add_task(f"{job.label} epoch {epoch + 1}/{job.epochs}", total=per_epoch, loss=0.0, rate=0.0)
            ticker = _Ticker(bar, task, watchdog, epoch)
            history.append(train_epoch(trained, job, optimizer, generator, epoch, ticker, scheduler))
            log_epoch(job, epoch, history[-1])
            if after_epoch is not None:
                with watchdog.paused():
                    after_epoch(epoch, history[-1])
    job.dist.broadcast_state(model)
    return history


@dataclass
class PlateauResult:
    """What `train_until_plateau` did: the validation curve that decided, and whether it plateaued."""

    curve: list[float]
    losses: list[float]
    converged: bool
    rule: PlateauRule

    def as_dict(self) -> dict[str, Any]:
        return {"val_curve": self.curve, "train_loss": self.losses, "epochs": len(self.curve),
                "converged": self.converged, "rule": self.rule.as_dict()}


def train_until_plateau(model: nn.Module, job: TrainJob, val: BatchSource, rule: PlateauRule,
                        state_path: Optional[Path] = None) -> PlateauResult:
    """Train at the job's fixed LR until validation accuracy plateaus (`convergence.PlateauRule`).

    With `state_path`, everything needed to continue (weights, optimizer, plateau, curve, RNG) is saved
    atomically after every epoch and picked up again, so a killed run resumes at its last epoch.
    """
    optimizer = make_optimizer(model, job.optim)
    plateau = Plateau(optimizer, rule)
    generator = torch.Generator().manual_seed(job.seed)
    curve, losses, stop = [], [], False
    if state_path is not None and state_path.is_file():
        state = read_checkpoint(state_path, "training state")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        plateau.load_state_dict(state["plateau"])
        generator.set_state(state["generator"])
        curve, losses, stop = list(state["curve"]), list(state["losses"]), bool(state["stop"])
        console.print(f"  {job.label}: resuming after epoch {len(curve)}")
    with progress() as bar, Watchdog(job.label) as watchdog, unit_stride_1x1(model, job.spec.device):
        while not stop:
            epoch = len(curve)
            task = bar.add_task(f"{job.label} epoch {epoch + 1}", total=job.data.num_batches(), loss=0.0, rate=0.0)
            stats = train_epoch(model, job, optimizer, generator, epoch, _Ticker(bar, task, watchdog, epoch))
            with watchdog.paused():  # validation watches itself
                curve.append(evaluate(model, val, job.spec, f"{job.label} validation"))
            losses.append(stats.loss)
            stop = plateau.step(curve[-1])
            log_epoch(job, epoch, stats, f", val {curve[-1]:.4f}, lr {optimizer.param_groups[0]['lr']:.2g}")
            if state_path is not None:
                save_tensors(state_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                          "plateau": plateau.state_dict(), "generator": generator.get_state(),
                                          "curve": curve, "losses": losses, "stop": stop})
    return PlateauResult(curve, losses, plateau.converged, rule)


def log_epoch(job: TrainJob, epoch: int, stats: EpochStats, extra: str = "") -> None:
    total = f"/{job.epochs}" if job.epochs else ""
    console.print(f"  {job.label} epoch {epoch + 1}{total}: loss {stats.loss:.4f}, {stats.throughput:.0f} img/s, "
                  f"M={job.magnitude:.1f}{extra}")


@dataclass
class _Ticker:
    """After every batch: advance the progress bar and tell the watchdog the loop is alive."""

    bar: Progress
    task: Any
    watchdog: Watchdog
    epoch: int

    def __call__(self, batch_index: int, loss: float, rate: float) -> None:
        self.bar.update(self.task, advance=1, loss=loss, rate=rate)
        self.watchdog.beat(f"epoch {self.epoch + 1}, batch {batch_index + 1}")


def make_views(job: TrainJob, raw: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> Views:
    spec, augment = job.spec, job.augment
    weak = spec.prepare(raw, augment, job.magnitude, generator)
    strong = spec.prepare(raw, augment, job.strong_magnitude, generator) if job.strong_magnitude is not None else None
    clean = spec.prepare(raw, augment.base, 0.0, generator) if job.objective.needs_clean_view() else None
    return Views(weak, labels.to(spec.device), strong, clean)


def train_epoch(model, job: TrainJob, optimizer, generator, epoch: int, tick, scheduler=None) -> EpochStats:
    """One pass over the training data; `scheduler` (if any) is stepped after every batch."""
    model.train()
    job.objective.stats = LossStats()
    loss_sum, seen, start = 0.0, 0, time.perf_counter()
    shard = job.dist if job.dist.active else None
    for batch_index, (raw, labels) in enumerate(job.data.batches(job.seed * 1000 + epoch, shard)):
        loss = job.objective(model, make_views(job, raw, labels, generator))
        if not torch.isfinite(loss):
            raise DivergenceError(
                f"{job.label}: the loss became {loss.item()} at epoch {epoch + 1}, batch "
                f"{batch_index + 1}; this stage was not saved and earlier checkpoints are kept. Lower the "
                f"learning rate (now {job.optim.lr}) or the magnitude (now {job.magnitude:.1f}) and start a new "
                f"run from the dense checkpoint (--set dense.weights=RUN/checkpoints/step_000.pt --set "
                f"dense.epochs=0 --out NEW_DIR)"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.item() * len(labels)
        seen += len(labels)
        rate = seen * job.dist.world / max(time.perf_counter() - start, 1e-9)  # all ranks: equal shares
        tick(batch_index, loss_sum / seen, rate)
    seconds = time.perf_counter() - start
    return EpochStats(loss_sum / max(seen, 1), seen * job.dist.world, seconds, job.objective.stats)


@torch.no_grad()
def evaluate(model: nn.Module, data: BatchSource, spec: InputSpec, label: str = "evaluation",
             show: bool = False) -> float:
    """Top-1 accuracy in eval mode, no augmentation; `show`: a progress stage named `label` (bar or log line)."""
    model.eval()
    correct = seen = 0
    shown = stage(f"{label} ({len(data)} images)", data.num_batches()) if show else nullcontext(lambda: None)
    with Watchdog(label) as watchdog, shown as advance:
        for index, (raw, labels) in enumerate(data.batches(None)):
            logits = model(spec.prepare(raw))
            correct += int((logits.argmax(1).cpu() == labels).sum())
            seen += len(labels)
            watchdog.beat(f"batch {index + 1}")
            advance()
    return correct / max(seen, 1)


# A host latency whose p25–p75 spread exceeds this fraction of its median (the step's own time, or the paired
# dense/step ratio) says more about the machine's load than about the model: it is reported as not meaningful.
MAX_RELATIVE_SPREAD = 0.25


@torch.no_grad()
def host_latency_ms(model: nn.Module, spec: InputSpec, iterations: int, warmup: int = 10,
                    reference: Optional[nn.Module] = None, threads: int = 1) -> Optional[dict[str, Any]]:
    """Batch-1 PyTorch forward time on this host (perf_counter): median with quartiles, in ms.

    On a shared machine one model's time moves with the load. With `reference` (the dense model) the two
    run alternately, pass by pass, the leader swapped every pass, so both see the same load; `speedup` is the
    median of the paired ratios reference/model (with its quartiles). PyTorch runs `threads` threads meanwhile:
    more threads than free cores make every forward wait for the slowest thread, whatever its size.
    """
    if iterations <= 0:
        return None
    models = [model] + ([reference] if reference is not None else [])
    for m in models:
        m.eval()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = _alternate(models, spec, iterations, warmup)
    finally:
        torch.set_num_threads(previous_threads)
    p25, p50, p75 = _quartiles(times[0])
    result: dict[str, Any] = {"p50": p50, "p25": p25, "p75": p75, "iterations": iterations, "threads": threads}
    result["unreliable"] = unreliable_reason("latency", p25, p50, p75)
    if reference is not None:
        result["dense_p50"] = statistics.median(times[1])
        low, result["speedup"], high = _quartiles([d / m for d, m in zip(times[1], times[0])])
        result["speedup_p25"], result["speedup_p75"] = low, high
        result["speedup_unreliable"] = unreliable_reason("dense/step ratio", low, result["speedup"], high)
    return result


def _alternate(models: list[nn.Module], spec: InputSpec, iterations: int, warmup: int) -> list[list[float]]:
    example = spec.example(1)

    def timed(m: nn.Module) -> float:
        start = time.perf_counter()
        m(example)
        if spec.device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1000

    for _ in range(warmup):
        for m in models:
            timed(m)
    times: list[list[float]] = [[] for _ in models]
    with stage(f"timing host latency ({iterations} passes)", iterations) as advance:
        for index in range(iterations):
            order = range(len(models)) if index % 2 == 0 else reversed(range(len(models)))
            for k in order:
                times[k].append(timed(models[k]))
            advance()
    return times


def unreliable_reason(name: str, p25: float, p50: float, p75: float) -> Optional[str]:
    """Why a host timing (or the paired ratio) means nothing: its spread; None when it can be read as a result.
    The time and the ratio are judged apart: alternating runs can keep the ratio steady while load moves both."""
    relative = (p75 - p25) / p50 if p50 > 0 else float("inf")
    if relative <= MAX_RELATIVE_SPREAD:
        return None
    return (f"{name} p25–p75 spans {relative:.0%} of its median (above {MAX_RELATIVE_SPREAD:.0%}): the machine's "
            "load, not the model")


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    p25, p50, p75 = statistics.quantiles(values, n=4, method="inclusive")
    return p25, p50, p75
