"""Structured pruning with Torch-Pruning, to a MACs or parameter target.

One step builds one Torch-Pruning pruner, ranks every channel once, and then
searches the pruning ratio whose plan lands at or just below the target. The
search runs on a MACs (params) estimate computed from the plan itself — each
layer's dense count scaled by the channels the plan keeps — so it needs no
forward pass, and a plan is a threshold on the scores sorted once, not a
Torch-Pruning step; only the chosen plan becomes Torch-Pruning groups. One
exact, per-layer count checks the pruned model and is the next round's profile.
A missed estimate (exact count above the target) prunes a little more from there.

Torch-Pruning cannot trace every torchvision network by itself; `traceable`
swaps in equivalent, traceable modules for the duration of a step (see
ShuffleNetV2 below) and swaps the originals back afterwards.
"""

from __future__ import annotations

import bisect
import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Optional

import torch
import torch.nn as nn
import torch_pruning as tp

from ..core.errors import PruneError, PruneTargetError, RecipeError
from ..core.models import Size, measure_size  # noqa: F401  (measure_size: callers import it from here)
from ..core.recipe import Importance, LatencyTarget, MacsTarget, PruneSection

MAX_CHANNEL_RATIO = 0.95  # the largest ratio the search tries
RATIO_RESOLUTION = 0.002  # bisection stops when the bracket is this narrow (of the channels)
SCAN_POINTS = 10  # coarse scan that brackets the ratio when the largest ratio's plan misses
TOP_UPS = 3  # further rounds when the exact count lands above the target
REACH_SLACK = 0.02  # the estimate is within a fraction of a percent; refuse only clear misses


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
    heads: list[nn.Module] = [m for m in model.modules()
                              if isinstance(m, (nn.Linear, nn.Conv2d)) and _out(m) == num_classes]
    return heads[-1:]


def _out(module: nn.Linear | nn.Conv2d) -> int:
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


def ignored_layers(model: nn.Module, cfg: PruneSection, num_classes: int) -> list[nn.Module]:
    modules = dict(model.named_modules())
    unknown = [name for name in cfg.ignored_layers if name not in modules]
    if unknown:
        raise RecipeError(f"prune.ignored_layers: no module named {', '.join(map(repr, unknown))}")
    return classifier_layers(model, num_classes) + [modules[name] for name in cfg.ignored_layers]


# ---------------------------------------------------------------- traceable stand-ins


class ChannelShuffle(nn.Module):
    """torchvision's `channel_shuffle(x, groups)` as one gather, which Torch-Pruning traces as one node
    (view/transpose/view it cannot: the channel axis is split across two dimensions)."""

    order: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, channels: int, groups: int = 2):
        super().__init__()
        self.channels = channels
        order = torch.arange(channels)
        self.register_buffer("order", (order % groups) * (channels // groups) + order // groups, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.order)


class _FixedChannels(tp.pruner.BasePruningFunc):
    """The shuffle's channels are coupled in and out and never pruned: it is always an ignored layer, so every
    group that would reach it (the trunk of a ShuffleNetV2 stage) is skipped by Torch-Pruning."""

    def prune_out_channels(self, layer: nn.Module, idxs) -> nn.Module:
        raise PruneError("internal: a channel shuffle was asked to change its channels")

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: ChannelShuffle) -> int:  # the only layer this pruner is registered for
        return layer.channels

    get_in_channels = get_out_channels


def _shuffle_block_class():
    from torchvision.models.shufflenetv2 import InvertedResidual

    class TraceableInvertedResidual(InvertedResidual):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # torchvision's forward, shuffle as a module
            if self.stride == 1:
                x1, x2 = x.chunk(2, dim=1)
                out = torch.cat((x1, self.branch2(x2)), dim=1)
            else:
                out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
            return self.edgecomp_shuffle(out)

    return InvertedResidual, TraceableInvertedResidual


@contextmanager
def traceable(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Swap in traceable equivalents (exact: tested output for output) and yield the modules Torch-Pruning
    must leave alone; the originals are back on exit, whatever happens inside."""
    original, traced = _shuffle_block_class()
    blocks: list[Any] = [m for m in model.modules() if type(m) is original]  # torchvision's, untyped here
    for block in blocks:
        last_conv = [m for m in block.branch2.modules() if isinstance(m, nn.Conv2d)][-1]
        block.__class__ = traced
        block.edgecomp_shuffle = ChannelShuffle(2 * last_conv.out_channels)
    try:
        yield [block.edgecomp_shuffle for block in blocks]
    finally:
        for block in blocks:
            del block.edgecomp_shuffle
            block.__class__ = original


CUSTOM_PRUNERS = {ChannelShuffle: _FixedChannels()}


# ---------------------------------------------------------------- the search


class _Ranked:
    """One Torch-Pruning group, ranked once: what `BasePruner._prune` computes for it before thresholding."""

    def __init__(self, graph, group, ch_groups: int, imp: torch.Tensor):
        self.root, self.fn = group[0].dep.target.module, group[0].dep.handler
        self.ch_groups, self.size = ch_groups, len(imp) // ch_groups
        self.imp = imp.view(ch_groups, -1).mean(dim=0).cpu() if ch_groups > 1 else imp.cpu()
        self.order = torch.argsort(self.imp)  # once; Torch-Pruning sorts the same scores on every step
        self.sorted = self.imp[self.order].tolist()
        self.channels = (graph.get_out_channels if graph.is_out_channel_pruning_fn(self.fn)
                         else graph.get_in_channels)(self.root)
        rank = [0] * self.size
        for position, index in enumerate(self.order.tolist()):
            rank[index] = position
        # every layer the group touches: its key for the estimate, the most it may lose (Torch-Pruning's
        # `check_pruning_group`), and the prune rank of each of its indices' root channel, sorted — so the
        # indices a plan removes there are those ranked below the group's count
        self.deps = []
        for item in group:
            dep, out = item.dep, graph.is_out_channel_pruning_fn(item.dep.handler)
            limits = []
            if out:
                limits.append(graph.get_out_channels(dep.target.module))
            if graph.is_in_channel_pruning_fn(dep.handler):
                limits.append(graph.get_in_channels(dep.target.module))
            limit = min((c for c in limits if c is not None), default=None)
            ranks = sorted(rank[r % self.size] for r in item.root_idxs)
            self.deps.append(((dep.target.module, out), limit, ranks))

    def removed(self, count: int) -> Optional[list]:
        """(key, channels removed there) for each layer, or None where the group would empty a layer."""
        cut = [(key, bisect.bisect_left(ranks, count)) for key, _, ranks in self.deps]
        if any(limit is not None and limit <= n for (_, limit, _), (_, n) in zip(self.deps, cut)):
            return None
        return cut

    def indices(self, count: int) -> list[int]:
        picked = self.order[:count]
        return torch.unique(torch.cat([picked + g * self.size for g in range(self.ch_groups)])).tolist()


def _traced_forward(model: nn.Module, example: torch.Tensor) -> torch.Tensor:
    """The forward pass Torch-Pruning traces. Without one it calls `model(*example)` inside a bare `except:` and
    retries `model(example)`, so a Ctrl-C during that first call was swallowed and the run went on."""
    return model(example)


class Planner:
    """One pruner and one ranking of the channels; plans for any ratio, and their estimated size.

    Torch-Pruning's `step` re-walks the dependency graph, re-sorts every score and builds every group for
    each ratio. Here the groups are walked and ranked once; a plan is then only a threshold on the sorted
    scores and one count per group (`plan`), cheap enough for a bisection, and only the chosen plan becomes
    Torch-Pruning groups (`groups`) — the same groups, index for index, as `BasePruner.step` at that ratio
    with Torch-Pruning's rounding capped at max_layer_ratio (tests/test_prune.py checks this), less the
    groups with no index that Torch-Pruning also yields, whose `prune()` changes nothing. round_to is always
    set (PruneSection: >= 1), so, as in Torch-Pruning, a group's pruned indices are its `count` lowest."""

    def __init__(self, model: nn.Module, example: torch.Tensor, cfg: PruneSection, keep: list[nn.Module],
                 dense: tuple[Size, dict, dict]):
        self.size, self.layer_macs, self.layer_params = dense
        self.pruner = tp.pruner.BasePruner(
            model, example, importance=make_importance(cfg.importance), global_pruning=cfg.global_pruning,
            pruning_ratio=0.0, iterative_steps=1, max_pruning_ratio=cfg.max_layer_ratio, round_to=cfg.round_to,
            ignored_layers=keep, customized_pruners=CUSTOM_PRUNERS, forward_fn=_traced_forward,
        )
        self.max_layer_ratio = cfg.max_layer_ratio
        self.ranked = self._rank()
        self._scores = sorted(score for ranked in self.ranked for score in ranked.sorted)

    def _rank(self) -> list[_Ranked]:
        # what `BasePruner._prune` does before it thresholds, for a CNN without attention heads or
        # per-layer ratios (edgecomp sets neither): the model does not change while plans are drawn
        pruner, ranked = self.pruner, []
        for group in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                              root_module_types=pruner.root_module_types):
            if not pruner._check_pruning_ratio(group):
                continue
            imp = pruner.estimate_importance(group)
            if imp is not None:
                ranked.append(_Ranked(pruner.DG, group, pruner._get_channel_groups(group), imp))
        return ranked

    def round(self, n_pruned: int, current: int) -> int:
        """Torch-Pruning's rounding to round_to, capped: it checks max_pruning_ratio only between iterative
        steps, so in one step it would empty a layer (and then skip its group). Keep at least
        (1 - max_layer_ratio) of it, rounded up to round_to."""
        round_to = self.pruner.round_to
        n_pruned = self.pruner._round_to(n_pruned, current, round_to)
        keep = -(-int(current * (1 - self.max_layer_ratio) + 0.999999) // round_to) * round_to
        return max(0, min(n_pruned, current - max(keep, 1)))

    def plan(self, ratio: float) -> list:
        """(group, channels it removes, channels removed in each layer it touches) for every group the
        pruner would prune at this ratio."""
        plan: list[tuple[_Ranked, int, list]] = []
        if self.pruner.global_pruning:
            n_pruned = len(self._scores) - int(len(self._scores) * (1 - ratio))
            if n_pruned <= 0:
                return plan
            threshold = self._scores[n_pruned - 1]
        for ranked in self.ranked:
            if self.pruner.global_pruning:
                count = bisect.bisect_right(ranked.sorted, threshold)
            else:
                count = max(0, ranked.size - int(ranked.size * (1 - ratio)))
            if count > 0 and self.pruner.round_to:
                count = self.round(count, ranked.channels)
            cut = ranked.removed(count) if count > 0 else None
            if cut is not None:
                plan.append((ranked, count, cut))
        return plan

    def groups(self, plan: list) -> list:
        """The plan as Torch-Pruning groups, ready to `prune()`."""
        graph, groups = self.pruner.DG, []
        for ranked, count, _ in plan:
            group = graph.get_pruning_group(ranked.root, ranked.fn, ranked.indices(count))
            if graph.check_pruning_group(group):
                groups.append(group)
        return groups

    @staticmethod
    def _removed(plan: list) -> dict:
        removed: dict = {}
        for _, _, cut in plan:
            for key, n in cut:
                removed[key] = removed.get(key, 0) + n
        return removed

    def estimate(self, plan: list) -> Size:
        """Each layer's dense MACs/params scaled by the share of its channels the plan keeps; layers without
        channels of their own (activations, pooling) follow the average scale."""
        removed = self._removed(plan)
        scales = {m: self._scale(m, removed) for m in self.layer_macs}
        known = [m for m, s in scales.items() if s is not None]
        dense_known = sum(self.layer_macs[m] for m in known) or 1
        average = sum(self.layer_macs[m] * scales[m] for m in known) / dense_known
        macs = sum(v * (average if scales[m] is None else scales[m]) for m, v in self.layer_macs.items())
        params = sum(v * (average if scales[m] is None else scales[m]) for m, v in self.layer_params.items())
        return Size(int(macs), int(params))

    def unshrunk(self, plan: list, names: dict, count: int = 3) -> list[str]:
        """The largest layers (by dense MACs) the plan leaves at full width."""
        removed = self._removed(plan)
        whole = [m for m in self.layer_macs if self._scale(m, removed) == 1.0 and m in names]
        return [names[m] for m in sorted(whole, key=lambda m: -self.layer_macs[m])[:count]]

    def _scale(self, module: nn.Module, removed: dict) -> Optional[float]:
        graph = self.pruner.DG
        handler = graph.get_pruner_of_module(module) if module in graph.module2node else None
        if handler is None or handler.get_out_channels(module) is None:
            return None
        out, inp = handler.get_out_channels(module), handler.get_in_channels(module) or 1
        kept_out = 1 - removed.get((module, True), 0) / out
        if handler.prune_in_channels == handler.prune_out_channels:  # coupled: BN, depthwise conv, norms
            return max(0.0, 1 - max(removed.get((module, k), 0) for k in (True, False)) / out)
        return kept_out * (1 - removed.get((module, False), 0) / inp)


def dense_profile(model: nn.Module, example: torch.Tensor) -> tuple[Size, dict, dict]:
    """The exact size and every leaf layer's share of it (Torch-Pruning's own counter, one pass: it costs
    what `measure_size` does, so a step's exact counts double as the next search's profile)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        macs, params, layer_macs, layer_params = tp.utils.count_ops_and_params(model, example, layer_wise=True)
    model.train(was_training)
    leaves = [m for m in model.modules() if not list(m.children())]
    return (Size(int(macs), int(params)), {m: layer_macs.get(m) or 0 for m in leaves},
            {m: layer_params.get(m) or 0 for m in leaves})


def check_prunable(model: nn.Module, example: torch.Tensor, cfg: PruneSection, num_classes: int,
                   name: str) -> None:
    """Before a run directory exists: Torch-Pruning can trace the model, and the recipe's final size is
    within its reach (estimated on a copy; taylor is probed with l2, as it needs gradients). A latency target's
    reach needs the device: compression/latency/run.py checks it once the block is measured."""
    model = copy.deepcopy(model).eval()
    keep = ignored_layers(model, cfg, num_classes)
    probe = cfg.model_copy(update={"importance": Importance.l2}) if cfg.importance == Importance.taylor else cfg
    with traceable(model) as fixed, torch_pruning_errors(model, name):
        profile = dense_profile(model, example)
        planner = Planner(model, example, probe, keep + fixed, profile)
        if cfg.target.kind == "latency":
            return
        deepest = deepest_plan(planner, cfg.target.kind == "macs")
        smallest = planner.estimate(deepest)
    dense, by_macs = profile[0], cfg.target.kind == "macs"
    assert not isinstance(cfg.target, LatencyTarget)  # a latency target returned above
    fraction = cfg.target.macs if isinstance(cfg.target, MacsTarget) else cfg.target.params
    reach = smallest.macs / dense.macs if by_macs else smallest.params / dense.params
    if reach > fraction * (1 + REACH_SLACK):
        names = {m: n for n, m in model.named_modules()}
        kept = ", ".join(planner.unshrunk(deepest, names)) or "none"
        raise PruneTargetError(
            f"prune.target.{'macs' if by_macs else 'params'}: {fraction:g} is below {reach:.3f}, the smallest "
            f"{name} at round_to {cfg.round_to} and max_layer_ratio {cfg.max_layer_ratio:g}; lower prune.round_to "
            f"or raise prune.max_layer_ratio (layers it may not shrink, largest first: {kept})"
        )


def scan_ratios() -> list[float]:
    return [MAX_CHANNEL_RATIO * k / SCAN_POINTS for k in range(1, SCAN_POINTS + 1)]


def deepest_plan(planner: Planner, by_macs: bool = True) -> list:
    """The plan that removes the most (estimated): not always the largest ratio's (see `search_ratio`)."""
    plans = [planner.plan(ratio) for ratio in scan_ratios()]
    sizes = [planner.estimate(plan) for plan in plans]
    return plans[min(range(len(plans)), key=lambda i: sizes[i].macs if by_macs else sizes[i].params)]


def search_ratio(planner: Planner, fits: Callable[[Size], bool]) -> Optional[float]:
    """The smallest ratio (to the search's resolution) whose estimated size fits; None if none does.

    Bisection on [0, MAX_CHANNEL_RATIO] when the largest ratio's plan fits. Plans are not monotone in the
    ratio everywhere, though: near the top Torch-Pruning may skip whole groups it may not empty (grouped
    convolutions) and plan less, so when the top plan misses, a coarse scan brackets the ratio first.
    Each probe is a `Planner.plan` (a threshold and a count per group), not a Torch-Pruning step."""
    low, high = 0.0, MAX_CHANNEL_RATIO
    if not fits(planner.estimate(planner.plan(high))):
        for high in scan_ratios()[:-1]:
            if fits(planner.estimate(planner.plan(high))):
                break
            low = high
        else:
            return None
    while high - low > RATIO_RESOLUTION:
        middle = (low + high) / 2
        low, high = (low, middle) if fits(planner.estimate(planner.plan(middle))) else (middle, high)
    return high


def prune_to(
    model: nn.Module,
    example: torch.Tensor,
    cfg: PruneSection,
    target: Size,
    num_classes: int,
    grad_fn: Optional[Callable[[nn.Module], None]] = None,
    name: str = "model",
) -> Size:
    """Prune `model` in place until it is at or below `target` (MACs or params, per cfg)."""
    by_macs = cfg.target.kind == "macs"
    reached = lambda size: (size.macs <= target.macs) if by_macs else (size.params <= target.params)  # noqa: E731
    keep = ignored_layers(model, cfg, num_classes)
    with traceable(model) as fixed:
        profile = dense_profile(model, example)  # the exact size, and the first search's per-layer profile
        for _ in range(TOP_UPS + 1):
            if reached(profile[0]):
                return profile[0]
            profile, found = _prune_once(model, example, cfg, keep + fixed, reached, grad_fn, name, profile)
            if not found:  # even the deepest plan misses: more rounds would break max_layer_ratio
                break
    raise _unreachable(profile[0], target, by_macs, name, cfg)


def taylor_gradients(model: nn.Module, cfg: PruneSection, grad_fn: Optional[Callable[[nn.Module], None]]) -> None:
    """Taylor importance reads the gradients of a few batches: fill them (other importances need none)."""
    if cfg.importance != Importance.taylor:
        return
    if grad_fn is None:
        raise PruneError("taylor importance needs gradients (no grad_fn given)")
    model.zero_grad()
    grad_fn(model)


def _prune_once(model, example, cfg, keep, reached, grad_fn, name, profile) -> tuple[tuple[Size, dict, dict], bool]:
    """One pruner: find the ratio by estimate, prune, count exactly (per layer: the next round's profile).
    Two exact counts in a round that lands (the profile before, the count after), one pruner, one plan
    turned into Torch-Pruning groups; tests/test_prune.py holds these counts."""
    taylor_gradients(model, cfg, grad_fn)
    model.eval()
    with torch_pruning_errors(model, name):
        planner = Planner(model, example, cfg, keep, profile)
        ratio = search_ratio(planner, reached)
        plan = deepest_plan(planner, cfg.target.kind == "macs") if ratio is None else planner.plan(ratio)
        for group in planner.groups(plan):
            group.prune()
    model.zero_grad(set_to_none=True)
    return dense_profile(model, example), ratio is not None


def _unreachable(size: Size, target: Size, by_macs: bool, name: str, cfg: PruneSection) -> PruneTargetError:
    what = "MACs" if by_macs else "params"
    return PruneTargetError(
        f"{name}: pruning stopped at {size.macs if by_macs else size.params} {what}, above the step's target "
        f"{target.macs if by_macs else target.params}: the pruner found no more channels it may remove "
        f"(prune.max_layer_ratio={cfg.max_layer_ratio}, prune.ignored_layers, or an importance that ranks all "
        f"channels alike, as bn_scale does on an untrained model); ask for a larger target or relax those"
    )


@contextmanager
def torch_pruning_errors(model: nn.Module, name: str) -> Iterator[None]:
    """A failure inside Torch-Pruning becomes one line naming the model and the layer group it failed on."""
    try:
        yield
    except (PruneError, RecipeError):
        raise
    except Exception as exc:  # noqa: BLE001 - Torch-Pruning raises anything from its tracer and index maps
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
        raise PruneError(
            f"{name}: Torch-Pruning cannot prune the layer group at {failing_layer(model, exc.__traceback__)} "
            f"({type(exc).__name__} inside Torch-Pruning: {detail[:160]}); list that layer in "
            f"prune.ignored_layers, or see the README's model list"
        ) from None


def failing_layer(model: nn.Module, tb) -> str:
    """The model layer Torch-Pruning was handling when it failed: the innermost frame holding one."""
    names = {id(m): n for n, m in model.named_modules()}
    found = "the dependency graph (tracing)"
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            value = getattr(value, "module", value)  # a Torch-Pruning Node wraps its module
            if isinstance(value, nn.Module) and id(value) in names and names[id(value)]:
                found = repr(names[id(value)])
        tb = tb.tb_next
    return found
