"""Host latency of exported models: dense vs pruned, fp32 vs Q/DQ int8 (onnxruntime CPU, batch 1).

    .venv/bin/python benchmarks/export_latency.py [--threads 1] [--iterations 200]

Two cases, random weights (latency does not depend on their values):
  quickstart    cifar_resnet20, 1x28x28, pruned to ~30% of its MACs (round_to 8), as the quickstart recipe ends
  resnet18_224  torchvision resnet18, 3x224x224, pruned to ~50% of its MACs (round_to 8)
Each model goes through edgecomp's exporter (BN folded, onnxslim, checked against PyTorch) and, for int8,
through the same Q/DQ quantization as `edgecomp export --precision int8` (calibrated on random inputs).

Timing: perf_counter around InferenceSession.run, warm-up first, then the four sessions of a case
(dense/pruned x fp32/int8) run in alternating blocks of 5 iterations, so slow spells of this shared
machine hit every variant alike; the median is reported. The efficiency figure is
(dense median / pruned median) / (dense MACs / pruned MACs): 1.0 means latency fell as much as the MACs.
Results: benchmarks/results/export_latency.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch

from edgecomp.deploy.export import check_fidelity, export_onnx, export_onnx_int8_qdq, ort_session
from edgecomp.core.models import build_model
from edgecomp.compression.prune import Size, measure_size, prune_to
from edgecomp.core.recipe import ModelSection, PruneSection

HERE = Path(__file__).resolve().parent
BLOCK = 5  # iterations per variant before switching to the next one


@dataclass
class Case:
    name: str
    arch: str
    channels: int
    size: int
    keep: float  # fraction of the dense MACs the pruned model keeps
    iterations: int


CASES = [Case("quickstart", "cifar_resnet20", 1, 28, 0.3, 200), Case("resnet18_224", "resnet18", 3, 224, 0.5, 60)]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    parser.add_argument("--iterations", type=int, default=None, help="timed runs per variant (default per case)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    return parser.parse_args()


def models(case: Case) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    cfg = ModelSection(arch=case.arch, in_channels=case.channels, input_size=case.size, num_classes=10)
    dense, other = build_model(cfg).eval(), build_model(cfg).eval()
    other.load_state_dict(dense.state_dict())
    example = torch.randn(1, case.channels, case.size, case.size)
    target = Size(int(measure_size(dense, example).macs * case.keep), 0)
    prune_to(other, example, PruneSection(target={"macs": case.keep}, round_to=8), target, 10)
    return dense, other.eval(), example


def exported(model: torch.nn.Module, example: torch.Tensor, folder: Path, stem: str) -> dict[str, Path]:
    """fp32 ONNX (checked against PyTorch on random inputs) and its Q/DQ int8 version."""
    inputs = torch.randn(16, *example.shape[1:])
    proto, _ = export_onnx(model, inputs[:2])
    check_fidelity(proto, model, inputs, atol=1e-4)
    fp32, int8 = folder / f"{stem}.onnx", folder / f"{stem}.int8.onnx"
    onnx.save(proto, str(fp32))
    export_onnx_int8_qdq(fp32, int8, inputs.numpy())
    return {f"{stem}_fp32": fp32, f"{stem}_int8": int8}


def interleaved(paths: dict[str, Path], example: np.ndarray, iterations: int, threads: int) -> dict[str, dict]:
    sessions = {name: ort_session(path, threads=threads) for name, path in paths.items()}
    feeds = {name: {s.get_inputs()[0].name: example} for name, s in sessions.items()}
    for name, session in sessions.items():
        for _ in range(10):  # warm-up: allocations, kernel selection
            session.run(None, feeds[name])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    names = list(sessions)
    for block in range(-(-iterations // BLOCK)):
        for name in names if block % 2 == 0 else names[::-1]:
            for _ in range(BLOCK):
                start = time.perf_counter()
                sessions[name].run(None, feeds[name])
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: {"median_ms": statistics.median(t), "p10_ms": float(np.percentile(t, 10)),
                   "p90_ms": float(np.percentile(t, 90)), "iterations": len(t)} for name, t in times.items()}


def run_case(case: Case, args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    dense, pruned, example = models(case)
    macs = {"dense": measure_size(dense, example).macs, "pruned": measure_size(pruned, example).macs}
    with tempfile.TemporaryDirectory() as folder:
        paths = {**exported(dense, example, Path(folder), "dense"), **exported(pruned, example, Path(folder), "pruned")}
        sizes = {name: path.stat().st_size for name, path in paths.items()}
        latency = interleaved(paths, example.numpy(), args.iterations or case.iterations, args.threads)
    speedup = latency["dense_fp32"]["median_ms"] / latency["pruned_fp32"]["median_ms"]
    reduction = macs["dense"] / macs["pruned"]
    return {
        "arch": case.arch, "input": [1, case.channels, case.size, case.size], "macs": macs,
        "macs_ratio": macs["pruned"] / macs["dense"], "latency": latency, "onnx_bytes": sizes,
        "speedup_fp32": speedup, "macs_reduction": reduction, "efficiency": speedup / reduction,
        "int8_speedup_dense": latency["dense_fp32"]["median_ms"] / latency["dense_int8"]["median_ms"],
        "int8_speedup_pruned": latency["pruned_fp32"]["median_ms"] / latency["pruned_int8"]["median_ms"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def environment(args: argparse.Namespace) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
            "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "intra_op_threads": args.threads, "load_average_start": os.getloadavg()}


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [
        "# Export latency on the host (onnxruntime CPU, batch 1)", "",
        f"`{env['command']}` — {env['date']}; {env['cpu']} ({env['cpu_count']} cores, shared), {env['platform']}, "
        f"onnxruntime {env['onnxruntime']} with {env['intra_op_threads']} intra-op thread(s); load average "
        f"{env['load_average_start'][0]:.1f} at the start, {env['load_average_end'][0]:.1f} at the end.", "",
        "Median of interleaved blocks (dense/pruned × fp32/int8 alternate every 5 runs). Efficiency = "
        "measured speed-up ÷ MACs reduction (1.0: latency fell as much as the MACs; target ≥ 0.85).", "",
        "| case | MACs dense → pruned | fp32 dense ms | fp32 pruned ms | speed-up | MACs reduction | efficiency "
        "| int8 dense ms | int8 pruned ms | int8 speed-up over fp32 (dense / pruned) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, case in result["cases"].items():
        lat = {k: v["median_ms"] for k, v in case["latency"].items()}
        lines.append(
            f"| {name} ({case['arch']}, {'x'.join(map(str, case['input'][1:]))}) | {case['macs']['dense'] / 1e6:.1f}M → "
            f"{case['macs']['pruned'] / 1e6:.1f}M ({case['macs_ratio']:.1%}) | {lat['dense_fp32']:.3f} | "
            f"{lat['pruned_fp32']:.3f} | {case['speedup_fp32']:.2f}× | {case['macs_reduction']:.2f}× | "
            f"**{case['efficiency']:.2f}** | {lat['dense_int8']:.3f} | {lat['pruned_int8']:.3f} | "
            f"{case['int8_speedup_dense']:.2f}× / {case['int8_speedup_pruned']:.2f}× |")
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    result = {"environment": environment(args), "cases": {}}
    for case in CASES:
        result["cases"][case.name] = run_case(case, args)
        print(f"{case.name}: efficiency {result['cases'][case.name]['efficiency']:.2f}", flush=True)
    result["environment"]["load_average_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "export_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "export_latency.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
