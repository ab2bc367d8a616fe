"""Crash safety: SIGKILL a real `edgecomp compress` again and again, resume each time, and check that no
finished step is ever lost, no row is duplicated, and the end result equals an uninterrupted run's."""

import json
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import run_cli, tiny_recipe_dict

from edgecomp.core.rundir import RunDir

VOLATILE = {"train_seconds", "train_throughput", "latency_ms"}


def stable_rows(root):
    rows = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in VOLATILE} for row in rows]


def start(path, out, resume):
    args = [sys.executable, "-m", "edgecomp", "compress", "--recipe", str(path), "--out", str(out)]
    return subprocess.Popen(args + (["--resume"] if resume else []), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def check_consistent(out, finished_before):
    run = RunDir(out)
    finished = run.finished_steps()
    assert finished[: len(finished_before)] == finished_before, "a finished step was lost"
    if run.metrics.is_file():
        steps = [row["step"] for row in run.rows()]
        assert steps == sorted(set(steps)), f"duplicated or unordered rows {steps}"
    return finished


@pytest.mark.slow
def test_killed_again_and_again_then_resumed(tmp_path, write_recipe, fashion_root):
    recipe = tiny_recipe_dict(prune={"steps": 4, "target": {"macs": 0.4}, "round_to": 4},
                              data={"train_subset": 2048}, device={"latency_iterations": 0})
    path = write_recipe(recipe)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    begin = time.perf_counter()
    assert run_cli("compress", "--recipe", str(path), "--out", str(whole)).returncode == 0
    duration = time.perf_counter() - begin  # kills are timed relative to it: fast and slow machines alike

    rng, finished, kills = random.Random(0), [], 0
    while kills < 12:
        proc = start(path, killed, resume=kills > 0)
        time.sleep(rng.uniform(0.08, 0.3) * duration)  # startup, dense training, steps, checkpoint writes
        if proc.poll() is not None:  # it finished before the kill: that run is complete
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        finished = check_consistent(killed, finished)
    assert kills >= 10, f"only {kills} kills landed before the run finished; lengthen the recipe"

    # a partial file left by a kill mid-write must never be taken for a checkpoint
    (killed / "checkpoints").mkdir(parents=True, exist_ok=True)
    (killed / "checkpoints" / ".step_003.pt.abc.tmp").write_bytes(b"partial")
    result = run_cli("compress", "--recipe", str(path), "--out", str(killed), "--resume")
    assert result.returncode == 0, result.stderr
    assert stable_rows(killed) == stable_rows(whole)
    final = torch.load(killed / "model.pt", weights_only=True)["state_dict"]
    reference = torch.load(whole / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(final[k], reference[k]) for k in reference)


@pytest.mark.e2e
def test_damaged_checkpoint_is_redone(tmp_path, write_recipe, fashion_root):
    recipe = tiny_recipe_dict(prune={"steps": 2, "target": {"macs": 0.5}, "round_to": 4},
                              device={"latency_iterations": 0})
    path = write_recipe(recipe)
    out = tmp_path / "run"
    assert run_cli("compress", "--recipe", str(path), "--out", str(out)).returncode == 0
    before = stable_rows(out)
    step1 = out / "checkpoints" / "step_001.pt"
    step1.write_bytes(step1.read_bytes()[:-100])  # torn on disk
    assert RunDir(out).finished_steps() == [0]
    result = run_cli("compress", "--recipe", str(path), "--out", str(out), "--resume")
    assert result.returncode == 0, result.stderr
    assert stable_rows(out) == before
    assert RunDir(out).finished_steps() == [0, 1, 2]
