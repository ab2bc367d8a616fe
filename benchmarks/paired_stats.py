"""Paired comparisons over seeds: the statistics every claim on the results page uses.

Two variants run with the same seeds share, per seed, the dense model, the data subset and the
initialisation, so their difference is measured per seed and the interval is Student's t over those
differences (n - 1 degrees of freedom), not over two independent samples.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from scipy import stats as scipy_stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedDifference:
    """mean(a - b) over common seeds with its two-sided t interval."""

    mean: float
    low: float
    high: float
    n: int
    seeds: tuple[int, ...]
    differences: tuple[float, ...]

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def verdict(self, name_a: str, name_b: str) -> str:
        if self.n < 2:
            return "too few seeds"
        if self.low > 0:
            return f"{name_a} better"
        if self.high < 0:
            return f"{name_b} better"
        return "no difference shown"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.mean:+.4f} [{self.low:+.4f}, {self.high:+.4f}] (n={self.n})"


def paired_difference(a: Mapping[int, float], b: Mapping[int, float],
                      confidence: float = CONFIDENCE) -> PairedDifference:
    """a[seed] - b[seed] for the seeds both have; the interval is NaN-wide with fewer than 2 pairs."""
    seeds = tuple(sorted(set(a) & set(b)))
    diffs = tuple(a[s] - b[s] for s in seeds)
    if not diffs:
        raise ValueError("no seed in common: a paired difference needs the same seeds on both sides")
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return PairedDifference(mean, -math.inf, math.inf, 1, seeds, diffs)
    half = scipy_stats.t.ppf(0.5 + confidence / 2, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return PairedDifference(mean, mean - half, mean + half, len(diffs), seeds, diffs)


def mean_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean of independent values with its t interval (for single-variant figures)."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, -math.inf, math.inf
    half = scipy_stats.t.ppf(0.5 + confidence / 2, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half
