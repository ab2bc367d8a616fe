"""Does the alignment of kept channel counts change a pruned network's latency on this CPU? (issue 21 follow-up)

    .venv/bin/python benchmarks/latency_alignment.py [--cases cifar_resnet20:28 resnet18:224] [--variants 4]

Why: the latency model is fitted on copies pruned to random widths (`random_widths`: any count, so that the
channel steps show), while every plan it makes lands on those steps. On ResNet-20 at 28 px (issue 22's regime)
it over-predicted narrow plans about 2x (results/latency_accuracy/cells/b0.50_latency_s4_seed1.json, step 3:
0.762 predicted, 0.376 measured). This measures the gap between the two regimes directly.

Per case: `--variants` copies of the network, every dependency group kept at its own random share in
[1/4, 1] of its channels (l1 ranking; the same draws for every alignment), then rounded down to a multiple
of `align` (1 = as drawn, 4, 8, 16). All copies and the dense model are timed alternately in one loop
(onnxruntime fp32, 1 thread, batch 1, 100 rounds, `compare.py`), ratio = p50 of per-round ratios to dense.
Random weights: latency does not depend on their values.

Results: benchmarks/results/latency_alignment.json and .md (one JSON cell per case and alignment under
benchmarks/results/latency_alignment/, so a stopped run resumes).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

import onnxruntime
import torch
import torchvision

from edgecomp.compression.latency.block import pruned_copy
from edgecomp.compression.prune import Planner, dense_profile, ignored_layers
from edgecomp.core.models import build_model, measure_size
from edgecomp.core.recipe import ModelSection, PruneSection
from edgecomp.deploy.latency import Timer, TimingSettings
from edgecomp.deploy.runners import HostRunner

HERE = Path(__file__).resolve().parent
CELLS = HERE / "results" / "latency_alignment"
ALIGNMENTS = (1, 4, 8, 16)
ROUNDS = 100


def network(arch: str, size: int) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if arch.startswith("cifar_"):
        cfg = ModelSection(arch=arch, num_classes=10, in_channels=1, input_size=size)
        return build_model(cfg).eval(), torch.zeros(1, 1, size, size)
    return getattr(torchvision.models, arch)(num_classes=10).eval(), torch.zeros(1, 3, size, size)


def run_record(script: str) -> dict:
    """Where and how a host timing ran: the fields every results file of these scripts carries."""
    return {"runtime": f"onnxruntime {onnxruntime.__version__}", "threads": 1, "batch": 1,
            "host": platform.node(), "python": sys.version.split()[0], "torch": torch.__version__,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": f"benchmarks/{script} " + " ".join(sys.argv[1:])}


def variant(dense: torch.nn.Module, example: torch.Tensor, shares: list[float], align: int) -> torch.nn.Module:
    """`dense` with group i kept at shares[i] of its channels, rounded down to a multiple of `align` (>= align)."""
    share_of = iter(shares)  # pruned_copy visits the groups in the planner's order, the same for every copy

    def kept(ranked) -> int:
        count = max(1, int(ranked.size * next(share_of)))
        return min(ranked.size, max(align, count // align * align))

    return pruned_copy(dense, example, PruneSection(target={"macs": 0.5}), 10, kept)


def run_case(arch: str, size: int, variants: int) -> None:
    dense, example = network(arch, size)
    groups = len(Planner(copy.deepcopy(dense), example, PruneSection(target={"macs": 0.5}),
                         ignored_layers(dense, PruneSection(target={"macs": 0.5}), 10),
                         dense_profile(dense, example)).ranked)
    generator = torch.Generator().manual_seed(0)
    draws = [[0.25 + 0.75 * float(x) for x in torch.rand(groups, generator=generator)] for _ in range(variants)]
    dense_macs = measure_size(dense, example).macs
    shape = tuple(example.shape[1:])
    for align in ALIGNMENTS:
        path = CELLS / f"{arch}_{size}_align{align}.json"
        if path.is_file():
            continue
        models = [variant(dense, example, shares, align) for shares in draws]
        with HostRunner() as runner:
            profiler = Timer(runner, TimingSettings(device="host", runtime="onnxruntime"), shape)
            timed = profiler.compare([dense, *models], iterations=ROUNDS)
        cell = {
            "arch": arch, "input": list(shape), "align": align, "rounds": timed["rounds"],
            "dense_p50_ms": timed["models"][0]["p50"],
            "variants": [{"macs_ratio": measure_size(m, example).macs / dense_macs, "ratio_p50": r["p50"],
                          "ratio_low": r["low"], "ratio_high": r["high"]}
                         for m, r in zip(models, timed["ratios"][1:])],
            **run_record("latency_alignment.py"),
        }
        CELLS.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cell, indent=1))
        print(f"{arch} {size} px align {align}: " + ", ".join(
            f"{v['ratio_p50']:.2f} at MACs {v['macs_ratio']:.2f}" for v in cell["variants"]), flush=True)


def write_summary() -> None:
    cells = [json.loads(p.read_text()) for p in sorted(CELLS.glob("*.json"))]
    (HERE / "results" / "latency_alignment.json").write_text(json.dumps(cells, indent=1))
    lines = ["# Latency of pruned copies by the alignment of their channel counts (onnxruntime fp32, 1 thread, "
             "batch 1)", "",
             "Written by `benchmarks/latency_alignment.py`. Each row: the same random per-group shares, counts "
             "rounded down to a multiple of `align` (1: as drawn); latency = p50 of per-round ratios to the dense "
             "model, all timed alternately in one loop; latency ÷ MACs = how much of the MACs cut shows as time.",
             "", "| network | input | align | latency / dense per copy | MACs ratio per copy | "
             "mean latency ÷ MACs |", "|---|---|---:|---|---|---:|"]
    for cell in sorted(cells, key=lambda c: (c["arch"], c["align"])):
        variants = cell["variants"]
        per_macs = sum(v["ratio_p50"] / v["macs_ratio"] for v in variants) / len(variants)
        lines.append(f"| {cell['arch']} | {'x'.join(map(str, cell['input']))} | {cell['align']} | "
                     + ", ".join(f"{v['ratio_p50']:.2f}" for v in variants) + " | "
                     + ", ".join(f"{v['macs_ratio']:.2f}" for v in variants) + f" | {per_macs:.2f} |")
    (HERE / "results" / "latency_alignment.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["cifar_resnet20:28", "resnet18:224"])
    parser.add_argument("--variants", type=int, default=4)
    args = parser.parse_args()
    for case in args.cases:
        arch, size = case.split(":")
        run_case(arch, int(size), args.variants)
    write_summary()


if __name__ == "__main__":
    main()
