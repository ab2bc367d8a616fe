"""A run's latency target: the channel block measured on the device, each step's budget, and the step's model
pruned and timed on the device until it meets that budget.

Files, under <run>/latency/: `block.json` (the block whole copies were timed to compute in, the rows that
measured it, the dense model's p50 and the floor; its key is the device, runtime, precision, batch, threads,
input and network), measured before the run directory is written (a budget under the floor writes nothing),
saved with the run's recipe and read back on --resume while the key and the cap on the block stay the same.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from ...core.console import console
from ...core.errors import PruneTargetError
from ...core.models import measure_size
from ...core.recipe import Importance, LatencyTarget, PruneSection, Runtime
from ...core.rundir import write_text
from ...deploy.devices import resolve_device
from ...deploy.latency.cuda import TorchTimer
from ...deploy.latency.timing import Timer, TimingSettings
from ...deploy.runners import make_runner
from ..steps import step_targets
from .block import measure_block
from .loop import Attempt, Propose, meet_budget
from .plan import aligned_proposals


def settings_for(target: LatencyTarget, label: str) -> TimingSettings:
    runtime = {Runtime.onnxruntime: "onnxruntime", Runtime.tensorrt: "trtexec", Runtime.torch: "torch"}[target.runtime]
    return TimingSettings(device=label, runtime=runtime, precision=target.precision.value, batch=target.batch,
                          threads=target.threads)


@contextmanager
def open_timer(target: LatencyTarget, settings: TimingSettings,
               input_shape: tuple[int, ...]) -> Iterator[Timer | TorchTimer]:
    """Whole-model timings through the target-side programs (onnxruntime, trtexec), or in this process (torch)."""
    if target.runtime == Runtime.torch:
        yield TorchTimer(input_shape, settings.batch, precision=settings.precision)
        return
    with make_runner(resolve_device(target.device), run_id="latency") as runner:
        yield Timer(runner, settings, input_shape)


def whole_timer(timer: Timer | TorchTimer, iterations: int) -> Callable[[list[nn.Module]], list[float]]:
    """p50 ms of each model, all timed alternately in one loop."""
    return lambda models: [row["p50"] for row in timer.compare(models, iterations=iterations)["models"]]


@dataclass
class LatencyRun:
    prune: PruneSection
    settings: TimingSettings
    input_shape: tuple[int, ...]
    dense_ms: float  # the dense model's p50 on the target, measured with the block
    dense_macs: int  # the plans' MACs targets are shares of the dense model's
    block: Optional[int]  # the channel block the runtime computes in (None: none measured, prune.round_to used)
    record: dict[str, Any] = field(default_factory=dict)
    correction: float = 1.0  # measured / predicted of the last step: where the next step's first plan aims
    key: dict[str, Any] = field(default_factory=dict)  # what block.json was measured for (TimingSettings.key)

    def save(self, folder: Path) -> None:
        """`folder/block.json`, which `prepare_latency` reads back while the key and the cap stay the same."""
        write_text(folder / "block.json", json.dumps({"key": self.key, "max_block": self.target.max_block,
                                                      "dense_ms": self.dense_ms, "block": self.block,
                                                      "record": self.record}, indent=1))

    @property
    def target(self) -> LatencyTarget:
        assert isinstance(self.prune.target, LatencyTarget)
        return self.prune.target

    @property
    def by_fraction(self) -> bool:
        return self.target.latency is not None

    @property
    def round_to(self) -> int:
        """The block measured; where none was (a max_block under 8), prune.round_to, capped at max_block."""
        cap = self.target.max_block
        return self.block or (min(self.prune.round_to, cap) if cap else self.prune.round_to)

    def timer(self):
        return open_timer(self.target, self.settings, self.input_shape)

    def budget(self, step: int) -> float:
        """Step `step`'s budget: a fraction of the dense latency, or ms (the last step's is the recipe's)."""
        target, steps = self.target, self.prune.steps
        if target.latency is not None:
            final = target.latency
        else:
            assert target.latency_ms is not None  # a LatencyTarget holds one of latency and latency_ms
            final = target.latency_ms / self.dense_ms
        fraction = step_targets(final, steps, self.prune.schedule.value == "geometric")[step - 1]
        if self.by_fraction:
            return fraction
        assert target.latency_ms is not None  # not a fraction: the budget is in ms
        return target.latency_ms if step == steps else fraction * self.dense_ms

    def proposals(self, model: nn.Module, example: torch.Tensor, num_classes: int,
                  grad_fn: Optional[Callable[[nn.Module], None]] = None, name: str = "model") -> tuple[Propose, float]:
        """Aligned plans of `model` for an ask in the budget's unit, and the prediction for `model` as it is."""
        scale = 1.0 if self.by_fraction else self.dense_ms
        return aligned_proposals(model, example, self.prune, self.round_to, self.dense_macs, scale, num_classes,
                                 grad_fn, name)

    def prune_step(self, model: nn.Module, dense: nn.Module, example: torch.Tensor, step: int, num_classes: int,
                   grad_fn: Optional[Callable[[nn.Module], None]], name: str) -> tuple[nn.Module, dict[str, Any]]:
        budget = self.budget(step)
        propose, current = self.proposals(model, example, num_classes, grad_fn, name)
        with self.timer() as timer:
            result = meet_budget(propose, current, budget, self.target, self._measure(timer, dense),
                                 self.correction)
        self.correction = result.correction
        chosen = result.attempts[result.chosen]
        if not result.met:
            console.print(f"[bold yellow]latency budget not met[/] at step {step}: measured {chosen.measured:.3f} "
                          f"against {budget:.3f} after {len(result.attempts)} plans; kept the fastest")
        return result.model, {
            "latency_budget": round(budget, 5), "latency_unit": "fraction" if self.by_fraction else "ms",
            "predicted_latency": round(chosen.predicted, 5), "measured_latency": round(chosen.measured, 5),
            "measured_latency_low": chosen.low, "measured_latency_high": chosen.high,
            "measured_p50_ms": round(chosen.p50_ms, 4),
            "dense_p50_ms": round(chosen.dense_ms, 4) if chosen.dense_ms else None,
            "budget_met": result.met, "latency_attempts": [a.as_dict() for a in result.attempts],
            # met is "at or under the budget"; in band is also "within tolerance of it" (the loop's aim)
            "budget_in_band": result.met and chosen.measured >= (1 - self.target.tolerance) * budget,
            "measured_on": self.settings.device, "latency_runtime": self.settings.runtime,
            "latency_threads": self.settings.threads, "latency_batch": self.settings.batch,
            "latency_correction": round(result.correction, 5), "latency_block": self.round_to,
            "latency_nudges": result.nudges,
        }

    def _measure(self, timer: Timer | TorchTimer, dense: nn.Module) -> Callable[[nn.Module], Attempt]:
        def measure(trial: nn.Module) -> Attempt:
            timed = timer.compare([dense, trial], iterations=self.target.latency_iterations)
            dense_row, row, ratio = timed["models"][0], timed["models"][1], timed["ratios"][1]
            if self.by_fraction:
                return Attempt(0.0, ratio["p50"], ratio["low"], ratio["high"], row["p50"], dense_row["p50"], True)
            return Attempt(0.0, row["p50"], row["p25"], row["p75"], row["p50"], dense_row["p50"], True)

        return measure


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def prepare_latency(folder: Path, prune: PruneSection, dense: nn.Module, example: torch.Tensor, arch: str,
                    num_classes: int, seed: int) -> LatencyRun:
    """The run's latency target: the channel block, the dense p50 and the smallest model's latency, measured on
    the device (or read back from `folder/block.json` when its key and caps match). Refuses a budget below what
    the smallest model the pruner may make measures. Writes nothing: `LatencyRun.save` does. Only the dense
    model's shape matters here, not its weights, so the untrained model times as the trained one would."""
    target = prune.target
    assert isinstance(target, LatencyTarget)
    label = resolve_device(target.device).label
    settings, shape = settings_for(target, label), tuple(example.shape[1:])
    key = settings.key(shape, arch)
    path = folder / "block.json"
    stored = _read_json(path)
    run = LatencyRun(prune, settings, shape, 0.0, measure_size(dense, example).macs, None, key=key)
    floor_key = {"steps": prune.steps, "max_layer_ratio": prune.max_layer_ratio, "round_to": prune.round_to}
    if stored is not None and stored.get("key") == key and stored.get("max_block") == target.max_block:
        run.dense_ms, run.block, run.record = stored["dense_ms"], stored["block"], stored["record"]
        console.print(f"latency target: block and dense timing read back from {path}")
    else:
        _measure_block(run, dense, example, num_classes, seed)
    if run.record.get("floor_for") != floor_key:  # the floor depends on how far the steps may prune
        run.record["floor"], run.record["floor_for"] = _time_floor(run, dense, example, num_classes, arch), floor_key
    _check_floor(run, arch)
    return run


def _measure_block(run: LatencyRun, dense: nn.Module, example: torch.Tensor, num_classes: int, seed: int) -> None:
    target = run.target
    console.print(f"[bold]latency target[/]: measuring the channel block on {run.settings.device} "
                  f"({run.settings.runtime}, {run.settings.threads} thread(s), batch {run.settings.batch})")
    with run.timer() as timer:
        info = timer.check_runtime()
        run.block, rows = measure_block(dense, example, run.prune, num_classes,
                                        whole_timer(timer, target.latency_iterations), seed + 1, target.max_block)
        run.dense_ms = timer.compare([dense], iterations=target.latency_iterations)["models"][0]["p50"]
    run.record = {"block": run.block, "block_rows": rows, "round_to": run.round_to,
                  "device_info": info}
    console.print(f"latency target: channel counts on multiples of {run.round_to} "
                  + ("(the block whole copies were timed to compute in)" if run.block else
                     "(no block measured under max_block 4)") + f"; dense p50 {run.dense_ms:.3f} ms")


def _time_floor(run: LatencyRun, dense: nn.Module, example: torch.Tensor, num_classes: int, arch: str) -> float:
    """The measured latency of the smallest model the pruner may make, a fraction of the dense model's (timed
    beside it in one loop): latency falls more slowly than MACs, so no MACs share can stand in for it."""
    smallest = _smallest(run, dense, example, num_classes, arch)
    with run.timer() as timer:
        return timer.compare([dense, smallest], iterations=run.target.latency_iterations)["ratios"][1]["p50"]


def _check_floor(run: LatencyRun, arch: str) -> None:
    """Refuse a budget at or above the dense latency, or below what the smallest model the pruner may make
    measured (`block.json`'s floor), before any step runs."""
    target = run.target
    if target.latency_ms is not None and target.latency_ms >= run.dense_ms:
        raise PruneTargetError(f"prune.target.latency_ms: {target.latency_ms:g} ms is at or above the dense "
                               f"{arch}'s {run.dense_ms:.3f} ms on {run.settings.device}: nothing to prune for")
    final = run.budget(run.prune.steps)
    wanted = final if run.by_fraction else final / run.dense_ms
    floor = run.record["floor"]
    if wanted < floor:
        field_name = "latency" if run.by_fraction else "latency_ms"
        given = f"{final:g}" if run.by_fraction else f"{final:g} ms"
        floor_text = f"{floor:.3f} of the dense latency" if run.by_fraction else f"{floor * run.dense_ms:.3f} ms"
        hint = "" if target.max_block == 4 else \
            f", or {'lower' if target.max_block else 'set'} prune.target.max_block"
        raise PruneTargetError(
            f"prune.target.{field_name}: {given} is below {floor_text}, the measured latency of the smallest "
            f"{arch} the pruner may make (max_layer_ratio {run.prune.max_layer_ratio:g}, channel counts on "
            f"multiples of {run.round_to}) on {run.settings.device} ({run.settings.runtime}); ask for more or "
            f"raise prune.max_layer_ratio{hint}"
        )


def _smallest(run: LatencyRun, dense: nn.Module, example: torch.Tensor, num_classes: int, arch: str) -> nn.Module:
    """The smallest model the pruner may make: max_layer_ratio holds per step, so the floor compounds. Taylor
    importance needs gradients; the floor's channel choice does not matter, only its size: l2 ranks it."""
    untaylored = run.prune.model_copy(update={"importance": Importance.l2}) \
        if run.prune.importance == Importance.taylor else run.prune
    probe, smallest = replace(run, prune=untaylored), copy.deepcopy(dense)
    for _ in range(run.prune.steps):
        propose, _ = probe.proposals(smallest, example, num_classes, name=arch)
        smallest = propose(0.0).model
    return smallest
