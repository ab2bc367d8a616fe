"""`edgecomp bench` on the host runner: results, accuracy on the device, dense speed-up, partial files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgecomp
from bench_helpers import assert_one_line_error, broken_onnx, cli, export_onnx
from conftest import tiny_recipe
from edgecomp.deploy.artifacts import write_eval_data
from edgecomp.deploy.bench import BENCH_FILE, PARTIAL_FILE, BenchResult, measure_latency_ms
from edgecomp.core.models import build_model, model_payload
from edgecomp.core.recipe import dump_recipe
from edgecomp.core.rundir import RunDir, write_text

FAST = ("--iterations", "10", "--warmup", "2")
LATENCY_KEYS = {"p50", "p90", "p99", "mean", "min", "max", "std"}


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory, fashion_root):
    """A run directory as compress + export leave it: recipe, metrics with a dense step, the dense
    checkpoint, and a (smaller, "pruned") model.onnx."""
    root = tmp_path_factory.mktemp("runs") / "tiny"
    recipe = tiny_recipe()
    run = RunDir(root)
    root.mkdir(parents=True)
    write_text(run.recipe, dump_recipe(recipe))
    dense = build_model(recipe.model).eval()
    run.save_step(0, {"model": model_payload(dense, recipe.model), "row": {"step": 0}})
    run.write_rows([{"step": 0, "stage": "dense"}, {"step": 1, "stage": "prune"}])
    export_onnx(root / "model.onnx", arch="cifar_resnet8", width=8)
    return root


@pytest.mark.e2e
def test_bench_a_run_on_the_host(fake_run):
    result = cli("bench", "--run", str(fake_run), "--device", "host", *FAST)
    assert result.returncode == 0, result.stderr
    assert "accuracy on the device" in result.stdout and "speed-up over the dense model" in result.stdout
    document = json.loads((fake_run / BENCH_FILE).read_text())
    assert document["complete"] is True and document["model"] == "model.onnx"
    entry = document["devices"]["host"]
    assert set(entry["latency_ms"]) == LATENCY_KEYS and entry["latency_ms"]["p50"] > 0
    assert entry["backend"] == "onnxruntime" and entry["provider"] == "CPUExecutionProvider"
    assert entry["accuracy_samples"] == 256 and 0 <= entry["accuracy"] <= 1
    assert entry["dense"]["latency_ms"]["p50"] > 0 and entry["speedup"] > 0
    assert entry["steps_done"] == ["info", "bench", "eval", "bench-dense"]
    assert (fake_run / "dense.onnx").is_file()  # exported from checkpoints/step_000.pt
    assert entry["info"]["onnxruntime"]["version"] and entry["info"]["memory"]["total_mb"] > 0
    logs = fake_run / "bench-logs" / "host"
    assert {p.name for p in logs.iterdir()} >= {"info.json", "info.log", "bench.json", "eval.json",
                                                "bench-dense.json"}
    assert not (fake_run / PARTIAL_FILE).exists()


@pytest.mark.e2e
def test_device_accuracy_matches_onnxruntime_here(fake_run, tmp_path):
    """eval.py's top-1 equals onnxruntime's on the same preprocessed images (InputSpec.prepare)."""
    import onnxruntime as ort

    entry = json.loads((fake_run / BENCH_FILE).read_text())["devices"]["host"]
    data = np.load(write_eval_data(tiny_recipe(), tmp_path / "eval.npz"))
    session = ort.InferenceSession(str(fake_run / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": data["images"]})[0]
    assert data["images"].dtype == np.float32 and data["images"].shape == (256, 1, 28, 28)
    assert entry["accuracy"] == pytest.approx(float((logits.argmax(1) == data["labels"]).mean()))


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
    assert not (tmp_path / BENCH_FILE).exists() and not (tmp_path / PARTIAL_FILE).exists()


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
    assert not (tmp_path / BENCH_FILE).exists()  # nothing presented as complete
    partial = json.loads((tmp_path / PARTIAL_FILE).read_text())
    assert partial["complete"] is False and "bench.py on host failed" in partial["error"]
    entry = partial["devices"]["host"]
    assert entry["steps_done"] == ["info"] and entry["info"]["cpu_count"] and entry["latency_ms"] is None


@pytest.mark.e2e
def test_python_api_and_measure_latency(tmp_path):
    model = export_onnx(tmp_path / "m.onnx")
    result = edgecomp.bench(model=model, device="host", iterations=5, warmup=1, batch=2)
    assert isinstance(result, BenchResult) and result.bench_path == tmp_path / BENCH_FILE
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
    from edgecomp.deploy.bench import BenchOptions, measure, plan_job, _new_entry

    target = resolve_device("jetson-orin-nano-8gb")
    options = BenchOptions(iterations=20, batch=2)
    job = plan_job(fake_run, None, options, tmp_path, evaluate=True)
    entry, runner = _new_entry(target, job, options), FakeJetson()
    measure(runner, target, job, options, entry, log_dir=None)
    names = [name for name, _ in runner.calls]
    assert names == ["info", "build-model", "bench", "eval", "build-dense", "bench-dense"]
    build = dict(runner.calls)["build-model"]
    assert build[:4] == ["--onnx", "model.onnx", "--engine", "model.engine"]
    assert build[build.index("--shape") + 1] == "input:1x28x28"
    assert build[build.index("--max-batch") + 1] == "8"  # export's profile (batch 1..8): its engine is reusable
    assert build[build.index("--precision") + 1] == "fp16"  # the recipe's export.precision (default)
    bench = dict(runner.calls)["bench"]
    assert bench[:4] == ["--model", "model.engine", "--backend", "tensorrt"]
    assert dict(runner.calls)["eval"][:2] == ["--model", "model.engine"]
    engine = Path(entry["engine"]["path"])
    assert engine.parent == fake_run.resolve() / "engines"  # export's store, shared
    assert engine.name.startswith("nvidia-jetson-orin-nano-developer-kit_trt10.3.0_fp16_input-1x1x28x28-8x1x28x28")
    assert entry["speedup"] == pytest.approx(2.0) and entry["accuracy"] == 0.5 and entry["accuracy_split"] == "val"
    assert entry["power"] == {"mean_mw": 5000.0} and entry["precision"] == "fp16"
    assert any("power mode is 7W" in w and "nvpmodel -m 0" in w for w in entry["warnings"])
