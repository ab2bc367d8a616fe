"""The dense model as judge (finding C).

A frozen teacher (eval mode, no gradients) tells how hard an augmented sample
is: d = 1 - p_teacher(y | x_aug). The difficulty feeds per-sample loss weights
or a filter, distillation targets, and the `teacher` magnitude schedule, which
picks per step the largest magnitude at which the teacher still gets a target
fraction of augmented validation samples right.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from .errors import ModelError
from .models import MODEL_FORMAT, build_model, load_state_file, model_from_payload, read_checkpoint
from .recipe import CalibrationSection, DifficultySection, Recipe
from .schedule import accuracy_target, choose_from_curve


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

    def to(self, device: torch.device) -> "Teacher":
        self.model.to(device)
        return self


def difficulty(teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d = 1 - p_teacher(y | x): 0 for a sample the teacher is sure of, 1 for a hopeless one."""
    return 1.0 - teacher_logits.softmax(dim=1).gather(1, labels.view(-1, 1)).squeeze(1)


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
    target_fraction: float
    magnitude: float

    def as_dict(self) -> dict:
        return {"curve": {str(m): a for m, a in self.curve.items()}, "clean_accuracy": self.clean_accuracy,
                "target_fraction": self.target_fraction, "chosen": self.magnitude}


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
              seed: int) -> Calibration:
    images, labels = images[: cfg.samples], labels[: cfg.samples]
    clean = float((teacher.logits(prepare(images)).argmax(1).cpu() == labels).float().mean())
    curve = teacher_curve(teacher, images, labels, prepare, augment, cfg.grid, seed)
    fraction = accuracy_target(cfg.target_dense, cfg.target_small, macs_ratio)
    return Calibration(curve, clean, fraction, choose_from_curve(curve, clean, fraction))


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
