"""Per-layer times of a model as the runtime itself runs it (fusions, layouts); print one JSON object.

    python3 profile.py --model model.onnx [--backend onnxruntime] [--threads 1] [--provider cpu]
    python3 profile.py --model model.onnx --backend trtexec [--precision fp16] [--shape input:1x3x224x224]
        [--iterations 30] [--warmup 5] [--batch 1]

onnxruntime: session profiling (SessionOptions.enable_profiling); every node's
kernel time in each timed run, the median over runs. The name of a node is
the runtime's own, which after its fusions and layout passes may be the name
of an output tensor (e.g. "<tensor>_nchwc"); the host maps names back to the
graph's layers. trtexec: `--dumpProfile --separateProfileRun
--exportProfile=FILE`, whose JSON is a list: {"count": N} first, then one
{"name", "timeMs", "averageMs", "medianMs" (TensorRT 8.6+), "percentage"}
per engine layer; an engine layer's name joins the ONNX nodes it fused with
" + ".

Keys of the result: backend, runtime_version, layers [{name, op, ms,
weight_shape}], run_ms (median whole run as the profiler saw it), wall_ms
(median perf_counter time of a run, profiling on).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

try:  # imported as edgecomp.deploy.target.profile (tests, the host)
    from . import bench as target_bench, runtime
except ImportError:  # run as a script on the device, beside runtime.py
    import bench as target_bench
    import runtime

KERNEL_SUFFIX = "_kernel_time"


# ---------------------------------------------------------------- onnxruntime


def ort_layers(events: list[dict[str, Any]], warmup: int) -> tuple[list[dict[str, Any]], list[float]]:
    """Per-node median kernel time (ms) over the timed runs of an onnxruntime profile, and each run's length.

    A run is a "model_run" session event; the node events inside it belong to it. The first `warmup` runs
    are left out (allocation, first-touch)."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")[warmup:]
    if not runs:
        raise RuntimeError("the onnxruntime profile holds no timed model_run event")
    times: dict[str, list[float]] = {}
    meta: dict[str, dict[str, Any]] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith(KERNEL_SUFFIX):
            continue
        if not any(start <= event["ts"] <= end for start, end in runs):
            continue
        node = name[: -len(KERNEL_SUFFIX)]
        times.setdefault(node, []).append(event["dur"] / 1e3)
        args = event.get("args", {})
        shapes = [next(iter(s.values())) for s in args.get("input_type_shape", []) if s]
        meta.setdefault(node, {"op": args.get("op_name"), "weight_shape": shapes[1] if len(shapes) > 1 else None})
    layers = [{"name": node, **meta[node], "ms": statistics.median(ms) * len(ms) / len(runs)}
              for node, ms in times.items()]  # a node that runs twice a run counts twice
    return layers, [(end - start) / 1e3 for start, end in runs]


def profile_onnxruntime(args) -> dict[str, Any]:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgecomp-profile-") as scratch:
        options = ort.SessionOptions()
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(scratch, "ort")
        if args.threads > 0:
            options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        providers = runtime.ort_providers(args.provider, scratch)
        session = ort.InferenceSession(args.model, options, providers=providers)
        inputs = [(i.name, runtime.resolve_shape(i.name, list(i.shape), args.batch),
                   np.dtype(runtime.ORT_TYPES.get(i.type, np.float32))) for i in session.get_inputs()]
        feeds = runtime.random_inputs(inputs)
        wall = runtime.time_inference(lambda: session.run(None, feeds), args.iterations + args.warmup, 0)
        with open(session.end_profiling()) as handle:
            events = json.load(handle)
    layers, runs = ort_layers(events, args.warmup)
    return {"backend": "onnxruntime", "provider": session.get_providers()[0], "runtime_version": ort.__version__,
            "layers": layers, "run_ms": statistics.median(runs),
            "wall_ms": statistics.median(wall[args.warmup:]) * 1e3}


# ---------------------------------------------------------------- trtexec


def trtexec_layers(profile: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Engine layers from trtexec's --exportProfile JSON (the median where TensorRT gives it, else the mean)."""
    layers = []
    for entry in profile:
        if "name" not in entry:  # the leading {"count": N}
            continue
        ms = entry.get("medianMs", entry.get("averageMs"))
        if ms is None:
            raise RuntimeError(f"trtexec profile entry {entry['name']!r} has neither medianMs nor averageMs")
        layers.append({"name": entry["name"], "op": None, "ms": float(ms), "weight_shape": None})
    return layers


def trtexec_profile_command(trtexec: str, args, export_path: str) -> list[str]:
    command = target_bench.trtexec_command(trtexec, args.model, args.iterations, args.warmup, args.shape)
    return command + runtime.TRTEXEC_PRECISION[args.precision] + [
        "--dumpProfile", "--separateProfileRun", f"--exportProfile={export_path}"]


def profile_trtexec(args) -> dict[str, Any]:
    trtexec = target_bench.find_tool("trtexec", target_bench.TRTEXEC_PATHS)
    if trtexec is None:
        raise RuntimeError("trtexec not found (looked on PATH and in /usr/src/tensorrt/bin)")
    with tempfile.TemporaryDirectory(prefix="edgecomp-profile-") as scratch:
        export_path = os.path.join(scratch, "profile.json")
        command = trtexec_profile_command(trtexec, args, export_path)
        done = subprocess.run(command, capture_output=True, text=True)
        sys.stderr.write(done.stdout + done.stderr)
        parsed = target_bench.parse_trtexec(done.stdout + done.stderr)
        if done.returncode != 0 or not os.path.isfile(export_path):
            reason = parsed["errors"][-1] if parsed["errors"] else f"exit code {done.returncode}"
            raise RuntimeError(f"trtexec profiling failed: {reason}")
        with open(export_path) as handle:
            layers = trtexec_layers(json.load(handle))
    gpu = (parsed.get("gpu_compute_ms") or {}).get("p50") or (parsed.get("latency_ms") or {}).get("p50")
    return {"backend": "trtexec", "provider": "tensorrt", "runtime_version": parsed.get("tensorrt_version"),
            "command": command, "layers": layers, "run_ms": gpu, "wall_ms": gpu}


def run(args) -> dict[str, Any]:
    if args.iterations < 1 or args.batch < 1 or args.warmup < 0:
        raise RuntimeError("--iterations and --batch must be >= 1, --warmup >= 0")
    if not os.path.isfile(args.model):
        raise RuntimeError(f"model file not found: {args.model}")
    started = time.perf_counter()
    result = profile_trtexec(args) if args.backend == "trtexec" else profile_onnxruntime(args)
    return {"model": os.path.basename(args.model), "batch": args.batch, "iterations": args.iterations,
            "warmup": args.warmup, "threads": args.threads, "precision": args.precision,
            "seconds": time.perf_counter() - started, **result}


def parser():
    p = runtime.Parser(prog="profile.py", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--backend", choices=["onnxruntime", "trtexec"], default="onnxruntime")
    runtime.add_timing_args(p, iterations=30)
    return p


if __name__ == "__main__":
    runtime.main("profile", parser(), run)
