"""Training, evaluation and host latency of one model.

The loop is deliberately plain: uint8 batch → adapt to the model → augment at
magnitude M → normalise → forward/backward. Progress bars (rich) show the
loss, throughput and ETA; one line per epoch is printed for logs.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn as nn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .augment import Augmenter
from .distributed import Dist
from .errors import DivergenceError
from .data import TensorBatches, adapt_batch, channel_stats, normalize
from .objective import LossStats, Objective, Views
from .recipe import ModelSection, OptimSettings, Optimizer

console = Console(stderr=True)


@dataclass
class InputSpec:
    """How a uint8 batch becomes the model's input."""

    channels: int
    size: int
    mean: torch.Tensor
    std: torch.Tensor
    device: torch.device

    @classmethod
    def create(cls, model_cfg: ModelSection, mean, std, device: torch.device) -> "InputSpec":
        return cls(model_cfg.in_channels, model_cfg.input_size, channel_stats(mean, model_cfg.in_channels),
                   channel_stats(std, model_cfg.in_channels), device)

    def prepare(self, images: torch.Tensor, augment=None, magnitude: float = 0.0, generator=None) -> torch.Tensor:
        images = adapt_batch(images, self.channels, self.size)
        pixels = augment(images, magnitude, generator) if augment is not None else images.float()
        return normalize(pixels, self.mean, self.std).to(self.device, non_blocking=True)

    def example(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, self.channels, self.size, self.size, device=self.device)


@dataclass
class EpochStats:
    loss: float
    images: int
    seconds: float
    teacher: LossStats = field(default_factory=LossStats)

    @property
    def throughput(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("{task.fields[rate]:.0f} img/s"),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
    )


def make_optimizer(model: nn.Module, cfg: OptimSettings) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == Optimizer.sgd:
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def cosine_lr(optimizer: torch.optim.Optimizer, peak: float, step: int, total: int) -> None:
    lr = 0.5 * peak * (1 + math.cos(math.pi * step / max(total, 1)))
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class TrainJob:
    """Everything one training stage needs besides the model."""

    data: TensorBatches
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


def train(model: nn.Module, job: TrainJob) -> list[EpochStats]:
    """Train for job.epochs with cosine LR; deterministic given job.seed on CPU."""
    optimizer = make_optimizer(model, job.optim)
    per_epoch = job.data.num_batches(job.dist if job.dist.active else None)
    total, done, history = per_epoch * job.epochs, 0, []
    generator = torch.Generator().manual_seed(job.seed + 100_003 * job.dist.rank)  # each rank its own views
    trained = job.dist.wrap(model)
    with progress() as bar:
        for epoch in range(job.epochs):
            task = bar.add_task(f"{job.label} epoch {epoch + 1}/{job.epochs}", total=per_epoch, loss=0.0, rate=0.0)
            stats = _train_epoch(trained, job, optimizer, generator, epoch, bar, task, done, total)
            done += per_epoch
            history.append(stats)
            console.print(
                f"  {job.label} epoch {epoch + 1}/{job.epochs}: loss {stats.loss:.4f}, "
                f"{stats.throughput:.0f} img/s, M={job.magnitude:.1f}"
            )
    job.dist.broadcast_state(model)
    return history


def make_views(job: TrainJob, raw: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> Views:
    spec, augment = job.spec, job.augment
    weak = spec.prepare(raw, augment, job.magnitude, generator)
    strong = spec.prepare(raw, augment, job.strong_magnitude, generator) if job.strong_magnitude is not None else None
    clean = spec.prepare(raw, augment.base, 0.0, generator) if job.objective.needs_clean_view() else None
    return Views(weak, labels.to(spec.device), strong, clean)


def _train_epoch(model, job: TrainJob, optimizer, generator, epoch, bar, task, done, total) -> EpochStats:
    model.train()
    job.objective.stats = LossStats()
    loss_sum, seen, start = 0.0, 0, time.perf_counter()
    shard = job.dist if job.dist.active else None
    for batch_index, (raw, labels) in enumerate(job.data.batches(job.seed * 1000 + epoch, shard)):
        cosine_lr(optimizer, job.optim.lr, done + batch_index, total)
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
        loss_sum += loss.item() * len(labels)
        seen += len(labels)
        rate = seen * job.dist.world / max(time.perf_counter() - start, 1e-9)  # all ranks: equal shares
        bar.update(task, advance=1, loss=loss_sum / seen, rate=rate)
    seconds = time.perf_counter() - start
    return EpochStats(loss_sum / max(seen, 1), seen * job.dist.world, seconds, job.objective.stats)


@torch.no_grad()
def evaluate(model: nn.Module, data: TensorBatches, spec: InputSpec) -> float:
    """Top-1 accuracy in eval mode, no augmentation."""
    model.eval()
    correct = seen = 0
    for raw, labels in data.batches(None):
        logits = model(spec.prepare(raw))
        correct += int((logits.argmax(1).cpu() == labels).sum())
        seen += len(labels)
    return correct / max(seen, 1)


@torch.no_grad()
def host_latency_ms(model: nn.Module, spec: InputSpec, iterations: int, warmup: int = 5) -> Optional[float]:
    """Median batch-1 forward time of the PyTorch model on this host (perf_counter)."""
    if iterations <= 0:
        return None
    model.eval()
    example = spec.example(1)
    times = []
    for index in range(warmup + iterations):
        start = time.perf_counter()
        model(example)
        if spec.device.type == "cuda":
            torch.cuda.synchronize()
        if index >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
