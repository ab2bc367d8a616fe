"""The channel block the target runtime computes in, measured by timing whole copies of the network.

Runtimes compute channels in blocks (onnxruntime's oneDNN kernels on this CPU: 16; TensorRT: 8, 32 or 64 by
precision and layer): a layer kept at 49 channels costs what 64 cost. The aligned planner keeps every count on a
multiple of the block, so the channels it keeps are channels the runtime computes anyway.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Optional

import torch
import torch.nn as nn

from ...core.models import measure_size
from ...core.recipe import Importance, PruneSection
from ..prune import Planner, dense_profile, ignored_layers, torch_pruning_errors, traceable

ALIGNMENTS = (4, 8, 16, 32)  # the blocks `measure_block` times, finest first
FREE_SHARE = 0.5  # padding to a coarser block is free when latency grows by at most this share of the MACs added
NOISE = 0.01  # ... plus this much (separate timing loops' ratios vary by 0.3-0.6% at 224 px)
MIN_KEPT_SHARE = 0.25  # each group keeps a random share of its channels, at least this much

Timer = Callable[[list[nn.Module]], list[float]]  # p50 ms of each model, all timed alternately in one loop
Probe = tuple[Optional[int], list[dict[str, Any]]]  # the block measured (None: none) and the rows it came from


def pruned_copy(model: nn.Module, example: torch.Tensor, cfg: PruneSection, num_classes: int,
                kept: Callable[[Any], int]) -> nn.Module:
    """A copy of `model` with every dependency group cut to `kept(ranked)` channels (l1 ranking)."""
    variant = copy.deepcopy(model).eval()
    ranking = cfg.model_copy(update={"importance": Importance.l1})
    keep = ignored_layers(variant, cfg, num_classes)
    with traceable(variant) as fixed, torch_pruning_errors(variant, "block probe"):
        planner = Planner(variant, example, ranking, keep + fixed, dense_profile(variant, example))
        plan = []
        for ranked in planner.ranked:
            count = kept(ranked)
            cut = ranked.removed(ranked.size - count) if count < ranked.size else None
            if cut is not None:
                plan.append((ranked, ranked.size - count, cut))
        for group in planner.groups(plan):
            group.prune()
    return variant


def padded_copy(model: nn.Module, example: torch.Tensor, cfg: PruneSection, num_classes: int, align: int,
                seed: int) -> nn.Module:
    """A copy at the random shares drawn from `seed` (the same for every call), each group's count rounded down
    to a multiple of the finest alignment (at least one), then up to a multiple of `align`: the same channels
    plus the ones a runtime computing in blocks of `align` would compute anyway."""
    generator = torch.Generator().manual_seed(seed)
    base = ALIGNMENTS[0]

    def kept(ranked) -> int:
        low = max(1, int(ranked.size * max(MIN_KEPT_SHARE, 1 - cfg.max_layer_ratio)))
        count = max(base, int(torch.randint(low, ranked.size + 1, (1,), generator=generator)) // base * base)
        return min(ranked.size, -(-count // align) * align)

    return pruned_copy(model, example, cfg, num_classes, kept)


def measure_block(model: nn.Module, example: torch.Tensor, cfg: PruneSection, num_classes: int, whole: Timer,
                  seed: int, max_block: Optional[int] = None) -> Probe:
    """The channel block the runtime computes in, measured on the whole model: one set of random shares on
    multiples of 4, padded up to multiples of 8, 16, 32 (at most `max_block`), all timed beside the dense model
    in one loop. Going up the ladder, a padding whose latency grows by at most FREE_SHARE of the MACs it adds
    (plus NOISE) computes channels the runtime ran anyway: the block is the last alignment so reached. None
    when fewer than two alignments are allowed."""
    aligns = [a for a in ALIGNMENTS if max_block is None or a <= max_block]
    if len(aligns) < 2:
        return None, []
    copies = [padded_copy(model, example, cfg, num_classes, align, seed) for align in aligns]
    times = whole([model] + copies)
    dense_macs = measure_size(model, example).macs
    rows: list[dict[str, Any]] = [
        {"align": align, "latency": ms / times[0], "macs": measure_size(variant, example).macs / dense_macs}
        for align, variant, ms in zip(aligns, copies, times[1:])]
    chosen = aligns[0]
    for before, after in zip(rows, rows[1:]):
        added_macs, added_latency = after["macs"] / before["macs"] - 1, after["latency"] / before["latency"] - 1
        after["free"] = added_latency <= FREE_SHARE * added_macs + NOISE
        if not after["free"]:
            break
        chosen = after["align"]
    return chosen, [{k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()} for row in rows]
