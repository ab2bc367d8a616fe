"""The pruning schedule: what fraction of the dense size (MACs, params or latency) each step keeps.

A pure function of the final fraction and the step count, as Torch-Pruning's
`linear_scheduler(ratio, steps)` is; resuming needs nothing but the step.
"""

from __future__ import annotations


def step_targets(final: float, steps: int, geometric: bool) -> list[float]:
    """Fraction of the dense size to keep after each pruning step 1..steps."""
    if geometric:
        return [final ** (k / steps) for k in range(1, steps + 1)]
    return [1.0 - (1.0 - final) * k / steps for k in range(1, steps + 1)]
