import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli, tiny_recipe, tiny_recipe_dict, unsplit_imagefolder

from edgecomp import compress
from edgecomp.core.errors import RunDirError
from edgecomp.core.models import load_model_file
from edgecomp.core.recipe import load_recipe
from edgecomp.core.rundir import RunDir

# The shared run follows size on purpose (the default schedule is constant 0), so the rows show a falling magnitude
SIZE_FOLLOWING = {"augment": {"policy": "randaugment", "schedule": {"kind": "linear", "dense": 9}}}


def pipeline_recipe(**sections):
    return tiny_recipe(**{**SIZE_FOLLOWING, **sections})


ROW_KEYS = {"step", "macs", "params", "macs_ratio", "params_ratio", "magnitude", "accuracy", "test_accuracy",
            "latency_ms"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, fashion_root):
    out = tmp_path_factory.mktemp("run") / "tiny"
    return compress(pipeline_recipe(), out=out)


@pytest.mark.e2e
def test_run_directory_contract(tiny_run):
    root = tiny_run.run_dir
    for name in ("recipe.yaml", "metrics.jsonl", "model.pt", "report.md", "pareto.png"):
        assert (root / name).is_file(), name
    assert sorted(p.name for p in (root / "checkpoints").glob("step_*.pt")) == ["step_000.pt", "step_001.pt",
                                                                                "step_002.pt"]
    assert set(json.loads((root / "checkpoints" / "manifest.json").read_text())) == {"0", "1", "2"}
    rows = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all(ROW_KEYS <= set(r) for r in rows)
    assert rows[0]["macs_ratio"] == 1.0 and rows[-1]["macs_ratio"] <= 0.5
    assert rows[1]["macs_ratio"] <= 0.75
    assert rows[0]["magnitude"] > rows[-1]["magnitude"]  # linear schedule follows size
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    assert rows[0]["test_accuracy"] > 0.3  # two epochs on 512 real images beat chance (0.1)
    assert load_recipe(root / "recipe.yaml") == pipeline_recipe()


@pytest.mark.e2e
def test_final_model_rebuilds_from_plain_data(tiny_run):
    raw = torch.load(tiny_run.model_path, weights_only=True)
    model = load_model_file(tiny_run.model_path).eval()
    params = sum(p.numel() for p in model.parameters())
    assert params == tiny_run.final["params"]
    last = torch.load(tiny_run.run_dir / "checkpoints" / "step_002.pt", weights_only=True)
    for key, tensor in raw["state_dict"].items():
        assert torch.equal(tensor, last["model"]["state_dict"][key])


@pytest.mark.e2e
def test_report_lists_dense_and_every_step(tiny_run):
    text = tiny_run.report_path.read_text()
    assert "| 0 (dense) |" in text and "| 1 |" in text and "| 2 |" in text


@pytest.mark.e2e
def test_existing_run_is_not_overwritten(tiny_run):
    before = (tiny_run.run_dir / "metrics.jsonl").read_text()
    with pytest.raises(RunDirError, match="already holds a run"):
        compress(pipeline_recipe(), out=tiny_run.run_dir)
    changed = pipeline_recipe(seed=1)
    with pytest.raises(RunDirError, match="recipe differs .* in seed"):
        compress(changed, out=tiny_run.run_dir, resume=True)
    assert (tiny_run.run_dir / "metrics.jsonl").read_text() == before


@pytest.mark.e2e
def test_resume_of_a_finished_run_adds_no_rows(tiny_run):
    again = compress(pipeline_recipe(), out=tiny_run.run_dir, resume=True)
    assert [r["step"] for r in again.rows] == [0, 1, 2]
    assert again.rows == tiny_run.rows


@pytest.mark.e2e
def test_prune_only_and_dense_weights(tmp_path, tiny_run, fashion_root):
    recipe = tiny_recipe(dense={"epochs": 0, "weights": str(tiny_run.run_dir / "checkpoints" / "step_000.pt")},
                         finetune={"epochs_per_step": 0})
    result = compress(recipe, out=tmp_path / "p")
    assert result.rows[0]["accuracy"] == tiny_run.rows[0]["accuracy"]  # same dense weights
    assert result.rows[-1]["epochs"] == 0 and result.rows[-1]["final_loss"] is None


@pytest.mark.e2e
def test_resume_after_kill_matches_uninterrupted(tmp_path, write_recipe, fashion_root):
    recipe = tiny_recipe_dict(prune={"steps": 3, "target": {"macs": 0.4}, "round_to": 4},
                              device={"latency_iterations": 0})
    path = write_recipe(recipe)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_cli("compress", "--recipe", str(path), "--out", str(whole)).returncode == 0

    proc = subprocess.Popen([sys.executable, "-m", "edgecomp", "compress", "--recipe", str(path), "--out",
                             str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while 1 not in RunDir(killed).finished_steps():  # finished = listed in the manifest, not just written
        assert proc.poll() is None, "run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "model.pt").exists()
    result = run_cli("compress", "--recipe", str(path), "--out", str(killed), "--resume")
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr
    rows = lambda root: [json.loads(l) for l in (root / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    drop = {"train_seconds", "train_throughput", "latency_ms"}
    clean = lambda rs: [{k: v for k, v in r.items() if k not in drop} for r in rs]  # noqa: E731
    assert [r["step"] for r in rows(killed)] == [0, 1, 2, 3]
    assert clean(rows(killed)) == clean(rows(whole))


@pytest.mark.e2e
def test_divergence_stops_the_step_and_keeps_the_last_good_checkpoint(tmp_path, write_recipe, fashion_root):
    path = write_recipe(tiny_recipe_dict(finetune={"epochs_per_step": 1, "optim": {"lr": 1e12}}))
    out = tmp_path / "diverged"
    result = run_cli("compress", "--recipe", str(path), "--out", str(out))
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "step 1" in lines[0] and "Lower the learning rate" in lines[0]
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*.pt")) == ["step_000.pt"]
    assert [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [0]


def test_accuracy_collapse_is_refused():
    from types import SimpleNamespace

    from edgecomp.compression.pipeline import _check_collapse
    from edgecomp.core.errors import DivergenceError

    ctx = SimpleNamespace(recipe=tiny_recipe(), rows=[{"accuracy": 0.8}])
    _check_collapse(ctx, 1, 0.5)  # worse, but learning
    with pytest.raises(DivergenceError, match="collapsed to 0.100 .* step 0 is the last good checkpoint"):
        _check_collapse(ctx, 1, 0.1)
    _check_collapse(SimpleNamespace(recipe=tiny_recipe(), rows=[{"accuracy": 0.2}]), 1, 0.1)  # dense near chance


def test_rows_record_the_latency_threads_the_verdict_and_the_splits(tiny_run, fashion_root):
    assert all(row["latency_threads"] == 1 and "latency_unreliable" in row for row in tiny_run.rows)
    assert tiny_run.rows[1]["latency_speedup_p25"] <= tiny_run.rows[1]["latency_speedup_p75"]
    splits = tiny_run.rows[0]["splits"]
    assert splits["test"] == f"{fashion_root}: t10k-* files: 256 images"
    assert splits["val"] == f"0.1 of {fashion_root} (split_seed 0): 256 images"
    report = (tiny_run.run_dir / "report.md").read_text()
    assert f"- test: {splits['test']}" in report and f"- validation: {splits['val']}" in report


def test_no_held_out_split_gives_no_test_figure(tmp_path, write_recipe):
    recipe = tiny_recipe_dict(**unsplit_imagefolder(tmp_path / "images"))
    out = tmp_path / "run"
    result = run_cli("compress", "--recipe", str(write_recipe(recipe)), "--out", str(out))
    assert result.returncode == 0, result.stderr
    done = next(line for line in result.stderr.splitlines() if line.startswith("done:"))
    assert "no held-out test split, so no test accuracy" in done and "0.0000" not in done
    assert "step 0: validation (6 images) ..." in result.stderr  # a stage line, readable in a log
    rows = RunDir(out).rows()
    assert [row["test_accuracy"] for row in rows] == [None, None]
    report = (out / "report.md").read_text()
    assert "No held-out test split, so no test accuracy" in report and "- test: none: no held-out" in report
    assert "test accuracy 0" not in report.lower()


def test_resume_words_name_what_was_kept():
    from edgecomp.compression.pipeline import _resume_words

    run = RunDir(Path("runs/x"))
    assert _resume_words(run, [], 3).endswith("no finished step kept, starting at the dense stage")
    assert _resume_words(run, [0], 3).endswith("runs/x: step 0 (the dense model) kept, continuing at step 1/3")
    assert _resume_words(run, [0, 1, 2], 3).endswith("steps 0–2 kept (step 0 = dense), continuing at step 3/3")
    assert _resume_words(run, [0, 1, 2, 3], 3).endswith("nothing left to run")


def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path, write_recipe, fashion_root):
    # The signal lands while step 1 is pruned: once it was swallowed there (exit 0) by Torch-Pruning's tracer,
    # which called the model inside a bare `except:` (tests/test_prune.py has that case on its own).
    path = write_recipe(tiny_recipe_dict(prune={"steps": 3, "target": {"macs": 0.4}, "round_to": 4}))
    out = tmp_path / "interrupted"
    args = ["compress", "--recipe", str(path), "--out", str(out)]
    # A shell that starts the tests in the background (`make test &`, nohup) ignores SIGINT, and a Python started
    # with SIGINT ignored never turns it into KeyboardInterrupt: the run went on to the end and exited 0. A
    # handled signal is reset to its default at exec, so the child starts as it would under a terminal.
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "edgecomp", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, ignored)
    deadline = time.monotonic() + 300
    while 0 not in RunDir(out).finished_steps():  # interrupted once the dense model is kept
        assert proc.poll() is None, "run ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert proc.poll() is None, "run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    try:
        stderr = proc.communicate(timeout=300)[1]
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    kept = RunDir(out).finished_steps()
    assert kept[-1] < 3
    command = f"edgecomp compress --recipe {path} --out {out} --resume"
    what = f"steps 0–{kept[-1]} are kept in {out} (step 0 = dense)" if kept[-1] else \
        f"step 0 (the dense model) is kept in {out}"
    assert stderr.splitlines()[-1] == f"interrupted: {what}; continue with: {command}"
    resumed = run_cli(*command.split()[1:])
    assert resumed.returncode == 0, resumed.stderr
    kept_words = f"steps 0–{kept[-1]} kept (step 0 = dense)" if kept[-1] else "step 0 (the dense model) kept"
    assert f"resuming {out}: {kept_words}, continuing at step {kept[-1] + 1}/3" in resumed.stderr
