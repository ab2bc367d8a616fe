"""Time several models in one loop, alternating, so that a shared device's drift hits them alike; print one JSON.

    python3 compare.py --model dense.onnx --model pruned.onnx [--backend onnxruntime] [--threads 1]
        [--iterations 50] [--warmup 5] [--batch 1]
    python3 compare.py --model a.onnx --model b.onnx --backend trtexec [--precision fp16] [--rounds 5]

onnxruntime / tensorrt: one session per model; in each of `iterations`
rounds every model runs once (perf_counter), in an order shuffled anew
each round, so each round gives a paired ratio to the first model. trtexec: `rounds` alternating trtexec runs per
model, each its own median GPU compute time.

Keys of the result: models [{model, p25, p50, p75}] (ms), ratios [{model,
p50, low, high}] to the first model (median of the per-round ratios and
their 2.5 / 97.5 percentiles).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from . import bench as target_bench
    from . import runtime
else:
    try:  # imported as edgecomp.deploy.target.compare (tests, the host)
        from . import bench as target_bench
        from . import runtime
    except ImportError:  # run as a script on the device, beside runtime.py
        import bench as target_bench
        import runtime


def summarize(names: list[str], rounds: np.ndarray) -> dict[str, Any]:
    """rounds: (rounds, models) times in ms, one row per round."""
    models = [{"model": name, **{f"p{q}": float(np.percentile(rounds[:, i], q)) for q in (25, 50, 75)}}
              for i, name in enumerate(names)]
    ratios = rounds / rounds[:, :1]
    paired = [{"model": name, "p50": float(np.median(ratios[:, i])),
               "low": float(np.percentile(ratios[:, i], 2.5)), "high": float(np.percentile(ratios[:, i], 97.5))}
              for i, name in enumerate(names)]
    return {"models": models, "ratios": paired, "rounds": int(rounds.shape[0])}


def compare_backends(args) -> np.ndarray:
    backends = [runtime.open_backend(args.backend, m, args.batch, args.provider, args.threads) for m in args.model]
    try:
        calls = [(b, runtime.random_inputs(b.inputs)) for b in backends]
        for backend, feeds in calls:
            runtime.time_inference(functools.partial(backend.infer, feeds), 0, args.warmup)
        order = np.random.default_rng(0)  # each round runs the models in a new order: none always follows another
        rounds = []
        for _ in range(args.iterations):
            row = [0.0] * len(calls)
            for index in order.permutation(len(calls)):
                backend, feeds = calls[index]
                row[index] = runtime.time_inference(functools.partial(backend.infer, feeds), 1, 0)[0] * 1e3
            rounds.append(row)
    finally:
        for backend in backends:
            backend.close()
    return np.asarray(rounds)


def _trtexec(command: list[str]) -> dict[str, Any]:
    done = subprocess.run(command, capture_output=True, text=True)
    sys.stderr.write(done.stdout + done.stderr)
    parsed = target_bench.parse_trtexec(done.stdout + done.stderr)
    if done.returncode != 0:
        reason = parsed["errors"][-1] if parsed["errors"] else f"exit code {done.returncode}"
        raise RuntimeError(f"trtexec failed: {reason}")
    return parsed


def compare_trtexec(args) -> np.ndarray:
    """Each ONNX model built once (--saveEngine), then `rounds` alternating timing runs of the engines."""
    trtexec = target_bench.find_tool("trtexec", target_bench.TRTEXEC_PATHS)
    if trtexec is None:
        raise RuntimeError("trtexec not found (looked on PATH and in /usr/src/tensorrt/bin)")
    flags = runtime.TRTEXEC_PRECISION[args.precision]
    engines = []
    with tempfile.TemporaryDirectory(prefix="edgecomp-compare-") as scratch:
        for index, model in enumerate(args.model):
            engine = os.path.join(scratch, f"model{index}.engine")
            _trtexec(target_bench.trtexec_command(trtexec, model, 1, 0, args.shape) + flags + [f"--saveEngine={engine}"])
            engines.append(engine)
        rounds = []
        for _ in range(args.rounds):
            row = []
            for engine in engines:
                parsed = _trtexec(target_bench.trtexec_command(trtexec, engine, args.iterations, args.warmup, args.shape))
                gpu = (parsed.get("gpu_compute_ms") or {}).get("p50")
                if gpu is None:
                    raise RuntimeError(f"trtexec printed no GPU compute time for {os.path.basename(engine)}")
                row.append(gpu)
            rounds.append(row)
    return np.asarray(rounds)


def run(args) -> dict[str, Any]:
    if args.iterations < 1 or args.batch < 1 or args.warmup < 0 or args.rounds < 1:
        raise RuntimeError("--iterations, --rounds and --batch must be >= 1, --warmup >= 0")
    for model in args.model:
        if not os.path.isfile(model):
            raise RuntimeError(f"model file not found: {model}")
    rounds = compare_trtexec(args) if args.backend == "trtexec" else compare_backends(args)
    names = [os.path.basename(m) for m in args.model]
    return {"backend": args.backend, "batch": args.batch, "threads": args.threads, **summarize(names, rounds)}


def parser():
    p = runtime.Parser(prog="compare.py", description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="repeat; ratios are to the first")
    p.add_argument("--backend", choices=["onnxruntime", "tensorrt", "trtexec"], default="onnxruntime")
    runtime.add_timing_args(p, iterations=50)  # --iterations: rounds (trtexec: timed inferences per run)
    p.add_argument("--rounds", type=int, default=3, help="trtexec only: alternating runs per model")
    return p


if __name__ == "__main__":
    runtime.main("compare", parser(), run)
