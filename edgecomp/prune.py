"""Structured pruning with Torch-Pruning, to a MACs or parameter target.

One pruning step removes channels in small increments (Torch-Pruning's own
iterative schedule inside one pruner) and stops at the first increment that
brings the model at or below the step's target, so the result lands within one
increment — at most `round_to` channels per layer — of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch_pruning as tp

from .errors import PruneError, RecipeError
from .recipe import Importance, PruneSection

INCREMENTS = 200  # increments of one pruner; more = finer landing, slower step
MAX_CHANNEL_RATIO = 0.95  # the pruner's ratio after all increments


@dataclass
class Size:
    macs: int
    params: int


def measure_size(model: nn.Module, example: torch.Tensor) -> Size:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example)
    model.train(was_training)
    return Size(int(macs), int(params))


def make_importance(kind: Importance):
    table = {
        Importance.l1: lambda: tp.importance.GroupMagnitudeImportance(p=1),
        Importance.l2: lambda: tp.importance.GroupMagnitudeImportance(p=2),
        Importance.taylor: lambda: tp.importance.GroupTaylorImportance(),
        Importance.bn_scale: lambda: tp.importance.BNScaleImportance(),
        Importance.lamp: lambda: tp.importance.LAMPImportance(p=2),
        Importance.random: lambda: tp.importance.RandomImportance(),
    }
    return table[kind]()


def classifier_layers(model: nn.Module, num_classes: int) -> list[nn.Module]:
    """Layers whose outputs are the class logits: never pruned."""
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and _out(m) == num_classes][-1:]


def _out(module: nn.Module) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def ignored_layers(model: nn.Module, cfg: PruneSection, num_classes: int) -> list[nn.Module]:
    modules = dict(model.named_modules())
    unknown = [name for name in cfg.ignored_layers if name not in modules]
    if unknown:
        raise RecipeError(f"prune.ignored_layers: no module named {', '.join(map(repr, unknown))}")
    return classifier_layers(model, num_classes) + [modules[name] for name in cfg.ignored_layers]


def prune_to(
    model: nn.Module,
    example: torch.Tensor,
    cfg: PruneSection,
    target: Size,
    num_classes: int,
    grad_fn: Optional[Callable[[nn.Module], None]] = None,
) -> Size:
    """Prune `model` in place until it is at or below `target` (MACs or params, per cfg)."""
    by_macs = cfg.target.macs is not None
    reached = lambda size: (size.macs <= target.macs) if by_macs else (size.params <= target.params)  # noqa: E731
    size = measure_size(model, example)
    if reached(size):
        return size
    model.eval()
    pruner = tp.pruner.BasePruner(
        model, example, importance=make_importance(cfg.importance), global_pruning=cfg.global_pruning,
        pruning_ratio=MAX_CHANNEL_RATIO, iterative_steps=INCREMENTS, max_pruning_ratio=cfg.max_layer_ratio,
        round_to=cfg.round_to, ignored_layers=ignored_layers(model, cfg, num_classes),
    )
    for _ in range(INCREMENTS):
        if cfg.importance == Importance.taylor:
            if grad_fn is None:
                raise PruneError("taylor importance needs gradients (no grad_fn given)")
            model.zero_grad()
            grad_fn(model)
        pruner.step()
        size = measure_size(model, example)
        if reached(size):
            model.zero_grad(set_to_none=True)
            return size
    what = "MACs" if by_macs else "params"
    raise PruneError(
        f"pruning stopped at {size.macs if by_macs else size.params} {what}, above the step's target "
        f"{target.macs if by_macs else target.params}: the pruner found no more channels it may remove "
        f"(prune.max_layer_ratio={cfg.max_layer_ratio}, prune.ignored_layers, or an importance that ranks all "
        f"channels alike, as bn_scale does on an untrained model); ask for a larger target or relax those"
    )


def size_floor(model: nn.Module, example: torch.Tensor, cfg: PruneSection, num_classes: int) -> Size:
    """The smallest model this pruning can reach (`round_to`, `max_layer_ratio`, ignored layers), measured
    by pruning a copy towards nothing until the pruner finds no more channels it may remove."""
    import copy

    floor = copy.deepcopy(model)
    nothing = cfg.model_copy(update={"importance": Importance.l2})  # no gradients needed to find the floor
    try:
        return prune_to(floor, example, nothing, Size(0, 0), num_classes)
    except PruneError:
        return measure_size(floor, example)


def check_reachable(model: nn.Module, example: torch.Tensor, cfg: PruneSection, num_classes: int, arch: str) -> None:
    """A target below what `round_to` and `max_layer_ratio` allow is the recipe's error, named with its floor."""
    if cfg.target.macs is None and cfg.target.params is None:
        return  # a latency budget: no size to check
    dense, floor = measure_size(model, example), size_floor(model, example, cfg, num_classes)
    for field, wanted, smallest in (("macs", cfg.target.macs, floor.macs / dense.macs),
                                    ("params", cfg.target.params, floor.params / dense.params)):
        if wanted is not None and wanted < smallest:
            raise RecipeError(
                f"prune.target.{field}: {wanted:g} is below {smallest:.3f}, the smallest {arch} at round_to "
                f"{cfg.round_to} (max_layer_ratio {cfg.max_layer_ratio:g}); lower prune.round_to"
            )
