"""The dense model as judge (finding C).

A frozen teacher (eval mode, no gradients) tells how hard an augmented sample
is by what the augmentation did to it: d = p_T(y | clean view) - p_T(y | augmented
view), clipped to 0..1 (criterion `drop`). Samples the teacher gets wrong on the
clean view say nothing about the augmentation and are handled explicitly
(`teacher_wrong`: kept at full weight, or excluded). The earlier criterion
d = 1 - p_T(y | augmented view) (`wrong`) stays available for comparison.
The difficulty feeds per-sample loss weights or a filter, distillation
targets, and the `teacher` magnitude schedule: anchored at the dense stage
(s = 1 gives the dense magnitude) and never larger for a smaller model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from ..core.errors import ModelError
from ..core.models import MODEL_FORMAT, build_model, load_state_file, model_from_payload, read_checkpoint
from ..core.recipe import CalibrationSection, DifficultySection, Recipe


class Teacher:
    """A frozen copy of a model; every call runs under no_grad in eval mode."""

    def __init__(self, model: nn.Module):
        self.model = copy.deepcopy(model).eval()
        for param in self.model.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        self.model.eval()  # never let a caller's .train() update its BN statistics
        return self.model(inputs)

    def to(self, device: torch.device) -> Teacher:
        self.model.to(device)
        return self


def true_class_probability(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return logits.softmax(dim=1).gather(1, labels.view(-1, 1)).squeeze(1)


def difficulty(teacher_logits: torch.Tensor, labels: torch.Tensor,
               clean_logits: Optional[torch.Tensor] = None) -> torch.Tensor:
    """With the clean view's logits: the confidence the augmentation cost the teacher, clipped to 0..1
    (0: the augmentation left the sample as easy as it was). Without: 1 - p_teacher(y | x)."""
    augmented = true_class_probability(teacher_logits, labels)
    if clean_logits is None:
        return 1.0 - augmented
    return (true_class_probability(clean_logits, labels) - augmented).clamp(0.0, 1.0)


def teacher_wrong(clean_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Samples the teacher misclassifies before any augmentation: their difficulty is not measurable."""
    return clean_logits.argmax(dim=1) != labels


def tau(cfg: DifficultySection, macs_ratio: float) -> float:
    """Hardest difficulty a model of size s is asked to learn: tau_min + (tau_dense - tau_min) * s."""
    ratio = min(max(macs_ratio, 0.0), 1.0)
    return cfg.tau_min + (cfg.tau_dense - cfg.tau_min) * ratio


def sample_weights(d: torch.Tensor, cfg: DifficultySection, macs_ratio: float) -> torch.Tensor:
    """1 up to tau(s), then falling linearly to min_weight at d = 1."""
    threshold = tau(cfg, macs_ratio)
    excess = ((d - threshold) / max(1.0 - threshold, 1e-6)).clamp(0.0, 1.0)
    return 1.0 - (1.0 - cfg.min_weight) * excess


def load_teacher(recipe: Recipe, dense_model: nn.Module, example: torch.Tensor) -> Teacher:
    """The dense model, or `teacher.weights` checked against the student's classes and input shape."""
    if not recipe.teacher.weights:
        return Teacher(dense_model)
    path = recipe.teacher.weights
    payload = read_checkpoint(path, "teacher.weights")
    if payload.get("format") == MODEL_FORMAT:
        model = model_from_payload(payload)  # its own architecture: a larger teacher is fine
    else:
        model = build_model(recipe.model.model_copy(update={"weights": None, "pretrained": False}))
        load_state_file(model, path, "teacher.weights")
    _check_teacher(model.to(example.device), example, recipe.model.num_classes, path)
    return Teacher(model)


def _check_teacher(model: nn.Module, example: torch.Tensor, num_classes: int, path: str) -> None:
    model.eval()
    try:
        with torch.no_grad():
            out = model(example)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise ModelError(
            f"teacher.weights: {path} does not take the model's input {tuple(example.shape[1:])}: {first}"
        ) from None
    if out.ndim != 2 or out.shape[1] != num_classes:
        raise ModelError(f"teacher.weights: {path} predicts {tuple(out.shape[1:])} classes, the model {num_classes}")


@dataclass
class Calibration:
    curve: dict[float, float]  # magnitude -> teacher accuracy on augmented validation samples
    clean_accuracy: float
    dense_magnitude: float
    dense_fraction: float  # what the dense magnitude keeps of the clean accuracy (monotone curve): the anchor
    target_fraction: float
    ceiling: float  # never above the dense magnitude nor the previous (larger) step's magnitude
    magnitude: float

    def as_dict(self) -> dict:
        return {"curve": {str(m): a for m, a in self.curve.items()}, "clean_accuracy": self.clean_accuracy,
                "dense_magnitude": self.dense_magnitude, "dense_fraction": self.dense_fraction,
                "target_fraction": self.target_fraction, "ceiling": self.ceiling, "chosen": self.magnitude}


def teacher_curve(teacher: Teacher, images: torch.Tensor, labels: torch.Tensor, prepare, augment,
                  grid: list[float], seed: int) -> dict[float, float]:
    """Teacher accuracy on the same samples augmented at each candidate magnitude."""
    curve = {}
    for magnitude in sorted(set(grid)):
        generator = torch.Generator().manual_seed(seed)  # same draws per magnitude: only M differs
        inputs = prepare(images, augment, magnitude, generator)
        predicted = teacher.logits(inputs).argmax(1).cpu()
        curve[float(magnitude)] = float((predicted == labels).float().mean())
    return curve


def calibrate(teacher: Teacher, images, labels, prepare, augment, cfg: CalibrationSection, macs_ratio: float,
              seed: int, dense_magnitude: float, ceiling: float) -> Calibration:
    """The step's magnitude: the largest M at which the teacher keeps target(s) x its clean accuracy, where
    target(1) is what the dense magnitude keeps, so s = 1 gives the dense magnitude, and target grows
    towards `target_small` as s shrinks. Capped at `ceiling` (the dense and the previous step's magnitude).
    Use the same `seed` at every step: the teacher is frozen, so the curve is then the same curve."""
    images, labels = images[: cfg.samples], labels[: cfg.samples]
    clean = float((teacher.logits(prepare(images)).argmax(1).cpu() == labels).float().mean())
    curve = teacher_curve(teacher, images, labels, prepare, augment, list(cfg.grid) + [dense_magnitude], seed)
    dense_fraction = monotone(curve)[float(dense_magnitude)] / max(clean, 1e-12)
    fraction = accuracy_target(dense_fraction, cfg.target_small, macs_ratio)
    chosen = min(choose_from_curve(curve, clean, fraction), ceiling)
    return Calibration(curve, clean, float(dense_magnitude), dense_fraction, fraction, float(ceiling), chosen)


def first_samples(source, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` samples of a batch source, in order."""
    images, labels, seen = [], [], 0
    for batch_images, batch_labels in source.batches(None):
        images.append(batch_images)
        labels.append(batch_labels)
        seen += len(batch_labels)
        if seen >= count:
            break
    return torch.cat(images)[:count], torch.cat(labels)[:count]


# ---------------------------------------------------------------- the calibration curve


def accuracy_target(dense_fraction: float, small_fraction: float, macs_ratio: float) -> float:
    """Fraction of the teacher's clean accuracy to keep at size s: a smaller model asks for easier data.
    Never below the dense fraction, so a smaller model is never asked for harder data than a larger one."""
    ratio = min(max(macs_ratio, 0.0), 1.0)
    small = max(small_fraction, dense_fraction)
    return small + (dense_fraction - small) * ratio


def monotone(curve: dict[float, float]) -> dict[float, float]:
    """The curve made non-increasing in M (running minimum): sampling noise never lets a stronger
    magnitude look easier than a weaker one."""
    out, lowest = {}, float("inf")
    for magnitude in sorted(curve):
        lowest = min(lowest, curve[magnitude])
        out[magnitude] = lowest
    return out


def choose_from_curve(curve: dict[float, float], clean_accuracy: float, target_fraction: float) -> float:
    """Largest magnitude whose (monotone) teacher accuracy stays >= target_fraction x clean accuracy."""
    passing = [m for m, acc in monotone(curve).items() if acc >= target_fraction * clean_accuracy - 1e-12]
    return max(passing, default=0.0)
