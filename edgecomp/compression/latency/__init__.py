"""Pruning for the latency of the device the model will run on (`prune.target.latency` / `latency_ms`).

    block.py   the channel block the target runtime computes in, measured by timing whole copies
    plan.py    the aligned plan: Torch-Pruning's ranking, every count a multiple of the block, to a MACs share
    loop.py    the closed loop: plan, time beside the dense model, re-plan until the budget holds
    run.py     a run's latency target: the block and dense timing (kept in <run>/latency/), each step's budget
    beside.py  another run's steps timed on this run's target (`edgecomp report --beside`)

The budget keeps one unit from the recipe to the loop (a fraction of the dense latency, or ms); plan.py alone
turns an ask into a MACs share.
"""

from .loop import Attempt, BudgetResult, Proposal, meet_budget, next_prediction
from .plan import aligned_proposals
from .run import LatencyRun, prepare_latency

__all__ = ["Attempt", "BudgetResult", "Proposal", "meet_budget", "next_prediction", "aligned_proposals",
           "LatencyRun", "prepare_latency"]
