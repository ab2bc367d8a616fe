"""The latency model: a network's latency on one target, predicted from its per-layer channel counts.

Fitted from a handful of whole-network profiles at different widths, each read
per layer from the runtime's own profiler (`profiles.py`). Per layer:

    ms = intercept + slope * work,   work = padded(c_in) / groups * padded(c_out) * kernel * out_hw

where padded(c) rounds c up to the layer family's latency step (the kernel's
channel blocking: 8 or 16 on oneDNN/MLAS, 8/32/64 on TensorRT). The step is
not assumed: for each family (3x3 conv, 1x1 conv, depthwise 3x3, linear, ...)
the fit tries every candidate and keeps the one whose staircase explains the
profiles best. What the profiler cannot give a layer (pooling, additions
that were not fused, layout reorders) is `rest`, linear in the layers' sum;
the per-call overhead (wall minus the runtime's own run time) is a constant.
Whatever the sum still misses the closed loop corrects from whole-network
measurements (compression/latency_prune.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

from .layers import Counts, Layer

STEPS = (1, 2, 4, 8, 16, 32, 64)  # candidate channel blockings
STEP_TIE = 0.02  # a larger step must explain the profiles this much better than a smaller one to be chosen
FORMAT = "edgecomp-latency/2"  # /2 added the calibration (scale, shift_ms); /1 files read as uncalibrated
READABLE = ("edgecomp-latency/1", FORMAT)
MIN_SHARE = 0.05  # a calibrated prediction never falls under this share of the scaled profiled time


def padded(channels: int, step: int) -> int:
    return -(-channels // step) * step


def work(layer: Layer, c_in: int, c_out: int, step: int) -> float:
    if layer.kind == "depthwise":
        return float(padded(c_out, step) * layer.kernel * layer.out_hw)
    return padded(c_in, step) / layer.groups * padded(c_out, step) * layer.kernel * layer.out_hw


@dataclass
class Observation:
    """One profile: the channel counts it ran with and what the profiler gave each layer."""

    counts: Counts
    layer_ms: dict[str, float]
    rest_ms: float  # profiled time no layer claims (pools, reorders, unfused adds)
    run_ms: float  # the runtime's own length of a run
    wall_ms: float  # perf_counter around a run
    # layers the profiler named no time for (fused into another node, or missed): priced 0 ms, and said so
    unpriced: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": {k: list(v) for k, v in self.counts.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Observation":
        return cls(**{**data, "counts": {k: tuple(v) for k, v in data["counts"].items()}})


@dataclass
class Fit:
    intercept: float
    slope: float


@dataclass
class LatencyTable:
    key: dict[str, Any]
    layers: dict[str, Layer]
    steps: dict[str, int]  # family -> latency step in channels
    fits: dict[str, Fit]
    rest: Fit  # rest_ms = intercept + slope * (sum of the layers)
    overhead_ms: float
    observations: list[Observation] = field(default_factory=list)
    profile_seconds: float = 0.0
    # whole-model calibration (`calibrate`): predict = shift_ms + scale * (the profiles' sum)
    scale: float = 1.0
    shift_ms: float = 0.0
    calibration: list[dict[str, float]] = field(default_factory=list)  # the points it was fitted on

    @property
    def marginal(self) -> float:
        """Predicted ms per ms of the layers' sum: what one layer's change costs the whole."""
        return self.scale * (1.0 + self.rest.slope)

    @property
    def unpriced(self) -> list[str]:
        """Layers some profile gave no time of their own: their cost hides in a neighbour's, or is missed."""
        return sorted({name for o in self.observations for name in o.unpriced})

    def step(self, name: str) -> int:
        return self.steps[self.layers[name].family]

    def layer_ms(self, name: str, c_in: int, c_out: int) -> float:
        layer, fit = self.layers[name], self.fits[name]
        return fit.intercept + fit.slope * work(layer, c_in, c_out, self.step(name))

    def predict(self, counts: Counts) -> float:
        """Latency (ms) of the network with these channel counts; every priced layer must be given."""
        scaled = self.scale * self.profiled_ms(counts)
        # a calibrated line (shift < 0) fitted on wide models must not reach 0 ms for narrow ones it never saw
        return max(self.shift_ms + scaled, MIN_SHARE * scaled)

    def profiled_ms(self, counts: Counts) -> float:
        """The latency as the profiles saw it (before the whole-model calibration)."""
        total = sum(self.layer_ms(name, *counts[name]) for name in self.layers)
        return total + self.rest.intercept + self.rest.slope * total + self.overhead_ms

    def to_json(self) -> str:
        return json.dumps({
            "format": FORMAT, "key": self.key, "layers": [layer.as_dict() for layer in self.layers.values()],
            "steps": self.steps, "fits": {k: asdict(v) for k, v in self.fits.items()}, "rest": asdict(self.rest),
            "overhead_ms": self.overhead_ms, "profile_seconds": self.profile_seconds,
            "scale": self.scale, "shift_ms": self.shift_ms, "calibration": self.calibration,
            "observations": [o.as_dict() for o in self.observations],
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "LatencyTable":
        data = json.loads(text)
        if data.get("format") not in READABLE:
            raise ValueError(f"not an edgecomp latency table (format {data.get('format')!r})")
        layers = {d["name"]: Layer(**d) for d in data["layers"]}
        return cls(data["key"], layers, data["steps"], {k: Fit(**v) for k, v in data["fits"].items()},
                   Fit(**data["rest"]), data["overhead_ms"],
                   [Observation.from_dict(o) for o in data["observations"]], data["profile_seconds"],
                   data.get("scale", 1.0), data.get("shift_ms", 0.0), data.get("calibration", []))


def _line(x: np.ndarray, y: np.ndarray) -> tuple[Fit, float]:
    """Least squares y = a + b x with a, b >= 0 (a layer never gets faster with more work); returns the SSE."""
    if np.ptp(x) == 0:
        fit = Fit(float(max(y.mean(), 0.0)), 0.0)
    else:
        slope, intercept = np.polyfit(x, y, 1)
        if slope < 0:
            fit = Fit(float(max(y.mean(), 0.0)), 0.0)
        elif intercept < 0:
            fit = Fit(0.0, float(max((x @ y) / (x @ x), 0.0)))
        else:
            fit = Fit(float(intercept), float(slope))
    residual = y - (fit.intercept + fit.slope * x)
    return fit, float(residual @ residual)


def _fit_family(layers: list[Layer], observations: list[Observation],
                steps: tuple[int, ...] = STEPS) -> tuple[int, dict[str, Fit], dict[int, float]]:
    """The step that explains the family's profiles best, and each layer's line at that step."""
    errors, fits = {}, {}
    for step in steps:
        fits[step], errors[step] = {}, 0.0
        for layer in layers:
            x = np.array([work(layer, *o.counts[layer.name], step) for o in observations])
            y = np.array([o.layer_ms.get(layer.name, 0.0) for o in observations])
            fits[step][layer.name], sse = _line(x, y)
            errors[step] += sse
    best = min(errors.values())
    # the smallest step within STEP_TIE of the best: a coarser staircase must earn its place
    chosen = min(step for step in steps if errors[step] <= best * (1 + STEP_TIE) + 1e-15)
    return chosen, fits[chosen], errors


def fit_table(key: dict[str, Any], layers: dict[str, Layer], observations: list[Observation],
              profile_seconds: float = 0.0, max_step: Optional[int] = None,
              steps_given: Optional[dict[str, int]] = None, min_step: Optional[int] = None) -> LatencyTable:
    """Per family, the step and per-layer lines that explain the profiles; `max_step` caps the step (a step as
    wide as a family's narrowest layer leaves that layer unprunable: ResNet-20's 16-channel convolutions);
    `min_step` is the finest candidate (profiles whose counts all sit on multiples of it cannot show a finer
    staircase); a family in `steps_given` takes that step (measured otherwise: `probe_step`) and only its
    lines are fitted."""
    if len(observations) < 3:
        raise ValueError(f"a latency model needs at least 3 profiles, got {len(observations)}")
    candidates = tuple(step for step in STEPS if (max_step is None or step <= max_step)
                       and (min_step is None or step >= min(min_step, max_step or min_step)))
    families: dict[str, list[Layer]] = {}
    for layer in layers.values():
        families.setdefault(layer.family, []).append(layer)
    steps, fits = {}, {}
    for family, members in families.items():
        given = (steps_given or {}).get(family)
        steps[family], chosen, _ = _fit_family(members, observations, (given,) if given else candidates)
        fits.update(chosen)
    partial = LatencyTable(key, layers, steps, fits, Fit(0.0, 0.0), 0.0)
    sums = np.array([sum(partial.layer_ms(n, *o.counts[n]) for n in layers) for o in observations])
    rest, _ = _line(sums, np.array([o.rest_ms for o in observations]))
    overhead = float(np.median([max(o.wall_ms - o.run_ms, 0.0) for o in observations]))
    return LatencyTable(key, layers, steps, fits, rest, overhead, list(observations), profile_seconds)


def calibrate(table: LatencyTable, profiled: list[float], whole: list[float]) -> None:
    """Map the profiles' milliseconds to whole-model ones: `whole ≈ shift + scale · profiled`, least squares over
    models timed both ways (the dense one and copies on the fitted steps). A profiled run is not a whole one
    (benchmarks/results/profiling_overhead.md), and the profiles' unaligned widths run slower than the aligned
    counts plans use (latency_alignment.md). A fit that does not rise with the profiles keeps the scale of
    the widest point (shift 0)."""
    x, y = np.asarray(profiled, dtype=float), np.asarray(whole, dtype=float)
    scale, shift = (np.polyfit(x, y, 1) if len(x) > 1 and np.ptp(x) > 0 else (0.0, 0.0))
    if scale <= 0:
        widest = int(np.argmax(x))
        scale, shift = y[widest] / x[widest], 0.0
    table.scale, table.shift_ms = float(scale), float(shift)
    table.calibration = [{"profiled_ms": float(a), "whole_ms": float(b)} for a, b in zip(x, y)]


def relative_error(table: LatencyTable) -> Optional[float]:
    """Median |predicted - wall| / wall over the profiles the table was fitted on (an in-sample check)."""
    if not table.observations:
        return None
    return float(np.median([abs(table.profiled_ms(o.counts) - o.wall_ms) / o.wall_ms for o in table.observations]))
