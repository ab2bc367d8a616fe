"""Pruning for the device: channels chosen under a latency budget, priced by a latency model of the target.

The pruner never runs anything on a device. It asks two plain functions:
`observe(model)` (one per-layer profile on the target, for building the model)
and `compare([dense, model])` (both timed in one loop), which the pipeline
builds from the deployment wing's profiler.

- The latency model (deploy/latency/table.py) is fitted from the dense network
  and a few copies pruned to random widths (every group its own random count,
  so that counts fall between the runtime's latency steps and the steps show).
- The plan keeps the most importance that fits the budget. Torch-Pruning ranks
  every channel once (`Planner`); each dependency group's count moves along its
  latency steps (kept channels a multiple of the group's step, never below
  1 - max_layer_ratio of it), and a greedy descent takes, move by move, the
  step that loses the least importance per millisecond saved; a last pass
  gives back the steps that still fit. A kept count is always the top of its
  step: a channel that costs nothing is kept, one that costs a step and buys
  little goes.
- The closed loop (`meet_budget`): prune a copy, time it beside the dense model,
  correct the prediction by the measured ratio, re-plan; keep the attempt that
  meets the budget closest from below, confirmed by a second timing loop.
"""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from ..core.errors import PruneTargetError
from ..core.models import Size, measure_size
from ..core.recipe import Importance, LatencyTarget, MacsTarget, PruneSection
from ..deploy.latency import LatencyTable, Layer, Observation, calibrate, channel_counts, fit_table, read_layers
from ..deploy.latency.table import STEPS
from .prune import (Planner, dense_profile, ignored_layers, prune_to, taylor_gradients, torch_pruning_errors,
                    traceable)

VARIANT_KEEP = (0.25, 1.0)  # random kept share of each group in a profiling variant
PROBE_STEPS = (4, 8, 16, 32)  # the alignments `probe_step` times
PROBE_FREE = 0.5  # padding to a coarser alignment is free when latency grows by at most this share of the MACs
PROBE_NOISE = 0.01  # ... plus this much (separate loops' ratios at 224 px: CV 0.3-0.6%, loop_repeatability.md)
DEEPEST = float("-inf")  # a budget no plan meets: the descent goes to every group's deepest step


# ---------------------------------------------------------------- one group's moves


@dataclass
class _Group:
    ranked: Any  # prune._Ranked
    counts: list[int]  # removal counts it may take, ascending (0 first): kept = a multiple of its step
    cuts: dict[int, dict[tuple[str, bool], int]]  # count -> channels removed per (layer, is_out)
    position: int = 0

    @property
    def count(self) -> int:
        return self.counts[self.position]

    def lost(self, new: int) -> float:
        """Importance the group loses going from its count to `new` (its lowest-ranked channels)."""
        low, high = sorted((self.count, new))
        return sum(self.ranked.sorted[low:high])


def _group_step(ranked, names: dict, table: LatencyTable) -> int:
    steps = [table.step(names[module]) for (module, _), _, _ in ranked.deps
             if module in names and names[module] in table.layers]
    return max(steps, default=1)


def _moves(ranked, names: dict, table: LatencyTable, max_layer_ratio: float) -> Optional[_Group]:
    size, step = ranked.size, _group_step(ranked, names, table)
    floor = max(1, int(size * (1 - max_layer_ratio) + 0.999999))
    kept = sorted({size} | set(range(-(-floor // step) * step, size, step)), reverse=True)
    counts, cuts = [], {}
    for keep in kept:
        cut = ranked.removed(size - keep)
        if cut is None:
            break
        counts.append(size - keep)
        cuts[size - keep] = {(names[m], out): n for (m, out), n in cut if m in names and names[m] in table.layers}
    return _Group(ranked, counts, cuts) if len(counts) > 1 else None


# ---------------------------------------------------------------- the plan


@dataclass
class LatencyPlan:
    plan: list  # (ranked, count, cut) for every group with channels to remove, as Planner.groups takes
    predicted_ms: float
    counts: dict[str, tuple[int, int]]
    lost_importance: float = 0.0
    reached: bool = True


class _Search:
    """The greedy descent over all groups' steps, priced by the table on the layers each move touches."""

    def __init__(self, planner: Planner, table: LatencyTable, names: dict, base: dict[str, tuple[int, int]],
                 max_layer_ratio: float):
        self.table, self.base = table, base
        self.groups = [g for g in (_moves(r, names, table, max_layer_ratio) for r in planner.ranked) if g]
        self.removed: dict[tuple[str, bool], int] = {}
        self.scale = table.marginal  # the rest grows with the layers' sum, and the calibration scales both
        self.total = table.predict(self.counts())

    def counts(self, removed: Optional[dict] = None) -> dict[str, tuple[int, int]]:
        removed = self.removed if removed is None else removed
        return {name: self._count(name, removed) for name in self.table.layers}

    def _count(self, name: str, removed: dict) -> tuple[int, int]:
        c_in, c_out = self.base[name]
        r_in, r_out = removed.get((name, False), 0), removed.get((name, True), 0)
        if self.table.layers[name].kind == "depthwise":
            kept = c_out - max(r_in, r_out)
            return kept, kept
        return c_in - r_in, c_out - r_out

    def _layer_ms(self, name: str, removed: dict) -> float:
        return self.table.layer_ms(name, *self._count(name, removed))

    def cost_change(self, group: _Group, new: int) -> float:
        """Predicted ms after moving `group` to count `new`, minus now."""
        old_cut, new_cut = group.cuts[group.count], group.cuts[new]
        keys = set(old_cut) | set(new_cut)
        after = dict(self.removed)
        for key in keys:
            after[key] = after.get(key, 0) - old_cut.get(key, 0) + new_cut.get(key, 0)
        touched = {name for name, _ in keys}
        return self.scale * sum(self._layer_ms(n, after) - self._layer_ms(n, self.removed) for n in touched)

    def move(self, group: _Group, position: int) -> None:
        old_cut, new_cut = group.cuts[group.count], group.cuts[group.counts[position]]
        self.total += self.cost_change(group, group.counts[position])
        for key in set(old_cut) | set(new_cut):
            self.removed[key] = self.removed.get(key, 0) - old_cut.get(key, 0) + new_cut.get(key, 0)
        group.position = position

    def _cheapest_cut(self) -> Optional[tuple[_Group, int]]:
        """The move that loses the least importance per ms saved (looking past steps that save nothing)."""
        best, best_score = None, float("inf")
        for group in self.groups:
            for position in range(group.position + 1, len(group.counts)):
                saved = -self.cost_change(group, group.counts[position])
                if saved > 1e-9:
                    score = group.lost(group.counts[position]) / saved
                    if score < best_score:
                        best, best_score = (group, position), score
                    break
        return best

    def _best_refill(self, budget: float) -> Optional[tuple[_Group, int]]:
        """The step back up that buys the most importance per ms and still fits the budget."""
        best, best_score = None, -1.0
        for group in self.groups:
            if group.position == 0:
                continue
            position = group.position - 1
            extra = self.cost_change(group, group.counts[position])
            if self.total + extra <= budget:
                score = group.lost(group.counts[position]) / max(extra, 1e-12)
                if score > best_score:
                    best, best_score = (group, position), score
        return best

    def run(self, budget: float) -> bool:
        while self.total > budget:
            found = self._cheapest_cut()
            if found is None:
                return False
            self.move(*found)
        while (found := self._best_refill(budget)) is not None:
            self.move(*found)
        return True

    def plan(self, reached: bool) -> LatencyPlan:
        entries = [(g.ranked, g.count, g.ranked.removed(g.count)) for g in self.groups if g.count > 0]
        lost = sum(sum(g.ranked.sorted[: g.count]) for g in self.groups)
        counts = self.counts()
        return LatencyPlan(entries, self.table.predict(counts), counts, lost, reached)


def plan_for_latency(planner: Planner, table: LatencyTable, model: nn.Module, budget_ms: float,
                     max_layer_ratio: float) -> LatencyPlan:
    """The plan that keeps the most importance within `budget_ms` as the table predicts it (or, when no plan
    fits, the deepest: `reached` False)."""
    names = {module: name for name, module in model.named_modules()}
    now = channel_counts(model)
    base = {name: now[name] for name in table.layers}
    search = _Search(planner, table, names, base, max_layer_ratio)
    reached = search.run(budget_ms)
    return search.plan(reached)


# ---------------------------------------------------------------- pruning a model


def _planner(model: nn.Module, example: torch.Tensor, cfg: PruneSection, keep: list[nn.Module]) -> Planner:
    return Planner(model, example, cfg, keep, dense_profile(model, example))


def prune_to_latency(model: nn.Module, example: torch.Tensor, cfg: PruneSection, table: LatencyTable,
                     budget_ms: float, num_classes: int, grad_fn: Optional[Callable[[nn.Module], None]] = None,
                     name: str = "model") -> LatencyPlan:
    """Prune `model` in place to the plan that fits `budget_ms` (predicted); returns the plan."""
    taylor_gradients(model, cfg, grad_fn)
    model.eval()
    keep = ignored_layers(model, cfg, num_classes)
    with traceable(model) as fixed, torch_pruning_errors(model, name):
        planner = _planner(model, example, cfg, keep + fixed)
        plan = plan_for_latency(planner, table, model, budget_ms, cfg.max_layer_ratio)
        for group in planner.groups(plan.plan):
            group.prune()
    model.zero_grad(set_to_none=True)
    return plan


def floor_ms(model: nn.Module, example: torch.Tensor, cfg: PruneSection, table: LatencyTable,
             num_classes: int, name: str = "model") -> float:
    """The predicted latency of the smallest model the pruner may make (every group at its deepest step)."""
    probe = cfg.model_copy(update={"importance": Importance.l2}) if cfg.importance == Importance.taylor else cfg
    model = copy.deepcopy(model).eval()
    keep = ignored_layers(model, cfg, num_classes)
    with traceable(model) as fixed, torch_pruning_errors(model, name):
        return plan_for_latency(_planner(model, example, probe, keep + fixed), table, model, DEEPEST,
                                cfg.max_layer_ratio).predicted_ms


# ---------------------------------------------------------------- building the latency model


def pruned_copy(model: nn.Module, example: torch.Tensor, cfg: PruneSection, num_classes: int,
                kept: Callable[[Any, dict], int]) -> nn.Module:
    """A copy of `model` with every dependency group cut to `kept(ranked, names)` channels (l1 ranking; `names`
    maps the copy's modules to their names)."""
    variant = copy.deepcopy(model).eval()
    probe = cfg.model_copy(update={"importance": Importance.l1})
    keep = ignored_layers(variant, cfg, num_classes)
    names = {module: name for name, module in variant.named_modules()}
    with traceable(variant) as fixed, torch_pruning_errors(variant, "latency profile"):
        planner = _planner(variant, example, probe, keep + fixed)
        plan = []
        for ranked in planner.ranked:
            count = kept(ranked, names)
            cut = ranked.removed(ranked.size - count) if count < ranked.size else None
            if cut is not None:
                plan.append((ranked, ranked.size - count, cut))
        for group in planner.groups(plan):
            group.prune()
    return variant


def random_widths(model: nn.Module, example: torch.Tensor, cfg: PruneSection, num_classes: int,
                  generator: torch.Generator) -> nn.Module:
    """A copy of `model` with every group pruned to its own random count (any count: no steps assumed)."""

    def drawn(ranked, names) -> int:
        return _draw(ranked, cfg, generator)

    return pruned_copy(model, example, cfg, num_classes, drawn)


def mixed_widths(model: nn.Module, example: torch.Tensor, cfg: PruneSection, num_classes: int,
                 generator: torch.Generator) -> nn.Module:
    """A copy of `model` with every group at its own random count rounded down to a multiple of its own random
    alignment (one of the candidate steps, under `max_step`; at least one alignment). Counts as drawn are off
    a 16-channel blocking 15 times in 16 and run in onnxruntime's slower unblocked kernels
    (benchmarks/results/profile_regimes.md), so profiles of them alone hardly show a staircase; here each
    family is seen on and off each step. Not the default: benchmarks/results/latency_widths.md."""
    max_step = getattr(cfg.target, "max_step", None)
    alignments = [step for step in STEPS if max_step is None or step <= max_step]

    def drawn(ranked, names) -> int:
        align = alignments[int(torch.randint(len(alignments), (1,), generator=generator))]
        return min(ranked.size, _down_to(_draw(ranked, cfg, generator), align))

    return pruned_copy(model, example, cfg, num_classes, drawn)


def shares_padded(model: nn.Module, example: torch.Tensor, cfg: PruneSection, num_classes: int, base: int,
                  align: int, seed: int) -> nn.Module:
    """A copy at the random shares drawn from `seed` (the same for every call), each group's count rounded
    down to a multiple of `base` (at least one), then up to a multiple of `align`: the same channels plus
    the ones a runtime blocking at `align` would compute anyway."""
    generator = torch.Generator().manual_seed(seed)

    def drawn(ranked, names) -> int:
        count = _down_to(_draw(ranked, cfg, generator), base)
        return min(ranked.size, -(-count // align) * align)

    return pruned_copy(model, example, cfg, num_classes, drawn)


def probe_step(model: nn.Module, example: torch.Tensor, cfg: PruneSection, num_classes: int,
               whole: Callable[[list[nn.Module]], list[float]], seed: int) -> tuple[Optional[int], list[dict]]:
    """The channel step the runtime blocks at, measured on the whole model: one set of random shares on
    multiples of 4, then padded up to multiples of 8, 16, 32 (under max_step), all timed beside the dense
    model in one loop. Going up the ladder, a padding whose latency grows by at most PROBE_FREE of the MACs
    it adds (plus PROBE_NOISE) computes channels the runtime ran anyway: the step is the last alignment so
    reached. Per-layer profiles of counts between the steps cannot tell it: on onnxruntime such counts leave
    the channel-blocked kernels for slower ones (benchmarks/results/profile_regimes.md); and comparing MACs
    per latency across copies rounded down favours whichever keeps more MACs (benchmarks/PLAN.md, the first
    probe rule's result). None when fewer than two alignments are allowed."""
    max_step = getattr(cfg.target, "max_step", None)
    aligns = [a for a in PROBE_STEPS if max_step is None or a <= max_step]
    if len(aligns) < 2:
        return None, []
    copies = [shares_padded(model, example, cfg, num_classes, aligns[0], align, seed) for align in aligns]
    times = whole([model] + copies)
    dense_macs = measure_size(model, example).macs
    rows = [{"align": align, "latency": ms / times[0], "macs": measure_size(copy_, example).macs / dense_macs}
            for align, copy_, ms in zip(aligns, copies, times[1:])]
    chosen = aligns[0]
    for before, after in zip(rows, rows[1:]):
        added_macs, added_latency = after["macs"] / before["macs"] - 1, after["latency"] / before["latency"] - 1
        after["free"] = added_latency <= PROBE_FREE * added_macs + PROBE_NOISE
        if not after["free"]:
            break
        chosen = after["align"]
    return chosen, [{k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def stepped_widths(model: nn.Module, example: torch.Tensor, cfg: PruneSection, num_classes: int,
                   generator: torch.Generator, step: int) -> nn.Module:
    """A copy of `model` with every group at its own random count rounded down to a multiple of `step` (at least
    one step): profiled in the regime plans on that step run in (blocked kernels on onnxruntime), where counts
    as drawn run in another (benchmarks/results/profile_regimes.md)."""

    def drawn(ranked, names) -> int:
        return min(ranked.size, _down_to(_draw(ranked, cfg, generator), step))

    return pruned_copy(model, example, cfg, num_classes, drawn)


# how build_table draws its profiled copies; "probed" (copies on the step `probe_step` measures) is stepped_widths
VARIANTS = {"drawn": random_widths, "mixed": mixed_widths}
WIDTHS = (*VARIANTS, "probed")


def _down_to(count: int, step: int) -> int:
    """`count` rounded down to a multiple of `step`, at least one step."""
    return max(step, count // step * step)


def _draw(ranked, cfg: PruneSection, generator: torch.Generator) -> int:
    low = max(1, int(ranked.size * max(VARIANT_KEEP[0], 1 - cfg.max_layer_ratio)))
    return int(torch.randint(low, ranked.size + 1, (1,), generator=generator))


def aligned_widths(model: nn.Module, example: torch.Tensor, cfg: PruneSection, num_classes: int,
                   table: LatencyTable, generator: torch.Generator) -> nn.Module:
    """A copy of `model` at random widths on the table's steps, as the plans are: each group's random count
    rounded down to a multiple of its step (at least one step)."""

    def drawn(ranked, names) -> int:
        step = _group_step(ranked, names, table)
        return min(ranked.size, _down_to(_draw(ranked, cfg, generator), step))

    return pruned_copy(model, example, cfg, num_classes, drawn)


Probe = tuple[Optional[int], list[dict[str, Any]]]  # what `probe_step` measured: the step (None: none) and rows


@dataclass
class TableBuild:
    """What the latency model cost, for the run's record."""

    profiles: int = 0
    seconds: float = 0.0
    reused: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)
    calibration_seconds: float = 0.0
    probe_step: Optional[int] = None  # the alignment `probe_step` measured for the convolutions
    widths: str = "drawn"  # how the profiled copies were drawn (`_copies`)
    probe: list[dict[str, Any]] = field(default_factory=list)


def build_table(model: nn.Module, example: torch.Tensor, cfg: PruneSection, num_classes: int, key: dict[str, Any],
                observe: Callable[[nn.Module, dict[str, Layer]], Observation], profiles: int, seed: int,
                done: Optional[list[Observation]] = None,
                keep: Optional[Callable[[int, Observation], None]] = None,
                whole: Optional[Callable[[list[nn.Module]], list[float]]] = None,
                calibration: int = 0, widths: str = "drawn",
                probe: bool = False, probed: Optional[Probe] = None,
                keep_probe: Optional[Callable[[Probe], None]] = None) -> tuple[LatencyTable, TableBuild]:
    """Profile the dense model and `profiles - 1` copies at random widths (`widths`, `_copies`; a run chooses
    them with `latency_run.profile_widths`), reusing the `done` ones (e.g. after an interruption; `keep`
    is called with each new one as it lands; likewise `probed`, a probe measured before, and `keep_probe`,
    called with a new one before any copy is profiled), and fit the latency model. `whole` gives the p50 ms
    of each model, timed whole in one loop. With `calibration` > 0: the dense model and that many copies on
    the fitted steps are timed whole, and the table is calibrated to them (`calibrate`). With `probe` (and
    widths "drawn"): no convolution family's step is finer than the one `probe_step` measures."""
    if widths not in WIDTHS:
        raise ValueError(f"widths: {widths!r} is not one of {', '.join(WIDTHS)}")
    if widths == "probed" and (whole is None or probe):
        raise ValueError('widths="probed" measures the step with `whole` itself: pass whole, not probe')
    started, record = time.perf_counter(), TableBuild(widths=widths)
    layers = read_layers(model.eval(), example)
    variants, min_step = _copies(model, example, cfg, num_classes, widths, whole, seed, record, probed, keep_probe)
    observations = _resumable(list(done or []), channel_counts(model), min_step)
    record.reused = len(observations)
    generator = torch.Generator().manual_seed(seed)
    for index in range(profiles):
        variant = model if index == 0 else variants(model, example, cfg, num_classes, generator)
        if index < len(observations):
            continue  # drawn all the same, so the later variants stay the same after a resume
        observation = observe(variant, layers)
        observations.append(observation)
        if keep is not None:
            keep(index, observation)
    record.profiles = len(observations)
    max_step = getattr(cfg.target, "max_step", None)  # a latency target's cap on the step found
    table = fit_table(key, layers, observations, time.perf_counter() - started, max_step, min_step=min_step)
    if whole is not None and probe:
        record.probe_step, record.probe = probe_step(model, example, cfg, num_classes, whole, seed + 1)
        if record.probe_step is not None:
            # a floor, not a replacement: a family the fit found coarser keeps its step (resnet18's 1x1
            # shortcuts at 32-64 keep its residual channels coarse; replaced by 16 it ran slower than
            # Torch-Pruning at the same MACs: benchmarks/results/latency_probe2.md)
            given = {family: max(step, record.probe_step) for family, step in table.steps.items()
                     if family != "linear"}
            table = fit_table(key, layers, observations, time.perf_counter() - started, max_step, given)
    if whole is not None and calibration > 0:
        _calibrate(table, model, example, cfg, num_classes, whole, calibration, generator, record)
    record.seconds = time.perf_counter() - started
    table.profile_seconds = record.seconds
    return table, record


def _copies(model: nn.Module, example: torch.Tensor, cfg: PruneSection, num_classes: int, widths: str,
            whole: Optional[Callable[[list[nn.Module]], list[float]]], seed: int, record: TableBuild,
            probed: Optional[Probe] = None,
            keep_probe: Optional[Callable[[Probe], None]] = None) -> tuple[Callable[..., nn.Module], Optional[int]]:
    """How the profiled copies are drawn, and the finest step their profiles can show (None: any). "drawn":
    any count; "mixed": each group's count on a random candidate step; "probed": every count on the step
    `probe_step` measures, or `probed` read back from an interrupted build (a second probe could measure
    another step under the profiles already kept); drawn when it measures none (a max_step below 8), and
    then so recorded. Probed is a run's choice for onnxruntime (`latency_run.profile_widths`): counts as drawn
    run in another kernel regime than plans on the steps, and profiles on the measured step chose channels
    that ran faster than Torch-Pruning's at the same MACs (benchmarks/results/latency_regime.md)."""
    if widths != "probed":
        return VARIANTS[widths], None
    if probed is None:
        probed = probe_step(model, example, cfg, num_classes, whole, seed + 1)
        if keep_probe is not None:
            keep_probe(probed)
    record.probe_step, record.probe = probed
    if record.probe_step is None:
        record.widths = "drawn"
        return random_widths, None
    return functools.partial(stepped_widths, step=record.probe_step), record.probe_step


def _resumable(done: list[Observation], dense: dict[str, tuple[int, int]], step: Optional[int]) -> list[Observation]:
    """The profiles read back that this build may keep: all of them, unless a copy's pruned counts are off
    `step` (profiled before on another probed step, or as drawn): from there on they are profiled again."""
    for index, observation in enumerate(done):
        counts = observation.counts
        if index and step and any(counts[n][1] % step for n in counts if n in dense and counts[n][1] != dense[n][1]):
            return done[:index]
    return done


def _calibrate(table: LatencyTable, model: nn.Module, example: torch.Tensor, cfg: PruneSection, num_classes: int,
               whole: Callable[[list[nn.Module]], list[float]], calibration: int, generator: torch.Generator,
               record: TableBuild) -> None:
    calibrated = time.perf_counter()
    copies = [model] + [aligned_widths(model, example, cfg, num_classes, table, generator)
                        for _ in range(calibration)]
    profiled = [table.profiled_ms({n: c for n, c in channel_counts(m).items() if n in table.layers})
                for m in copies]
    calibrate(table, profiled, whole(copies))
    record.calibration_seconds = time.perf_counter() - calibrated


# ---------------------------------------------------------------- the closed loop


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

    def pool(self, again: "Attempt") -> None:
        """Fold in another loop's timing of the same model. Separate loops disagree more than the rounds within
        one suggest (benchmarks/results/loop_repeatability.md: a p50 ratio's coefficient of variation over loops
        0.3-0.6% for mobilenet_v2 at 224 px, 7-8% for ResNet-20 at 28 px), so one loop may not tell a 5% band."""
        n = len(self.loops)
        self.loops.append(again.measured)
        self.measured = sum(self.loops) / len(self.loops)
        self.p50_ms = (self.p50_ms * n + again.p50_ms) / (n + 1)
        if self.dense_ms is not None and again.dense_ms is not None:
            self.dense_ms = (self.dense_ms * n + again.dense_ms) / (n + 1)
        if self.low is not None and again.low is not None:
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
    counts: dict[str, tuple[int, int]]
    attempts: list[Attempt]
    chosen: int
    met: bool
    correction: float  # measured / predicted of the last attempt: the next step starts from it
    nudges: int = 0  # plans `_nudged` drew (no timing) because a re-plan gave channels already timed


def model_proposals(model: nn.Module, example: torch.Tensor, cfg: PruneSection, table: LatencyTable,
                    unit_ms: float, num_classes: int, grad_fn: Optional[Callable[[nn.Module], None]] = None,
                    name: str = "model") -> tuple[Propose, float]:
    """The latency model's plans (`prune_to_latency`) for asks in units of `unit_ms` table-milliseconds (the dense
    prediction for a fraction budget, 1 for ms), and the table's prediction for `model` as it is."""

    def propose(ask: float) -> Proposal:
        trial = copy.deepcopy(model)
        plan = prune_to_latency(trial, example, cfg, table, ask * unit_ms, num_classes, grad_fn, name)
        return Proposal(trial, plan.predicted_ms / unit_ms, plan.counts, plan.reached)

    now = channel_counts(model)
    return propose, table.predict({n: now[n] for n in table.layers}) / unit_ms


def aligned_proposals(model: nn.Module, example: torch.Tensor, cfg: PruneSection, step: int, dense_macs: int,
                      scale: float, num_classes: int, grad_fn: Optional[Callable[[nn.Module], None]] = None,
                      name: str = "model") -> tuple[Propose, float]:
    """Torch-Pruning's own plans (`prune_to`: cfg's importance and global ranking) with every count a multiple of
    `step`, the channel block the runtime computes in. It predicts latency as `scale` x the share of `dense_macs`
    kept (scale: 1 for a fraction budget, the dense ms for ms), and the closed loop corrects that by measuring.
    Returns the proposals and that prediction for `model` as it is."""
    aligned = cfg.model_copy(update={"round_to": step, "target": MacsTarget(macs=0.5)})  # prune_to reads the kind

    def propose(ask: float) -> Proposal:
        trial = copy.deepcopy(model)
        try:
            size, reached = prune_to(trial, example, aligned, Size(int(ask / scale * dense_macs), 0), num_classes,
                                     grad_fn, name), True
        except PruneTargetError:  # pruned as far as max_layer_ratio allows: the floor
            size, reached = measure_size(trial, example), False
        return Proposal(trial, size.macs / dense_macs * scale, channel_counts(trial), reached)

    return propose, measure_size(model, example).macs / dense_macs * scale


def next_prediction(attempts: list[Attempt], aim: float) -> float:
    """The predicted latency to plan for next so that the measurement lands on `aim`.

    The prediction's error is not one factor at every width (a table over-predicts narrow models more), so a
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
    wanted, ceiling, nudges = aim / correction, 0.98 * current, 0
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
    return BudgetResult(proposals[chosen].model, proposals[chosen].counts, attempts, chosen, kept.measured <= budget,
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
