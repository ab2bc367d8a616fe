"""The CUDA path on one GPU (run through benchmarks/gpu_check.sh): for resnet18 and mobilenet_v2 at 224 px,
the channel block measured with CUDA-event timings (batch 1), a prune to half the dense latency with the closed
loop, and dense vs pruned timed alternately at batch 1 and 32 (PyTorch eager, fp32)."""

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

from edgecomp.compression.latency import Attempt, aligned_proposals, meet_budget
from edgecomp.compression.latency.block import measure_block
from edgecomp.compression.latency.run import whole_timer
from edgecomp.core.models import measure_size
from edgecomp.core.recipe import PruneSection
from edgecomp.deploy.latency.cuda import CpuClock, TorchTimer

SHAPE = (3, 224, 224)
SMOKE = {}  # --smoke: the same code on this CPU at 32 px, few iterations (checks the script, measures nothing)


def timer(batch: int) -> TorchTimer:
    if SMOKE:
        return TorchTimer(SHAPE, batch=batch, warmup=1, device="cpu", clock=CpuClock())
    return TorchTimer(SHAPE, batch=batch, warmup=10)


def check(arch: str, budget: float) -> dict:
    torch.manual_seed(0)
    dense = getattr(torchvision.models, arch)(num_classes=10).eval()
    example = torch.zeros(1, *SHAPE)
    cfg = PruneSection(target={"latency": budget, "runtime": "torch"})
    device = timer(1)
    info = device.check_runtime()
    rounds = 5 if SMOKE else 100
    started = time.perf_counter()
    block, rows = measure_block(dense, example, cfg, 10, whole_timer(device, rounds), seed=1)
    dense_macs = measure_size(dense, example).macs

    def measure(trial):
        timed = device.compare([dense, trial], iterations=rounds)
        ratio = timed["ratios"][1]
        return Attempt(0.0, ratio["p50"], ratio["low"], ratio["high"], timed["models"][1]["p50"],
                       timed["models"][0]["p50"], True)

    proposals = aligned_proposals(dense, example, cfg, block or cfg.round_to, dense_macs, 1.0, 10)
    result = meet_budget(*proposals, budget, cfg.target, measure)
    speedups = {}
    for batch in (1, 32):
        timed = timer(batch).compare([dense, result.model], iterations=rounds)
        speedups[f"batch{batch}"] = {"dense_ms": timed["models"][0]["p50"], "pruned_ms": timed["models"][1]["p50"],
                                     "ratio": timed["ratios"][1]["p50"], "speedup": 1 / timed["ratios"][1]["p50"]}
    macs = measure_size(result.model, example).macs / dense_macs
    return {"arch": arch, "budget": budget, "gpu": info, "block": block, "block_rows": rows,
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
