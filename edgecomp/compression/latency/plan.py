"""The aligned plan: Torch-Pruning's own channel choice with every count on the runtime's channel block.

Torch-Pruning ranks every channel once (global group importance, `prune.importance`) and keeps the most
important ones down to a MACs target; `round_to` = the block the runtime computes in (block.py) keeps each
count where it costs what it buys. Latency is predicted as the dense latency times the MACs share kept; the
closed loop (loop.py) corrects that by measuring, so the prediction only has to rise with the MACs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Optional

import torch
import torch.nn as nn

from ...core.errors import PruneTargetError
from ...core.models import Size, channel_counts, measure_size
from ...core.recipe import MacsTarget, PruneSection
from ..prune import prune_to
from .loop import Proposal, Propose


def aligned_proposals(model: nn.Module, example: torch.Tensor, cfg: PruneSection, block: int, dense_macs: int,
                      scale: float, num_classes: int, grad_fn: Optional[Callable[[nn.Module], None]] = None,
                      name: str = "model") -> tuple[Propose, float]:
    """Plans for an ask in the budget's unit: `model` pruned by `prune_to` (cfg's importance and ranking) with
    every count a multiple of `block`, to the MACs share ask / `scale` of `dense_macs` (scale: 1 for a budget
    that is a fraction of the dense latency, the dense model's ms for one in ms: the only conversion between
    the budget's unit and the plan's). Returns the proposals and the prediction for `model` as it is."""
    aligned = cfg.model_copy(update={"round_to": block, "target": MacsTarget(macs=0.5)})  # prune_to reads the kind

    def propose(ask: float) -> Proposal:
        trial = copy.deepcopy(model)
        try:
            size, reached = prune_to(trial, example, aligned, Size(int(ask / scale * dense_macs), 0), num_classes,
                                     grad_fn, name), True
        except PruneTargetError:  # pruned as far as max_layer_ratio allows: the floor
            size, reached = measure_size(trial, example), False
        return Proposal(trial, size.macs / dense_macs * scale, channel_counts(trial), reached)

    return propose, measure_size(model, example).macs / dense_macs * scale
