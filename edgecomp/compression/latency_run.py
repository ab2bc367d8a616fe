"""A run's latency target: its latency model (profiled, or read back from the run directory) and each
step's budget met on the device.

Files, under <run>/latency/: `probe.json` (the channel step whole timings measured,
written before any copy is profiled on it), `profile_NN.json` (one per profile, written as it
lands, so an interrupted build resumes where it stopped) and `table.json` (the
fitted model, its key, what it cost, the dense model's measured p50). A
table whose key (device, runtime, precision, batch, threads, input, arch)
differs from the recipe's is not reused.
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn as nn

from ..core.console import console
from ..core.errors import PruneTargetError
from ..core.models import measure_size
from ..core.recipe import Importance, LatencyPlanner, LatencyTarget, PruneSection, Runtime
from ..core.rundir import write_text
from ..deploy.devices import resolve_device
from ..deploy.latency import LatencyTable, Observation, channel_counts, relative_error
from ..deploy.latency.cuda import TorchProfiler
from ..deploy.latency.profiles import Profiler, ProfileSettings
from ..deploy.runners import make_runner
from .latency_prune import (DEEPEST, Attempt, Propose, aligned_proposals, build_table, floor_ms, meet_budget,
                            model_proposals, probe_step)
from .steps import step_targets

FLOOR_SLACK = 0.9  # the floor is a prediction: refuse only budgets clearly below it


def settings_for(target: LatencyTarget, label: str) -> ProfileSettings:
    runtime = {Runtime.onnxruntime: "onnxruntime", Runtime.tensorrt: "trtexec", Runtime.torch: "torch"}[target.runtime]
    return ProfileSettings(device=label, runtime=runtime, precision=target.precision.value, batch=target.batch,
                           threads=target.threads, iterations=target.profile_iterations)


@contextmanager
def open_profiler(target: LatencyTarget, settings: ProfileSettings, input_shape: tuple[int, ...]) -> Iterator[Profiler]:
    """Profiles through the target-side programs (onnxruntime, trtexec), or in this process (torch)."""
    if target.runtime == Runtime.torch:
        yield TorchProfiler(input_shape, settings.batch, settings.iterations, precision=settings.precision)
        return
    with make_runner(resolve_device(target.device), run_id="latency") as runner:
        yield Profiler(runner, settings, input_shape)


@dataclass
class LatencyRun:
    prune: PruneSection
    settings: ProfileSettings
    input_shape: tuple[int, ...]
    table: Optional[LatencyTable]  # the `model` planner's latency model (None for `aligned`)
    dense_ms: float  # the dense model's p50 on the target, measured when the table was built
    unit_ms: float  # the table's prediction for the dense model: the unit of a fraction budget
    record: dict[str, Any] = field(default_factory=dict)
    correction: float = 1.0
    dense_macs: int = 0  # the `aligned` planner's unit: its MACs targets are shares of the dense model's
    block: Optional[int] = None  # the `aligned` planner's round_to: the channel block the probe measured

    @property
    def target(self) -> LatencyTarget:
        return self.prune.target

    @property
    def by_fraction(self) -> bool:
        return self.target.latency is not None

    def profiler(self):
        return open_profiler(self.target, self.settings, self.input_shape)

    def budget(self, step: int) -> float:
        """Step `step`'s budget: a fraction of the dense latency, or ms (the last step's is the recipe's)."""
        target, steps = self.target, self.prune.steps
        final = target.latency if self.by_fraction else target.latency_ms / self.dense_ms
        fraction = step_targets(final, steps, self.prune.schedule.value == "geometric")[step - 1]
        if self.by_fraction:
            return fraction
        return target.latency_ms if step == steps else fraction * self.dense_ms

    @property
    def aligned(self) -> bool:
        return self.target.planner == LatencyPlanner.aligned

    def proposals(self, model: nn.Module, example: torch.Tensor, num_classes: int,
                  grad_fn: Optional[Callable[[nn.Module], None]] = None, name: str = "model") -> tuple[Propose, float]:
        """The planner's pruned copies of `model` for an ask in the budget's unit, and its prediction for `model`."""
        if self.aligned:
            scale = 1.0 if self.by_fraction else self.dense_ms
            return aligned_proposals(model, example, self.prune, self.block or self.prune.round_to, self.dense_macs,
                                     scale, num_classes, grad_fn, name)
        assert self.table is not None
        return model_proposals(model, example, self.prune, self.table, self.unit_ms if self.by_fraction else 1.0,
                               num_classes, grad_fn, name)

    def prune_step(self, model: nn.Module, dense: nn.Module, example: torch.Tensor, step: int, num_classes: int,
                   grad_fn: Optional[Callable[[nn.Module], None]], name: str) -> tuple[nn.Module, dict[str, Any]]:
        budget = self.budget(step)
        propose, current = self.proposals(model, example, num_classes, grad_fn, name)
        with self.profiler() as profiler:
            result = meet_budget(propose, current, budget, self.target, self._measure(profiler, dense),
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
            "latency_correction": round(result.correction, 5), "latency_planner": self.target.planner.value,
            "latency_nudges": result.nudges,
        }

    def _measure(self, profiler: Profiler, dense: nn.Module) -> Callable[[nn.Module], Attempt]:
        def measure(trial: nn.Module) -> Attempt:
            timed = profiler.compare([dense, trial], iterations=self.target.latency_iterations)
            dense_row, row, ratio = timed["models"][0], timed["models"][1], timed["ratios"][1]
            if self.by_fraction:
                return Attempt(0.0, ratio["p50"], ratio["low"], ratio["high"], row["p50"], dense_row["p50"], True)
            return Attempt(0.0, row["p50"], row["p25"], row["p75"], row["p50"], dense_row["p50"], True)

        return measure


def profile_widths(target: LatencyTarget) -> str:
    """How the latency model draws its profiled copies for `target`'s runtime: on the channel step whole timings
    measure (`probe_step`) for onnxruntime, where that was shown (benchmarks/results/latency_regime.md: on this
    host counts off the blocking run in other kernels than any plan); drawn freely elsewhere, where it was never
    run (on TensorRT each whole timing is an engine build)."""
    return "probed" if target.runtime == Runtime.onnxruntime else "drawn"


def whole_timer(profiler: Profiler, iterations: int) -> Callable[[list[nn.Module]], list[float]]:
    """p50 ms of each model, all timed alternately in one loop (the latency model's calibration)."""
    return lambda models: [row["p50"] for row in profiler.compare(models, iterations=iterations)["models"]]


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def prepare_latency(folder: Path, prune: PruneSection, dense: nn.Module, example: torch.Tensor, arch: str,
                    num_classes: int, seed: int) -> LatencyRun:
    """The run's latency model: read back from `folder` when its key matches, else profiled (resuming any
    profiles already in `folder`). Refuses a budget below what the smallest model the pruner may make reaches."""
    target = prune.target
    label = resolve_device(target.device).label
    settings, shape = settings_for(target, label), tuple(example.shape[1:])
    key = settings.key(shape, arch)
    if target.planner == LatencyPlanner.aligned:
        run = _aligned_run(folder, prune, settings, shape, key, dense, example, num_classes, seed)
        _check_floor(run, dense, example, num_classes, arch)
        return run
    stored = _read_json(folder / "table.json")
    if stored is not None and (stored.get("table") or {}).get("key") == key and _same_fit(stored["record"], target):
        table = LatencyTable.from_json(json.dumps(stored["table"]))
        run = LatencyRun(prune, settings, shape, table, stored["dense_ms"], stored["unit_ms"], stored["record"],
                         dense_macs=measure_size(dense, example).macs)
        console.print(f"latency model read back from {folder / 'table.json'}")
    else:
        run = _profile(folder, prune, settings, shape, key, dense, example, num_classes, seed)
    _check_floor(run, dense, example, num_classes, arch)
    return run


def _same_fit(record: dict[str, Any], target: LatencyTarget) -> bool:
    """Whether a stored table was fitted as `target` asks: the cap on the steps and the calibration (whose whole
    timings ran `latency_iterations` rounds) enter the fit; other values refit from the saved profiles."""
    calibrated = record.get("calibration", 0)
    return record.get("max_step") == target.max_step and calibrated == target.calibration \
        and (not calibrated or record.get("latency_iterations") == target.latency_iterations)


def _profile(folder: Path, prune: PruneSection, settings: ProfileSettings, shape: tuple[int, ...],
             key: dict[str, Any], dense: nn.Module, example: torch.Tensor, num_classes: int, seed: int) -> LatencyRun:
    done = []
    for path in sorted(folder.glob("profile_*.json")):
        data = _read_json(path)
        if data is None or data.get("key") != key:
            break
        done.append(Observation.from_dict(data["observation"]))

    def keep(index: int, observation: Observation) -> None:
        write_text(folder / f"profile_{index:02d}.json",
                   json.dumps({"key": key, "observation": observation.as_dict()}))

    target = prune.target
    probed, keep_probe = _probe_file(folder / "probe.json", key, target.max_step)
    console.print(f"[bold]latency model[/]: {target.profiles} profiles on {settings.device} "
                  f"({settings.runtime}, {settings.threads} thread(s), batch {settings.batch})"
                  + (f", {len(done)} read back" if done else ""))
    run = LatencyRun(prune, settings, shape, None, 0.0, 0.0)  # type: ignore[arg-type]
    with run.profiler() as profiler:
        info = profiler.check_runtime()
        table, build = build_table(dense, example, prune, num_classes, key, profiler.observe, target.profiles,
                                   seed, done, keep, whole_timer(profiler, target.latency_iterations),
                                   target.calibration, profile_widths(target), probed=probed, keep_probe=keep_probe)
        timed = profiler.compare([dense], iterations=target.latency_iterations)
    run.table, run.dense_ms = table, timed["models"][0]["p50"]
    run.dense_macs = measure_size(dense, example).macs
    run.unit_ms = table.predict({n: c for n, c in channel_counts(dense).items() if n in table.layers})
    run.record = {"profiles": build.profiles, "profiles_read_back": build.reused,
                  "profile_seconds": round(build.seconds, 2), "runtime_version": profiler.runtime_version,
                  "steps": table.steps, "max_step": target.max_step, "fit_error": relative_error(table),
                  "widths": build.widths, "probe_step": build.probe_step, "probe": build.probe,
                  "calibration": target.calibration, "latency_iterations": target.latency_iterations,
                  "calibration_seconds": round(build.calibration_seconds, 2),
                  "scale": table.scale, "shift_ms": table.shift_ms,
                  "unpriced_layers": table.unpriced, "device_info": info}
    write_text(folder / "table.json", json.dumps({"table": json.loads(table.to_json()), "dense_ms": run.dense_ms,
                                                  "unit_ms": run.unit_ms, "record": run.record}, indent=1))
    timings = f" and {len(table.calibration)} whole timings" if table.calibration else ""
    on_step = f" on multiples of {build.probe_step} (the step whole copies were timed to block at)" \
        if build.probe_step else ""
    console.print(f"latency model: {build.profiles} profiles{on_step}{timings} in {build.seconds:.1f} s; channel steps "
                  + ", ".join(f"{family} {step}" for family, step in table.steps.items())
                  + f"; dense p50 {run.dense_ms:.3f} ms"
                  + (f"; calibrated to them: × {table.scale:.3f} {table.shift_ms:+.3f} ms" if table.calibration
                     else ""))
    if build.reused < len(done):
        console.print(f"latency model: {len(done) - build.reused} stored profile(s) were drawn off the probed step: "
                      "profiled again")
    if table.unpriced:
        console.print(f"[yellow]latency model[/]: the {settings.runtime} profile gave no time of its own to "
                      f"{len(table.unpriced)} layer(s), priced 0 ms: {', '.join(table.unpriced[:5])}"
                      + (" …" if len(table.unpriced) > 5 else "") + " (table.json: unpriced_layers)")
    return run


def _probe_file(path: Path, key: dict[str, Any], max_step: Optional[int]) -> tuple[Optional[tuple], Callable]:
    """The blocking probe read back from `path` (same key and cap on the steps), and how a new one is kept
    there: a resumed build profiles its remaining copies on the step its first copies were drawn on."""
    stored = _read_json(path)
    probed = (stored["step"], stored["rows"]) \
        if stored is not None and stored.get("key") == key and stored.get("max_step") == max_step else None

    def keep_probe(probe: tuple) -> None:
        write_text(path, json.dumps({"key": key, "max_step": max_step, "step": probe[0], "rows": probe[1]}))

    return probed, keep_probe


def _aligned_run(folder: Path, prune: PruneSection, settings: ProfileSettings, shape: tuple[int, ...],
                 key: dict[str, Any], dense: nn.Module, example: torch.Tensor, num_classes: int,
                 seed: int) -> LatencyRun:
    """The `aligned` planner needs no latency model: only the channel block the runtime computes in (the probe,
    kept in probe.json and read back on --resume) and the dense model's p50. Where the probe measures no block
    (a max_step under 8 leaves no ladder to climb), counts are multiples of prune.round_to."""
    target = prune.target
    stored = _read_json(folder / "aligned.json")
    run = LatencyRun(prune, settings, shape, None, 0.0, 1.0, dense_macs=measure_size(dense, example).macs)
    if stored is not None and stored.get("key") == key and stored.get("max_step") == target.max_step:
        run.dense_ms, run.block, run.record = stored["dense_ms"], stored["block"], stored["record"]
        console.print(f"latency target: aligned planner read back from {folder / 'aligned.json'}")
        return run
    probed, keep_probe = _probe_file(folder / "probe.json", key, target.max_step)
    with run.profiler() as profiler:
        info = profiler.check_runtime()
        if probed is None:
            probed = probe_step(dense, example, prune, num_classes, whole_timer(profiler, target.latency_iterations),
                                seed + 1)
            keep_probe(probed)
        run.dense_ms = profiler.compare([dense], iterations=target.latency_iterations)["models"][0]["p50"]
    run.block, rows = probed
    run.record = {"planner": "aligned", "probe_step": run.block, "probe": rows, "round_to": run.block or prune.round_to,
                  "runtime_version": profiler.runtime_version, "device_info": info}
    write_text(folder / "aligned.json", json.dumps({"key": key, "max_step": target.max_step, "dense_ms": run.dense_ms,
                                                    "block": run.block, "record": run.record}, indent=1))
    console.print(f"latency target: aligned planner, channel counts on multiples of {run.block or prune.round_to} "
                  + ("(the block whole copies were timed to compute in)" if run.block else
                     "(prune.round_to: the probe found no block under max_step)")
                  + f"; dense p50 {run.dense_ms:.3f} ms")
    return run


def _untaylored(prune: PruneSection) -> PruneSection:
    """Taylor importance needs gradients; the floor's channel choice does not matter, only its latency."""
    return prune.model_copy(update={"importance": Importance.l2}) if prune.importance == Importance.taylor else prune


def _check_floor(run: LatencyRun, dense: nn.Module, example: torch.Tensor, num_classes: int, arch: str) -> None:
    """Refuse a budget the smallest model the pruner may make cannot meet. The table's floor is a prediction
    (it over-predicts narrow models): when it says no, the floor model is timed beside the dense one, and
    only that measurement refuses."""
    if not run.by_fraction and run.target.latency_ms >= run.dense_ms:
        raise PruneTargetError(f"prune.target.latency_ms: {run.target.latency_ms:g} ms is at or above the dense "
                               f"{arch}'s {run.dense_ms:.3f} ms on {run.settings.device}: nothing to prune for")
    final = run.budget(run.prune.steps)
    wanted = final if run.by_fraction else final / run.dense_ms
    if not run.aligned:
        assert run.table is not None
        floor = floor_ms(dense, example, run.prune, run.table, num_classes, arch) / run.unit_ms
        if wanted >= floor * FLOOR_SLACK:
            return
    smallest = _smallest(run, dense, example, num_classes, arch)
    if run.aligned and wanted >= measure_size(smallest, example).macs / run.dense_macs * FLOOR_SLACK:
        return  # the MACs share is the aligned planner's prediction, as the table's is the model planner's
    with run.profiler() as profiler:
        floor = profiler.compare([dense, smallest], iterations=run.target.latency_iterations)["ratios"][1]["p50"]
    run.record["measured_floor"] = floor
    if wanted < floor:
        field_name = "latency" if run.by_fraction else "latency_ms"
        given = f"{final:g}" if run.by_fraction else f"{final:g} ms"
        floor_text = f"{floor:.3f} of the dense latency" if run.by_fraction else f"{floor * run.dense_ms:.3f} ms"
        raise PruneTargetError(
            f"prune.target.{field_name}: {given} is below {floor_text}, the measured latency of the smallest "
            f"{arch} the pruner may make (max_layer_ratio {run.prune.max_layer_ratio:g}; {_steps_words(run)}) on "
            f"{run.settings.device} ({run.settings.runtime}); ask for more, raise prune.max_layer_ratio"
            + (f", or {'lower' if run.target.max_step else 'set'} the cap on the steps (prune.target.max_step)"
               if run.table is None or max(run.table.steps.values()) > 1 else "")  # with steps of 1 no cap can lower the floor
            + ". The profiles are kept in this run's latency/ folder; start again with --out NEW_DIR"
        )


def _smallest(run: LatencyRun, dense: nn.Module, example: torch.Tensor, num_classes: int, arch: str) -> nn.Module:
    """The smallest model the planner may make: max_layer_ratio holds per step, so the floor compounds."""
    smallest = dense
    untaylored = LatencyRun(**{**run.__dict__, "prune": _untaylored(run.prune)})
    for _ in range(run.prune.steps):
        propose, _ = untaylored.proposals(smallest, example, num_classes, name=arch)
        smallest = propose(DEEPEST if not run.aligned else 0.0).model
    return smallest


def _steps_words(run: LatencyRun) -> str:
    if run.aligned:
        return f"channel counts on multiples of {run.block or run.prune.round_to}"
    words = "channel steps " + ", ".join(f"{family} {step}" for family, step in run.table.steps.items())
    return words + (f" under max_step {run.target.max_step}" if run.target.max_step else "")

