"""Magnitude schedules (finding A): pure functions of the step and model size.

`magnitude_for(cfg, step, macs_ratio)` gives the augmentation magnitude M for
pruning step `step` (0 = the dense model) when the model keeps `macs_ratio`
of the dense MACs. It holds no state, so resuming needs only the step and the
recorded ratio — both are in every checkpoint.
"""

from __future__ import annotations

from .recipe import MAX_MAGNITUDE, MagnitudeSchedule, ScheduleKind


def constant(dense: float) -> float:
    return dense


def linear(dense: float, minimum: float, macs_ratio: float) -> float:
    """M = min + (dense - min) * s: the dense model gets `dense`, a vanishing one `min`."""
    ratio = min(max(macs_ratio, 0.0), 1.0)
    return minimum + (dense - minimum) * ratio


def per_step(values: list[float], dense: float, step: int) -> float:
    return dense if step == 0 else values[step - 1]


def magnitude_for(cfg: MagnitudeSchedule, step: int, macs_ratio: float) -> float:
    if cfg.kind == ScheduleKind.teacher and step > 0:
        raise ValueError("the teacher schedule is calibrated per step by the pipeline (teacher.calibrate)")
    if cfg.kind in (ScheduleKind.constant, ScheduleKind.teacher):  # teacher: the dense stage uses `dense`
        value = constant(cfg.dense)
    elif cfg.kind == ScheduleKind.linear:
        value = linear(cfg.dense, cfg.min, macs_ratio)
    else:
        value = per_step(cfg.values, cfg.dense, step)
    return float(min(max(value, 0.0), MAX_MAGNITUDE))


def step_targets(final: float, steps: int, geometric: bool) -> list[float]:
    """Fraction of the dense size to keep after each pruning step 1..steps."""
    if geometric:
        return [final ** (k / steps) for k in range(1, steps + 1)]
    return [1.0 - (1.0 - final) * k / steps for k in range(1, steps + 1)]


def accuracy_target(dense_fraction: float, small_fraction: float, macs_ratio: float) -> float:
    """Fraction of the teacher's clean accuracy to keep at size s: a smaller model asks for easier data."""
    ratio = min(max(macs_ratio, 0.0), 1.0)
    return small_fraction + (dense_fraction - small_fraction) * ratio


def choose_from_curve(curve: dict[float, float], clean_accuracy: float, target_fraction: float) -> float:
    """Largest magnitude up to which the teacher's accuracy stays >= target (the curve's prefix, not its
    noisy tail: a magnitude counts only if every smaller candidate passed too)."""
    chosen = 0.0
    for magnitude in sorted(curve):
        if curve[magnitude] < target_fraction * clean_accuracy:
            break
        chosen = magnitude
    return chosen
