"""Magnitude schedules (finding A): pure functions of the step and model size.

`magnitude_for(cfg, step, macs_ratio)` gives the augmentation magnitude M for
pruning step `step` (0 = the dense model) when the model keeps `macs_ratio`
of the dense MACs. It holds no state, so resuming needs only the step and the
recorded ratio — both are in every checkpoint.
"""

from __future__ import annotations

from ..core.recipe import MAX_MAGNITUDE, MagnitudeSchedule, ScheduleKind


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
