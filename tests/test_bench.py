"""`edgecomp bench` on the host runner: results, accuracy on the device, dense speed-up, partial files,
one entry per (device, precision), and files outside a run's flow kept out of its results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bench_helpers import assert_one_line_error, broken_onnx, cli, export_onnx
from conftest import tiny_recipe

import edgecomp
from edgecomp.core.models import build_model, model_payload
from edgecomp.core.recipe import dump_recipe
from edgecomp.core.rundir import RunDir, save_tensors, write_text
from edgecomp.deploy.bench import (
    BENCH_FILE,
    BENCH_FORMAT,
    PARTIAL_FILE,
    BenchOptions,
    BenchResult,
    _new_entry,
    measure,
    measure_latency_ms,
    plan_job,
)

FAST = ("--iterations", "10", "--warmup", "2")
LATENCY_KEYS = {"p50", "p90", "p99", "mean", "min", "max", "std"}


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory, fashion_root):
    """A run directory as compress, `export --precision int8` and `export` leave it: recipe, metrics with a dense step,
    the dense checkpoint, model.pt, and what export wrote (model.onnx, model.int8.onnx, calib.npy, eval.npz,
    dense.onnx, export.json)."""
    root = tmp_path_factory.mktemp("runs") / "tiny"
    recipe = tiny_recipe(export={"calib_images": 64})
    run = RunDir(root)
    root.mkdir(parents=True)
    write_text(run.recipe, dump_recipe(recipe))
    dense = build_model(recipe.model).eval()
    run.save_step(0, {"model": model_payload(dense, recipe.model), "row": {"step": 0}})
    run.write_rows([{"step": 0, "stage": "dense"}, {"step": 1, "stage": "prune"}])
    save_tensors(root / "model.pt", model_payload(half_the_macs(dense, recipe), recipe.model))
    edgecomp.export(run=root, precision="int8")
    edgecomp.export(run=root)  # the recipe's fp16 engine request; the INT8 record stays (same model.onnx)
    return root


def half_the_macs(dense, recipe):
    """A pruned copy of the dense model: another ONNX, another engine key."""
    import copy

    import torch

    from edgecomp.compression.prune import prune_to
    from edgecomp.core.models import Size, measure_size

    model, example = copy.deepcopy(dense), torch.zeros(1, 1, 28, 28)
    prune_to(model, example, recipe.prune, Size(measure_size(model, example).macs // 2, 0), 10)
    return model.eval()


def entries(path: Path) -> dict:
    document = json.loads(path.read_text())
    assert document["format"] == BENCH_FORMAT
    return document["entries"]


@pytest.mark.e2e
def test_bench_a_run_on_the_host(fake_run):
    result = cli("bench", "--run", str(fake_run), "--device", "host", *FAST)
    assert result.returncode == 0, result.stderr
    assert "accuracy on the device" in result.stdout and "speed-up over the dense model" in result.stdout
    document = json.loads((fake_run / BENCH_FILE).read_text())
    assert document["complete"] is True
    entry = document["entries"]["host/fp32"]
    assert entry["model"] == "model.onnx" and entry["precision"] == "fp32"
    assert set(entry["latency_ms"]) == LATENCY_KEYS and entry["latency_ms"]["p50"] > 0
    assert entry["backend"] == "onnxruntime" and entry["provider"] == "CPUExecutionProvider"
    assert entry["accuracy_samples"] == 256 and 0 <= entry["accuracy"] <= 1
    assert entry["dense"]["latency_ms"]["p50"] > 0 and entry["speedup"] > 0
    assert entry["steps_done"] == ["info", "bench", "eval", "bench-dense"]
    assert entry["info"]["onnxruntime"]["version"] and entry["info"]["memory"]["total_mb"] > 0
    logs = fake_run / "bench-logs" / "host"
    assert {p.name for p in logs.iterdir()} >= {"info.json", "info.log", "bench.json", "eval.json",
                                                "bench-dense.json"}
    assert not (fake_run / PARTIAL_FILE).exists()


@pytest.mark.e2e
def test_device_accuracy_matches_onnxruntime_here(fake_run):
    """eval.py's top-1 equals onnxruntime's on the images export recorded (eval.npz: validation split,
    preprocessed as in evaluation)."""
    import onnxruntime as ort

    entry = entries(fake_run / BENCH_FILE)["host/fp32"]
    record = json.loads((fake_run / "export.json").read_text())["eval"]
    data = np.load(fake_run / record["file"])
    session = ort.InferenceSession(str(fake_run / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": data["images"]})[0]
    assert data["images"].dtype == np.float32 and data["images"].shape == (256, 1, 28, 28)
    assert record == {"file": "eval.npz", "split": "val", "images": 256, "preprocessing": "as in evaluation"}
    assert entry["accuracy"] == pytest.approx(float((logits.argmax(1) == data["labels"]).mean()))


def test_bench_measures_what_export_wrote_and_never_exports(fake_run, monkeypatch):
    """Bench loads no data and exports nothing: it stages export's eval.npz and dense.onnx."""
    from edgecomp.core import data as core_data
    from edgecomp.deploy import export as exporter

    def forbidden(*args, **kwargs):
        raise AssertionError("bench must not load data or export")

    for module, name in ((core_data, "load_data"), (exporter, "export_onnx"), (exporter, "save_plain_onnx")):
        monkeypatch.setattr(module, name, forbidden)

    class Staging:
        label, staged = "host", {}

        def stage(self, path, name):
            self.staged[name] = Path(path)
            return name

        def run(self, program, args, *, tag=None, log_dir=None):
            return {"info": {"onnxruntime": {"providers": ["CPUExecutionProvider"]}},
                    "bench": {"latency_ms": {"p50": 1.0}}, "eval": {"accuracy": 0.5, "samples": 256}}[program]

    from edgecomp.deploy.devices import resolve_device

    options = BenchOptions(iterations=2)
    job = plan_job(fake_run, None, options, evaluate=True)
    target, runner = resolve_device("host"), Staging()
    measure(runner, target, job, options, _new_entry(target, job, options), log_dir=None)
    assert runner.staged == {"model.onnx": fake_run / "model.onnx", "dense.onnx": fake_run / "dense.onnx",
                             "eval.npz": fake_run / "eval.npz"}


def test_int8_on_the_host_is_the_qdq_model_with_its_accuracy(fake_run):
    """--precision int8 on onnxruntime times and scores model.int8.onnx, labelled int8, beside the fp32 entry."""
    before = entries(fake_run / BENCH_FILE)
    assert "host/fp32" in before
    result = cli("bench", "--run", str(fake_run), "--device", "host", "--precision", "int8", *FAST)
    assert result.returncode == 0, result.stderr
    after = entries(fake_run / BENCH_FILE)
    assert after["host/fp32"] == before["host/fp32"]  # the fp32 entry is kept, not replaced
    int8 = after["host/int8"]
    assert int8["model"] == "model.int8.onnx" and int8["precision"] == "int8" and int8["backend"] == "onnxruntime"
    assert 0 <= int8["accuracy"] <= 1 and int8["accuracy_samples"] == 256 and int8["accuracy_split"] == "val"
    assert int8["int8_calibration"] == {"split": "train", "images": 64, "file": "calib.npy"}
    assert int8["speedup"] is None and any("no Q/DQ (int8) model" in w for w in int8["warnings"])
    assert "(onnxruntime int8, batch 1)" in result.stdout


def test_a_file_benched_with_model_never_changes_the_run(fake_run):
    """`bench --model runs/X/model.int8.onnx` writes model.int8.bench.json, labelled int8; the run's bench.json
    (and its logs) stay as they were."""
    run_results = (fake_run / BENCH_FILE).read_bytes()
    run_logs = {p: p.read_bytes() for p in (fake_run / "bench-logs" / "host").iterdir()}
    result = cli("bench", "--model", str(fake_run / "model.int8.onnx"), "--device", "host", *FAST)
    assert result.returncode == 0, result.stderr
    assert (fake_run / BENCH_FILE).read_bytes() == run_results
    assert {p: p.read_bytes() for p in (fake_run / "bench-logs" / "host").iterdir()} == run_logs
    entry = entries(fake_run / "model.int8.bench.json")["host/int8"]
    assert entry["model"] == "model.int8.onnx" and entry["precision"] == "int8" and entry["accuracy"] is None
    assert entry["int8_calibration"] == {"split": "unknown (a Q/DQ model given with --model)"}


@pytest.mark.parametrize("args, fragment", [
    (["--precision", "fp16"], "--precision fp16: onnxruntime on host runs the ONNX models as exported"),
    (["--model", "model.int8.onnx", "--precision", "fp32"], "--precision fp32: model.int8.onnx is a Q/DQ"),
    (["--model", "model.onnx", "--precision", "int8"], "--precision int8: no Q/DQ model for model.onnx"),
])
def test_a_precision_onnxruntime_cannot_serve_is_refused(fake_run, args, fragment):
    """Never timed as another precision under the asked one's name."""
    before = (fake_run / BENCH_FILE).read_bytes()
    model = ["--model", str(fake_run / args[1])] if args[0] == "--model" else ["--run", str(fake_run)]
    result = cli("bench", *model, *args[-2:], "--device", "host", *FAST)
    assert_one_line_error(result, 2, fragment)
    assert (fake_run / BENCH_FILE).read_bytes() == before


def test_old_bench_json_entries_are_kept_and_read(fake_run, tmp_path):
    """A bench.json of format /1 (one entry per device) still reads in the report, and its entries are kept,
    keyed by device and precision, when a new measurement is added."""
    from edgecomp.deploy.bench import Job, _write_complete
    from edgecomp.report.sources import read_benches

    old = {"device": "jetson-orin-nano-8gb", "precision": "fp16", "model": "model.onnx", "latency_ms": {"p50": 1.0}}
    (tmp_path / BENCH_FILE).write_text(json.dumps({"format": "edgecomp-bench/1", "complete": True,
                                                   "model": "model.onnx", "devices": {old["device"]: old}}))
    assert [e["device"] for e in read_benches(tmp_path)] == ["jetson-orin-nano-8gb"]
    new = {"device": "host", "precision": "fp32", "model": "model.onnx", "latency_ms": {"p50": 2.0}}
    _write_complete(Job(model=tmp_path / "model.onnx", out_dir=tmp_path), new)
    assert entries(tmp_path / BENCH_FILE) == {"jetson-orin-nano-8gb/fp16": old, "host/fp32": new}
    assert sorted(e["device"] for e in read_benches(tmp_path)) == ["host", "jetson-orin-nano-8gb"]


def test_an_export_json_without_records_still_times_and_says_why_not_more(fake_run, tmp_path):
    """An export.json written before it recorded eval.npz and dense.onnx: timed, with two warnings."""
    import shutil

    run = tmp_path / "old"
    shutil.copytree(fake_run, run, ignore=shutil.ignore_patterns("bench*", "engines"))
    info = json.loads((run / "export.json").read_text())
    for key in ("eval", "dense", "engine_request"):
        info.pop(key)
    (run / "export.json").write_text(json.dumps(info))
    result = cli("bench", "--run", str(run), "--device", "host", *FAST)
    assert result.returncode == 0, result.stderr
    entry = entries(run / BENCH_FILE)["host/fp32"]
    assert entry["latency_ms"]["p50"] > 0 and entry["accuracy"] is None and entry["speedup"] is None
    assert any("accuracy not measured: export.json records no evaluation images" in w for w in entry["warnings"])
    assert any("speed-up not measured: export.json records no dense model" in w for w in entry["warnings"])


@pytest.mark.e2e
def test_run_without_model_onnx_says_export_first(tmp_path, fake_run):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text((fake_run / "recipe.yaml").read_text())
    result = cli("bench", "--run", str(run), "--device", "host")
    assert_one_line_error(result, 2, f"run `edgecomp export --run {run}` first")


@pytest.mark.parametrize("args, fragment", [
    (["--model", "/nonexistent/m.onnx"], "--model: /nonexistent/m.onnx does not exist"),
    (["--model", "MODEL", "--batch", "0"], "--batch: must be >= 1"),
    (["--model", "MODEL", "--run", "/x"], "--run and --model: give one of them"),
    (["--model", "MODEL", "--backend", "tvm"], "--backend: must be auto, onnxruntime, tensorrt or trtexec"),
    (["--model", "NOTONNX"], "is not a readable ONNX model"),
    (["--model", "ENGINE"], "is a TensorRT engine but host has no TensorRT"),
])
def test_bad_bench_input_exits_2(tmp_path, args, fragment):
    model = export_onnx(tmp_path / "m.onnx")
    (tmp_path / "x.onnx").write_text("not a protobuf at all")
    (tmp_path / "m.engine").write_bytes(b"plan")
    paths = {"MODEL": str(model), "NOTONNX": str(tmp_path / "x.onnx"), "ENGINE": str(tmp_path / "m.engine")}
    result = cli("bench", *[paths.get(a, a) for a in args], "--device", "host", *FAST)
    assert_one_line_error(result, 2, fragment)
    assert not list(tmp_path.glob("*.json"))  # neither results nor a partial file


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fixed_batch_model_refuses_another_batch(tmp_path):
    import torch

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"])  # no dynamic_axes: batch fixed at 1
    result = cli("bench", "--model", str(path), "--device", "host", "--batch", "4")
    assert_one_line_error(result, 2, "--batch: fixed.onnx has a fixed batch of 1; use --batch 1")


def test_failing_program_keeps_a_partial_file_only(tmp_path):
    model = broken_onnx(tmp_path / "broken.onnx")
    result = cli("bench", "--model", str(model), "--device", "host", *FAST)
    line = assert_one_line_error(result, 1, "bench failed: bench.py on host failed:")
    assert "NoSuchOp" in line or "edgecomp.test" in line
    assert not (tmp_path / "broken.bench.json").exists()  # nothing presented as complete
    partial = json.loads((tmp_path / "broken.bench.partial.json").read_text())
    assert partial["complete"] is False and "bench.py on host failed" in partial["error"]
    entry = partial["entries"]["host/fp32"]
    assert entry["steps_done"] == ["info"] and entry["info"]["cpu_count"] and entry["latency_ms"] is None


@pytest.mark.e2e
def test_python_api_and_measure_latency(tmp_path):
    model = export_onnx(tmp_path / "m.onnx")
    result = edgecomp.bench(model=model, device="host", iterations=5, warmup=1, batch=2)
    assert isinstance(result, BenchResult) and result.bench_path == tmp_path / "m.bench.json"
    assert result.p50_ms > 0 and result.throughput_fps > 0 and result.entry["batch"] == 2
    assert result.accuracy is None and result.speedup is None  # no run: no data, no dense model
    before = {p.name for p in tmp_path.iterdir()}
    assert measure_latency_ms(model, "host", iterations=5, batch=1) > 0
    assert {p.name for p in tmp_path.iterdir()} == before  # measuring for the pipeline writes nothing


class FakeJetson:
    """A Runner that answers like an Orin with TensorRT 10.3, recording what the host asked for."""

    label = "jetson-orin-nano-8gb"

    def __init__(self):
        self.calls, self.staged, self.fetched = [], {}, []

    def stage(self, path, name):
        self.staged[name] = path
        return name

    def output(self, name):
        return name

    def fetch(self, remote, local):
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(b"plan")
        self.fetched.append((remote, local))

    def run(self, program, args, *, tag=None, log_dir=None):
        self.calls.append((tag or program, list(args)))
        latency = {"p50": 2.0 if "dense.engine" in args else 1.0, "p90": 1.1, "p99": 1.2, "mean": 1.0,
                   "min": 0.9, "max": 1.3, "std": 0.1}
        return {
            "info": {"tensorrt": "10.3.0", "onnxruntime": None, "trtexec": "/usr/src/tensorrt/bin/trtexec",
                     "power_mode": {"id": 1, "name": "7W"}, "model": "NVIDIA Jetson Orin Nano Developer Kit"},
            "build": {"tensorrt": "10.3.0", "precision": args[args.index("--precision") + 1] if program == "build"
                      else None, "tool": "api"},
            "bench": {"latency_ms": latency, "throughput_fps": 1000.0, "provider": "tensorrt (cuda via ctypes)",
                      "power": {"mean_mw": 5000.0}, "peak_rss_mb": 300.0, "device_memory_mb": 12.0},
            "eval": {"accuracy": 0.5, "samples": 256},
        }[program]


@pytest.mark.e2e
def test_tensorrt_path_orchestration_with_a_fake_jetson(fake_run, tmp_path):
    """What the host asks a TensorRT device to do (no TensorRT here: the device is faked)."""
    from edgecomp.deploy.devices import resolve_device

    target = resolve_device("jetson-orin-nano-8gb")
    options = BenchOptions(iterations=20, batch=2)
    job = plan_job(fake_run, None, options, evaluate=True)
    entry, runner = _new_entry(target, job, options), FakeJetson()
    measure(runner, target, job, options, entry, log_dir=None)
    names = [name for name, _ in runner.calls]
    assert names == ["info", "build-model", "bench", "eval", "build-dense", "bench-dense"]
    build = dict(runner.calls)["build-model"]
    assert build[:4] == ["--onnx", "model.onnx", "--engine", "model.engine"]
    assert build[build.index("--shape") + 1] == "input:1x28x28"
    assert build[build.index("--max-batch") + 1] == "8"  # export's profile (batch 1..8): its engine is reusable
    assert build[build.index("--precision") + 1] == "fp16"  # export's recorded request (the recipe's default)
    bench = dict(runner.calls)["bench"]
    assert bench[:4] == ["--model", "model.engine", "--backend", "tensorrt"]
    assert dict(runner.calls)["eval"][:2] == ["--model", "model.engine"]
    engine = Path(entry["engine"]["path"])
    assert engine.parent == fake_run.resolve() / "engines"  # export's store, shared
    assert engine.name.startswith("nvidia-jetson-orin-nano-developer-kit_trt10.3.0_fp16_input-1x1x28x28-8x1x28x28")
    assert entry["speedup"] == pytest.approx(2.0) and entry["accuracy"] == 0.5 and entry["accuracy_split"] == "val"
    assert entry["power"] == {"mean_mw": 5000.0} and entry["precision"] == "fp16"
    assert any("power mode is 7W" in w and "nvpmodel -m 0" in w for w in entry["warnings"])
