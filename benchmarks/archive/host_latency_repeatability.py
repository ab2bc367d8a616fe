"""How repeatable is host latency? The p50 of `bench.py` (onnxruntime, CPU) over repeated runs.

    python benchmarks/host_latency_repeatability.py [--repeats 5] [--iterations 300] [--warmup 30]
        [--batch 1] [--threads 0]

The model is quickstart-sized: edgecomp's `cifar_resnet20` for 1×28×28 inputs
(Fashion-MNIST), random weights (latency does not depend on them), exported as
edgecomp exports (opset 17, dynamic batch). Each repeat is a fresh process of
the target-side program, started by the HostRunner exactly as `edgecomp bench
--device host` starts it. Results: benchmarks/results/host_latency_repeatability.json and .md.
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
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch

from edgecomp.core.models import TINY_MODELS
from edgecomp.deploy.runners import HostRunner

HERE = Path(__file__).resolve().parent
NAME = "host_latency_repeatability"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    return parser.parse_args()


def export_quickstart_model(path: Path) -> None:
    torch.manual_seed(0)
    model = TINY_MODELS["cifar_resnet20"](num_classes=10, in_channels=1).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.zeros(1, 1, 28, 28), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


def cpu_info() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"model": model, "logical_cpus": os.cpu_count(), "machine": platform.machine(),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}


def spread(values: list[float]) -> dict:
    median = statistics.median(values)
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "median": median,
            "range_over_median_percent": 100 * (max(values) - min(values)) / median,
            "cv_percent": 100 * (statistics.stdev(values) if len(values) > 1 else 0.0) / statistics.mean(values)}


def main() -> None:
    args = parse_args()
    started = datetime.now(timezone.utc)
    cpu_before = cpu_info()
    repeats = []
    with tempfile.TemporaryDirectory() as folder, HostRunner() as runner:
        model = Path(folder) / "quickstart_resnet20.onnx"
        export_quickstart_model(model)
        bench_args = ["--model", str(model), "--backend", "onnxruntime", "--provider", "cpu", "--iterations",
                      str(args.iterations), "--warmup", str(args.warmup), "--batch", str(args.batch),
                      "--threads", str(args.threads), "--power", "off"]
        for index in range(args.repeats):
            result = runner.run("bench", bench_args)
            repeats.append({"repeat": index + 1, **result["latency_ms"], "throughput_fps": result["throughput_fps"],
                            "runtime_version": result["runtime_version"]})
            print(f"repeat {index + 1}/{args.repeats}: p50 {result['latency_ms']['p50']:.3f} ms, "
                  f"p90 {result['latency_ms']['p90']:.3f} ms, p99 {result['latency_ms']['p99']:.3f} ms", flush=True)
    report = {
        "benchmark": NAME,
        "command": "python " + " ".join(shlex.quote(a) for a in [f"benchmarks/{NAME}.py", *sys.argv[1:]]),
        "date": started.isoformat(timespec="seconds"),
        "cpu": {**cpu_before, "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "software": {"python": platform.python_version(), "onnxruntime": repeats[0]["runtime_version"],
                     "torch": torch.__version__},
        "model": "cifar_resnet20, 1x28x28, 10 classes, random weights, ONNX opset 17 (dynamic batch)",
        "settings": vars(args),
        "repeats": repeats,
        "p50_ms": spread([r["p50"] for r in repeats]),
        "p90_ms": spread([r["p90"] for r in repeats]),
        "p99_ms": spread([r["p99"] for r in repeats]),
    }
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / f"{NAME}.json").write_text(json.dumps(report, indent=2) + "\n")
    (results / f"{NAME}.md").write_text(markdown(report))
    print(f"p50 over {args.repeats} repeats: {report['p50_ms']['median']:.3f} ms median, "
          f"range {report['p50_ms']['range_over_median_percent']:.1f}% of it, CV {report['p50_ms']['cv_percent']:.1f}%")


def markdown(report: dict) -> str:
    p50, cpu = report["p50_ms"], report["cpu"]
    rows = "\n".join(f"| {r['repeat']} | {r['p50']:.3f} | {r['p90']:.3f} | {r['p99']:.3f} | {r['mean']:.3f} | "
                     f"{r['throughput_fps']:.0f} |" for r in report["repeats"])
    return f"""# Host latency repeatability

`{report['command']}` — {report['date']}

CPU: {cpu['model']}, {cpu['logical_cpus']} logical CPUs ({cpu['machine']}); load average (1/5/15 min)
{cpu['load_average_1_5_15']} before, {cpu['load_average_after']} after. onnxruntime
{report['software']['onnxruntime']} (CPU execution provider), Python {report['software']['python']}.
Model: {report['model']}; batch {report['settings']['batch']}, {report['settings']['iterations']} timed
iterations after {report['settings']['warmup']} warm-up ones, per repeat (a fresh `bench.py` process each).

| repeat | p50 ms | p90 ms | p99 ms | mean ms | images/s |
|---|---|---|---|---|---|
{rows}

p50 over the repeats: median {p50['median']:.3f} ms, mean {p50['mean']:.3f} ± {p50['std']:.3f} ms,
min {p50['min']:.3f}, max {p50['max']:.3f}: the range is {p50['range_over_median_percent']:.1f}% of the median
(coefficient of variation {p50['cv_percent']:.1f}%). The tails (p90 CV {report['p90_ms']['cv_percent']:.1f}%,
p99 CV {report['p99_ms']['cv_percent']:.1f}%) move more than the median on a shared machine: compare models by
p50 measured in the same session, and treat differences within this spread as noise.
"""


if __name__ == "__main__":
    main()
