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
