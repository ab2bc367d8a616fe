"""The closed loop: plan a pruned copy for a latency budget, time it whole on the target beside the dense model,
re-plan from what was measured, until a plan measures within [1 - tolerance, 1] of the budget.

The loop knows nothing of how plans are made: it asks `propose(ask)` (an ask in the budget's unit, a fraction
of the dense latency or ms) for a pruned copy and the planner's prediction for it (plan.py), and
`measure(model)` for one timing loop (run.py builds it from the deployment wing's timers). It learns the
planner's error from each measurement (`next_prediction`) and keeps the plan that meets the budget closest
from below, confirmed by a second loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch.nn as nn

from ...core.recipe import LatencyTarget


@dataclass
class Attempt:
    """One plan of a step, pruned and timed whole on the target (in one or more separate loops)."""

    predicted: float  # in the budget's unit: a fraction of the dense latency, or ms
    measured: float  # the mean over `loops`
    low: Optional[float]  # a fraction: 2.5% of the paired per-round ratios; ms: the rounds' p25 (lowest over loops)
    high: Optional[float]  # a fraction: 97.5% of them; ms: p75 (highest over loops)
    p50_ms: float
    dense_ms: Optional[float]
    reached: bool  # the plan fits the corrected budget as predicted (False: the pruner's floor)
    loops: list[float] = field(default_factory=list)  # each separate loop's measurement

    def __post_init__(self) -> None:
        if not self.loops:
            self.loops = [self.measured]

    def pool(self, again: Attempt) -> None:
        """Fold in another loop's timing of the same model. Separate loops disagree more than the rounds within
        one suggest (on a shared CPU a p50 ratio varies between loops by 0.3-0.6% for a 224 px network and by
        7-8% for a 28 px ResNet-20), so one loop may not tell a 5% band."""
        n = len(self.loops)
        self.loops.append(again.measured)
        self.measured = sum(self.loops) / len(self.loops)
        self.p50_ms = (self.p50_ms * n + again.p50_ms) / (n + 1)
        if self.dense_ms is not None and again.dense_ms is not None:
            self.dense_ms = (self.dense_ms * n + again.dense_ms) / (n + 1)
        if self.low is not None and again.low is not None:
            assert self.high is not None and again.high is not None  # a timing gives low and high together
            self.low, self.high = min(self.low, again.low), max(self.high, again.high)

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 5) if isinstance(v, float) else [round(x, 5) for x in v] if k == "loops" else v)
                for k, v in self.__dict__.items()}


@dataclass
class Proposal:
    """A pruned copy of the model for one ask, what its planner predicts it measures (in the budget's unit), its
    channel counts (which identify the plan) and whether the plan reached the ask (False: the pruner's floor)."""

    model: nn.Module
    predicted: float
    counts: dict[str, tuple[int, int]]
    reached: bool = True

    @property
    def key(self) -> tuple:
        return tuple(sorted(self.counts.items()))


Propose = Callable[[float], Proposal]  # an ask in the budget's unit -> a pruned copy planned for it


@dataclass
class BudgetResult:
    model: nn.Module
    attempts: list[Attempt]
    chosen: int
    met: bool
    correction: float  # measured / predicted of the last attempt: the next step starts from it
    nudges: int = 0  # plans `_nudged` drew (no timing) because a re-plan gave channels already timed


def next_prediction(attempts: list[Attempt], aim: float) -> float:
    """The predicted latency to plan for next so that the measurement lands on `aim`.

    The prediction's error is not one factor at every width (the MACs share under-predicts narrow models), so a
    plain ratio correction can swing between two plans. Once attempts bracket the aim, interpolate between the
    closest pair (regula falsi on measured = f(predicted), monotone); before that, scale the nearest
    attempt's prediction by aim / measured."""
    below = [a for a in attempts if a.measured <= aim]
    above = [a for a in attempts if a.measured > aim]
    if below and above:
        low, high = max(below, key=lambda a: a.measured), min(above, key=lambda a: a.measured)
        if high.predicted > low.predicted and high.measured > low.measured:
            share = (aim - low.measured) / (high.measured - low.measured)
            return low.predicted + share * (high.predicted - low.predicted)
    nearest = min(attempts, key=lambda a: abs(a.measured - aim))
    return nearest.predicted * aim / nearest.measured


def meet_budget(propose: Propose, current: float, budget: float, target: LatencyTarget,
                measure: Callable[[nn.Module], Attempt], correction: float = 1.0) -> BudgetResult:
    """Plan a pruned copy for `budget` (`propose`; `current`: the prediction for the model as it is), time it
    whole (`measure`), re-plan from the measurements (`next_prediction`); up to 1 + max_replans plans, each
    aimed at the middle of the accepted band [1 - tolerance, 1] x budget.

    A plan is accepted only when a second, separate loop confirms it in the band (the mean of both). A re-plan
    that gives channels already timed is `_nudged` to new ones; if it finds none, no untimed plan lies between
    those timed and the loop stops. Kept: the attempt closest to the budget from below, confirmed by a second
    loop, else (none met it) the fastest, and `met` False."""
    aim = budget * (1 - target.tolerance / 2)

    def in_band(attempt: Attempt) -> bool:
        return (1 - target.tolerance) * budget <= attempt.measured <= budget

    attempts: list[Attempt] = []
    proposals: list[Proposal] = []
    timed: dict[tuple, int] = {}  # a plan's channel counts -> its attempt
    ceiling, nudges = 0.98 * current, 0
    wanted = min(aim / correction, ceiling)  # never plan the unpruned model
    for _ in range(target.max_replans + 1):
        proposal = propose(wanted)
        if proposal.key in timed:
            proposal, drawn = _nudged(propose, (wanted, aim, ceiling), attempts, timed, proposal, target.tolerance)
            nudges += drawn
            if proposal.key in timed:
                break  # no untimed plan between the ones timed: another loop of one of them would not move it
        attempt = measure(proposal.model)
        attempt.predicted, attempt.reached = proposal.predicted, proposal.reached
        timed[proposal.key] = len(attempts)
        attempts.append(attempt)
        proposals.append(proposal)
        if in_band(attempt):
            attempt.pool(measure(proposal.model))
            if in_band(attempt):
                break
        if not proposal.reached and attempt.measured > budget:
            break  # the pruner's floor: a further plan can only be the same one
        wanted = min(next_prediction(attempts, aim), ceiling)  # never plan the unpruned model again
    chosen = _confirmed_choice(attempts, proposals, budget, measure)
    kept = attempts[chosen]
    return BudgetResult(proposals[chosen].model, attempts, chosen, kept.measured <= budget,
                        kept.measured / kept.predicted if kept.predicted > 0 else 1.0, nudges)


MAX_NUDGES = 3  # plans (no timing) a re-plan may try when it keeps giving channels already timed


def _nudged(propose: Propose, asks: tuple[float, float, float], attempts: list[Attempt], timed: dict[tuple, int],
            proposal: Proposal, tolerance: float) -> tuple[Proposal, int]:
    """A re-plan whose channels were already timed (`asks`: what it asked for, the aim, the ceiling): the ask
    moves halfway toward the closest attempt across the aim, or, with none there yet, twice as far from the
    repeated plan's prediction as the ask was, up to MAX_NUDGES plans, until the channels are new. Where plans
    form a coarse staircase in predicted latency, interpolating between timed plans can ask for one of them
    again (tests/test_latency.py: run_staircase); timing it again would only spend the re-plan. Returns the
    proposal and the plans drawn."""
    wanted, aim, ceiling = asks
    drawn = 0
    for _ in range(MAX_NUDGES):
        if proposal.key not in timed:
            break
        repeated = attempts[timed[proposal.key]]
        below = repeated.measured <= aim  # measured under the aim: a larger ask is wanted
        across = [a for a in attempts if (a.measured > aim) == below]
        if across:
            new = (wanted + min(across, key=lambda a: abs(a.measured - aim)).predicted) / 2
        else:
            distance = max(abs(wanted - repeated.predicted), tolerance * repeated.predicted)
            new = repeated.predicted + (2 if below else -2) * distance
        new = min(new, ceiling)
        if (new > repeated.predicted) != below or new == wanted:
            break  # the attempt across lies on the wrong side of the ask (a noisy reading), or no room is left
        wanted = new
        proposal = propose(wanted)
        drawn += 1
    return proposal, drawn


def _confirmed_choice(attempts: list[Attempt], proposals: list[Proposal], budget: float,
                      measure: Callable[[nn.Module], Attempt]) -> int:
    """The attempt closest to the budget from below, once a second loop still puts it under (one loop's low
    reading is how an over-budget model gets kept); the fastest when none is under."""
    while True:
        under = [i for i, a in enumerate(attempts) if a.measured <= budget]
        if not under:
            return min(range(len(attempts)), key=lambda i: attempts[i].measured)
        chosen = max(under, key=lambda i: attempts[i].measured)
        if len(attempts[chosen].loops) >= 2:
            return chosen
        attempts[chosen].pool(measure(proposals[chosen].model))
