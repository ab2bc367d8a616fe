"""Pruning a model the user holds in memory and trains in their own loop (`edgecomp.prune`).

The same planner as `edgecomp compress` (`prune.prune_to`, one Torch-Pruning
pruner, channels chosen for the target), driven by a `PruneSection` built
from keyword arguments instead of a recipe. The target is a fraction of the
MACs, parameters or measured latency of the model passed in, reached in one
step: call it again between fine-tuning rounds to prune iteratively. The
caller's model is never changed; the result holds the pruned copy and its plan.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ..core.errors import ModelError, PruneError, UserInputError
from ..core.models import Size, measure_size
from ..core.recipe import Importance, LatencyTarget, PruneSection
from .prune import prune_to


@dataclass(frozen=True)
class LayerPlan:
    """One layer's widths before and after pruning (conv: channels; linear: features; BN: features)."""

    name: str
    kind: str
    in_before: int
    in_after: int
    out_before: int
    out_after: int

    @property
    def changed(self) -> bool:
        return (self.in_before, self.out_before) != (self.in_after, self.out_after)


@dataclass
class PruneResult:
    """The pruned model (a copy; the model passed in is unchanged) and what pruning did to it."""

    model: nn.Module
    before: Size
    after: Size
    layers: list[LayerPlan]
    measured_latency: Optional[float] = None  # with a latency target: the kept plan's, a fraction of before's
    latency_met: Optional[bool] = None  # ... and whether it measured at or under the target

    @property
    def macs_ratio(self) -> float:
        return self.after.macs / self.before.macs

    @property
    def params_ratio(self) -> float:
        return self.after.params / self.before.params

    @property
    def changed_layers(self) -> list[LayerPlan]:
        return [layer for layer in self.layers if layer.changed]

    def plan(self) -> dict[str, Any]:
        """The plan as plain data (JSON-ready): sizes before/after and every pruned layer's widths."""
        return {"macs": {"before": self.before.macs, "after": self.after.macs},
                "params": {"before": self.before.params, "after": self.after.params},
                "layers": [asdict(layer) for layer in self.changed_layers]}


def prune(
    model: nn.Module,
    example_inputs: torch.Tensor,
    *,
    target_macs: Optional[float] = None,
    target_params: Optional[float] = None,
    target_latency: Optional[float] = None,
    device: str = "host",
    runtime: str = "onnxruntime",
    threads: int = 1,
    max_block: Optional[int] = None,
    importance: Importance | str = Importance.l2,
    round_to: int = 8,
    global_pruning: bool = True,
    max_layer_ratio: float = 0.9,
    ignored_layers: Sequence[str] = (),
    num_classes: Optional[int] = None,
    grad_fn: Optional[Callable[[nn.Module], None]] = None,
) -> PruneResult:
    """Prune a copy of `model` to `target_macs` (or `target_params`): the fraction of its MACs (parameters)
    to keep; or to `target_latency`, a fraction of its latency measured on `device` ("host", a profile or
    ssh://...) with `runtime` (onnxruntime, tensorrt or torch) on `threads` threads: the channel block is measured
    there (at most `max_block`: 4, 8, 16 or 32), counts are kept on it, and plans are timed beside the model
    until one measures within 5% under the target (`round_to` is then the block measured). The other arguments
    mean what the recipe's `prune.*` keys of the same name mean; `num_classes` (default: the width of the model's output on `example_inputs`) finds the
    classifier, which is never pruned; `grad_fn(model)` runs a backward pass on a batch or two, needed by
    importance "taylor"."""
    if not isinstance(model, nn.Module) or not isinstance(example_inputs, torch.Tensor):
        raise UserInputError("prune: needs a torch.nn.Module and one example input tensor (a batch, e.g. "
                             "torch.randn(1, 3, 224, 224))")
    section = _section(target_macs, target_params, target_latency, importance, round_to, global_pruning,
                       max_layer_ratio, ignored_layers)
    if max_block is not None and target_latency is None:
        raise UserInputError("prune: max_block caps the channel block a latency target measures; give "
                             "target_latency with it, or round_to for a MACs or params target")
    unknown = sorted(set(ignored_layers) - {name for name, _ in model.named_modules()})
    if unknown:
        raise UserInputError(f"prune: ignored_layers: the model has no module named {', '.join(map(repr, unknown))}")
    pruned = copy.deepcopy(model)
    classes = num_classes if num_classes is not None else _output_width(pruned, example_inputs)
    widths_before = layer_widths(pruned)
    before = measure_size(pruned, example_inputs)
    if target_latency is not None:
        latency_target = _latency_target(target_latency, device, runtime, threads, max_block)
        section = section.model_copy(update={"target": latency_target})
        return _prune_for_latency(pruned, example_inputs[:1], section, classes, grad_fn, widths_before, before)
    fraction = target_macs if target_macs is not None else target_params
    assert fraction is not None
    target = Size(int(before.macs * fraction), int(before.params * fraction))
    after = prune_to(pruned, example_inputs, section, target, classes, grad_fn=grad_fn, name=type(model).__name__)
    return PruneResult(pruned, before, after, _layer_plans(widths_before, layer_widths(pruned)))


def _latency_target(fraction: float, device: str, runtime: str, threads: int,
                    max_block: Optional[int]) -> LatencyTarget:
    try:
        return LatencyTarget.model_validate({"latency": fraction, "device": device, "runtime": runtime,
                                             "threads": threads, "max_block": max_block})
    except ValidationError as exc:
        problems = "; ".join(_latency_problem(error) for error in exc.errors(include_url=False))
        raise UserInputError(f"prune: {problems}") from None


_KEYWORDS = {"prune.target.latency": "target_latency", "prune.target.": "", "prune.": ""}  # recipe path -> keyword


def _in_keywords(message: str) -> str:
    """A latency target's message with the recipe's paths as prune()'s keywords (prune.target.max_block is
    max_block, prune.max_layer_ratio is max_layer_ratio)."""
    for path, keyword in _KEYWORDS.items():
        message = message.replace(path, keyword)
    return message


def _latency_problem(error: ErrorDetails) -> str:
    """A latency target's schema error in prune()'s keywords (its field, and the paths in its message)."""
    message = _in_keywords(error["msg"].removeprefix("Value error, "))
    if not error["loc"]:
        return message
    keyword = _in_keywords(f"prune.target.{error['loc'][-1]}")
    return f"{keyword}: {message} (got {error.get('input')!r})"


def _prune_for_latency(model: nn.Module, example: torch.Tensor, section: PruneSection, classes: int,
                       grad_fn: Optional[Callable[[nn.Module], None]], widths_before: dict,
                       before: Size) -> PruneResult:
    """One step of the recipe's latency target, on a model in memory: the block and the dense timing go to a
    scratch folder, the plans are timed beside `model` on the device."""
    from .latency import prepare_latency

    name = type(model).__name__
    with tempfile.TemporaryDirectory(prefix="edgecomp-prune-") as scratch:
        try:
            run = prepare_latency(Path(scratch), section, model, example, name, classes, 0)
        except UserInputError as exc:  # a budget under the floor, a runtime missing here: in prune()'s keywords
            raise type(exc)(_in_keywords(exc.args[0])) from None
        pruned, record = run.prune_step(model, model, example, 1, classes, grad_fn, name)
    after = measure_size(pruned, example)
    return PruneResult(pruned, before, after, _layer_plans(widths_before, layer_widths(pruned)),
                       measured_latency=record["measured_latency"], latency_met=record["budget_met"])


def _section(target_macs, target_params, target_latency, importance, round_to, global_pruning, max_layer_ratio,
             ignored_layers) -> PruneSection:
    """The keyword arguments as the recipe's prune section, validated by its schema (one line on error)."""
    given = (("macs", target_macs), ("params", target_params), ("latency", target_latency))
    target = {key: value for key, value in given if value is not None}
    if len(target) != 1:
        raise UserInputError("prune: give exactly one of target_macs, target_params or target_latency (a fraction "
                             "to keep, 0..1)")
    fields = {"steps": 1, "target": target, "importance": importance, "round_to": round_to,
              "global_pruning": global_pruning, "max_layer_ratio": max_layer_ratio,
              "ignored_layers": list(ignored_layers)}
    try:
        return PruneSection.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors(include_url=False))
        raise UserInputError(f"prune: {problems}") from None


def _describe(error: ErrorDetails) -> str:
    """A schema error in the names the caller used (target.macs -> target_macs)."""
    loc = [str(part) for part in error["loc"]]
    # target errors carry the union's tag in between (target.kind:macs.macs): the keyword is target_<last part>
    name = f"target_{loc[-1]}" if loc[:1] == ["target"] else "_".join(loc) or "arguments"
    return f"{name}: {error['msg'].lower()} (got {error.get('input')!r})"


def _output_width(model: nn.Module, example: torch.Tensor) -> int:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        output = model(example)
    model.train(was_training)
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        raise ModelError("prune: the model's output is not (batch, classes) logits; give num_classes= and, if "
                         "its head is not a Linear/Conv2d of that width, ignored_layers= naming the head")
    return int(output.shape[1])


def layer_widths(model: nn.Module) -> dict[str, tuple[str, int, int]]:
    """Every conv / linear / BN layer's (type, in, out) widths, by module name."""
    widths = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            widths[name] = ("Conv2d", module.in_channels, module.out_channels)
        elif isinstance(module, nn.Linear):
            widths[name] = ("Linear", module.in_features, module.out_features)
        elif isinstance(module, nn.BatchNorm2d):
            widths[name] = ("BatchNorm2d", module.num_features, module.num_features)
    return widths


def _layer_plans(before: dict[str, tuple[str, int, int]], after: dict[str, tuple[str, int, int]]) -> list[LayerPlan]:
    missing = sorted(set(before) - set(after))
    if missing:  # pruning narrows layers, it never removes them: a missing name is a bug, not the user's input
        raise PruneError(f"prune: layers {missing} disappeared while pruning")
    return [LayerPlan(name, kind, cin, after[name][1], cout, after[name][2])
            for name, (kind, cin, cout) in before.items()]
