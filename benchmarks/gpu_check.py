"""The CUDA path on one GPU (run through benchmarks/gpu_check.sh): for resnet18 and mobilenet_v2 at 224 px,
the latency model from CUDA-event profiles (batch 1), a latency-aware prune to half the dense latency with the
closed loop, and dense vs pruned timed alternately at batch 1 and 32 (PyTorch eager, fp32)."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torchvision

from edgecomp.compression.latency_prune import Attempt, build_table, meet_budget
from edgecomp.core.models import measure_size
from edgecomp.core.recipe import PruneSection
from edgecomp.deploy.latency import channel_counts, relative_error
from edgecomp.deploy.latency.cuda import CpuClock, TorchProfiler

SHAPE = (3, 224, 224)
SMOKE = {}  # --smoke: the same code on this CPU at 32 px, few iterations (checks the script, measures nothing)


def profiler(batch: int, iterations: int) -> TorchProfiler:
    if SMOKE:
        return TorchProfiler(SHAPE, batch=batch, iterations=3, warmup=1, device="cpu", clock=CpuClock())
    return TorchProfiler(SHAPE, batch=batch, iterations=iterations, warmup=10)


def check(arch: str, budget: float) -> dict:
    torch.manual_seed(0)
    dense = getattr(torchvision.models, arch)(num_classes=10).eval()
    example = torch.zeros(1, *SHAPE)
    cfg = PruneSection(target={"latency": budget, "runtime": "torch"})
    timer = profiler(1, 50)
    info = timer.check_runtime()
    started = time.perf_counter()
    table, build = build_table(dense, example, cfg, 10, {"arch": arch, "runtime": "torch"}, timer.observe, 6, 0)

    def measure(trial):
        timed = timer.compare([dense, trial], iterations=5 if SMOKE else 100)
        ratio = timed["ratios"][1]
        return Attempt(0.0, ratio["p50"], ratio["low"], ratio["high"], timed["models"][1]["p50"],
                       timed["models"][0]["p50"], True)

    unit = table.predict({n: c for n, c in channel_counts(dense).items() if n in table.layers})
    result = meet_budget(dense, example, cfg, table, budget, unit, measure, 10)
    speedups = {}
    for batch in (1, 32):
        timed = profiler(batch, 100).compare([dense, result.model], iterations=5 if SMOKE else 100)
        speedups[f"batch{batch}"] = {"dense_ms": timed["models"][0]["p50"], "pruned_ms": timed["models"][1]["p50"],
                                     "ratio": timed["ratios"][1]["p50"], "speedup": 1 / timed["ratios"][1]["p50"]}
    macs = measure_size(result.model, example).macs / measure_size(dense, example).macs
    return {"arch": arch, "budget": budget, "gpu": info, "profiles": build.profiles,
            "profile_seconds": round(build.seconds, 2), "steps": table.steps, "fit_error": relative_error(table),
            "attempts": [a.as_dict() for a in result.attempts], "met": result.met, "macs_ratio": macs,
            "speedups": speedups, "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--smoke", action="store_true", help="check the script on a CPU (32 px)")
    args = parser.parse_args()
    if args.smoke:
        global SHAPE
        SMOKE["on"], SHAPE = True, (3, 32, 32)
    cells = []
    for arch in ("resnet18", "mobilenet_v2"):
        cells.append(check(arch, 0.5))
        print(json.dumps(cells[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cells": cells, "torch": torch.__version__, "python": sys.version.split()[0],
                                    "host": platform.node(),
                                    "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=1))


if __name__ == "__main__":
    main()
