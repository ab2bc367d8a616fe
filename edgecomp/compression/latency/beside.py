"""Another run's steps timed on a latency run's target, so the report draws both runs' accuracy against
measured latency (`edgecomp report --beside OTHER_RUN`), e.g. a MACs-targeted run beside a latency-targeted one.

A MACs-targeted run never timed its steps, and two runs timed at different hours of a shared host cannot be
set side by side in milliseconds. So the other run's step checkpoints are timed here, beside its own dense
model in one alternating loop, on the latency run's target (device, runtime, threads, batch), as fractions
of the dense latency: the unit of the latency run's own rows. Written to <latency run>/latency/beside.json
and read back (no new timing) while the other run's checkpoints and the target stay the same.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import torch

from ...core.console import console
from ...core.errors import RunDirError
from ...core.models import model_from_payload
from ...core.recipe import LatencyTarget, Recipe, load_recipe
from ...core.rundir import RunDir, write_text
from ...deploy.devices import resolve_device
from .run import open_timer, settings_for

FORMAT = "edgecomp-beside/1"
SAME_NETWORK = ("arch", "num_classes", "in_channels", "input_size")


def beside_path(run_dir: Path) -> Path:
    return Path(run_dir) / "latency" / "beside.json"


def _recipe(run: RunDir, flag: str) -> Recipe:
    if not run.recipe.is_file():
        raise RunDirError(f"{flag}: {run.root} is not a run directory (no recipe.yaml)")
    return load_recipe(run.recipe)


def _check(latency: Recipe, other: Recipe, latency_dir: Path, other_dir: Path) -> LatencyTarget:
    target = latency.prune.target
    if not isinstance(target, LatencyTarget) or target.latency is None:
        raise RunDirError(f"--beside: {latency_dir} has no latency target given as a fraction of the dense "
                          f"latency (prune.target.latency), the unit both runs are drawn in")
    for key in SAME_NETWORK:
        mine, theirs = getattr(latency.model, key), getattr(other.model, key)
        if mine != theirs:
            raise RunDirError(f"--beside: {other_dir} has model.{key} {theirs}, {latency_dir} has {mine}: "
                              f"only the same network can be timed side by side")
    return target


def _cached(path: Path, wanted: dict[str, Any]) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = data.get("format") == FORMAT and all(data.get(k) == v for k, v in wanted.items())
    return data if same else None


def _timeable_rows(run: RunDir, folder: Path, sums: dict[str, str]) -> dict[int, dict[str, Any]]:
    """The metrics rows of the steps whose checkpoints are intact (`sums`), by step; the dense one and one pruned
    at least."""
    finished = sorted(int(step) for step in sums)
    if not finished:
        raise RunDirError(f"--beside: {folder} has no checkpoint to time (checkpoints/manifest.json lists no intact "
                          f"step)")
    if finished == [0]:
        raise RunDirError(f"--beside: {folder} has only its dense step; no pruned step has finished yet")
    rows = {row["step"]: row for row in run.rows() if row.get("step") in finished}
    if sorted(rows) != finished:
        raise RunDirError(f"--beside: {folder}/metrics.jsonl lacks the rows of steps "
                          f"{sorted(set(finished) - set(rows))} whose checkpoints are there")
    return rows


def measure_beside(latency_dir: Path, other_dir: Path) -> Path:
    """Time `other_dir`'s finished steps on `latency_dir`'s target (or read the timing back) and write
    latency/beside.json in `latency_dir`; returns its path."""
    latency_run, other_run = RunDir(latency_dir), RunDir(other_dir)
    latency, other = _recipe(latency_run, "--run"), _recipe(other_run, "--beside")
    target = _check(latency, other, latency_dir, other_dir)
    sums = other_run.checkpoint_sums()  # hashes every checkpoint once: the steps to time and the cache's key
    rows = _timeable_rows(other_run, other_dir, sums)
    settings = settings_for(target, resolve_device(target.device).label)
    shape = (other.model.in_channels, other.model.input_size, other.model.input_size)
    wanted = {"run": str(Path(other_dir).resolve()), "checkpoints": sums,
              "key": settings.key(shape, other.model.arch), "rounds": target.latency_iterations}
    path = beside_path(latency_dir)
    if _cached(path, wanted) is not None:
        console.print(f"--beside: timing read back from {path}")
        return path
    steps = sorted(rows)
    models = [model_from_payload(other_run.load_step(step)["model"], other.model).eval() for step in steps]
    console.print(f"--beside: timing {len(steps) - 1} step(s) of {other_dir} beside its dense model on "
                  f"{settings.device} ({settings.runtime}, {settings.threads} thread(s), "
                  f"{target.latency_iterations} rounds)")
    with torch.no_grad(), open_timer(target, settings, shape) as timer:
        timed = timer.compare(models, iterations=target.latency_iterations)
    measured = []
    for step, ratio in zip(steps[1:], timed["ratios"][1:]):
        row = rows[step]
        measured.append({"step": step, "accuracy": row.get("accuracy"), "macs_ratio": row.get("macs_ratio"),
                         "measured_latency": ratio["p50"], "measured_latency_low": ratio["low"],
                         "measured_latency_high": ratio["high"]})
    write_text(path, json.dumps({
        "format": FORMAT, **wanted, "name": other.name, "target_kind": other.prune.target.kind,
        "dense_p50_ms": timed["models"][0]["p50"], "dense_accuracy": rows[0].get("accuracy"), "steps": measured,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=1))
    return path
