"""What onnxruntime's session profile shows for copies pruned to the same random shares, as drawn or on
multiples of 16 (issue 21: why the latency model's step fit is unstable on this host).

    .venv/bin/python benchmarks/profile_regimes.py [--cases mobilenet_v2 resnet18] [--copies 2]

For each torchvision network (random weights, 3x224x224, 10 classes): the dense model, then per copy index
k a copy whose every group keeps a random share (seed k, as `random_widths` draws) with counts as drawn
(align 1) and the same shares rounded down to multiples of 16 (align 16). Each is profiled as the latency
model profiles (`Profiler.observe`: onnxruntime fp32, 1 thread, batch 1, 30 runs) and the file records the
profiled run's length, the time per onnxruntime op type (`/nchwc`: nodes onnxruntime's layout pass put on its
channel-blocked NCHWc kernels, named `<tensor>_nchwc`; Conv and FusedConv without it run unblocked;
ReorderInput/ReorderOutput: layout changes between the two), what the layers and the
rest were priced, and the MACs. Runs are profiled one after another, not interleaved: compare runs of
one network only, on a quiet host. Results: benchmarks/results/profile_regimes.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import onnxruntime
import torch
import torchvision

from edgecomp.compression.latency_prune import shares_padded
from edgecomp.core.models import measure_size
from edgecomp.core.recipe import PruneSection
from edgecomp.deploy.latency import read_layers
from edgecomp.deploy.latency.profiles import Profiler, ProfileSettings
from edgecomp.deploy.runners import HostRunner

RESULTS = Path(__file__).resolve().parent / "results"
SHAPE = (3, 224, 224)
ALIGNS = (1, 16)


def profile_case(arch: str, copies: int) -> list[dict]:
    torch.manual_seed(0)
    dense = getattr(torchvision.models, arch)(num_classes=10).eval()
    example = torch.zeros(1, *SHAPE)
    cfg = PruneSection(target={"latency": 0.5})
    layers = read_layers(dense, example)
    dense_macs = measure_size(dense, example).macs
    # the same shares for every alignment of one seed, rounded down to it
    models = [("dense", 0, dense)] + [(f"align {align}", seed,
                                       shares_padded(dense, example, cfg, 10, align, align, seed))
                                      for seed in range(1, copies + 1) for align in ALIGNS]
    rows = []
    settings = ProfileSettings(device="host", runtime="onnxruntime", threads=1, iterations=30)
    with HostRunner() as runner:
        profiler = Profiler(runner, settings, SHAPE)
        raw: dict = {}
        run = runner.run

        def keep_raw(program, args):  # the per-node entries, for the time per op type
            raw["result"] = run(program, args)
            return raw["result"]

        runner.run = keep_raw
        for label, seed, model in models:
            observation = profiler.observe(model, layers)
            by_op = collections.Counter()
            for entry in raw["result"]["layers"]:
                by_op[entry.get("op") + ("/nchwc" if entry["name"].endswith("_nchwc") else "")] += entry["ms"]
            rows.append({"arch": arch, "model": label, "seed": seed, "run_ms": observation.run_ms,
                         "layers_ms": sum(observation.layer_ms.values()), "rest_ms": observation.rest_ms,
                         "ms_by_op": dict(by_op.most_common()),
                         "macs_ratio": measure_size(model, example).macs / dense_macs})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict]) -> list[str]:
    lines = ["# onnxruntime's profile of pruned copies as drawn and on multiples of 16 (fp32, 1 thread, batch 1)",
             "", "Written by `benchmarks/profile_regimes.py`: per copy, the same random shares with counts as drawn "
             "(align 1) or rounded down to multiples of 16. Profiled one after another (not interleaved).", "",
             "| network | model | seed | MACs ratio | profiled run (ms) | NCHWc Conv ms | "
             "unblocked Conv + FusedConv ms | Reorder ms | layers ms | rest ms |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ops = r["ms_by_op"]
        reorder = ops.get("ReorderInput", 0.0) + ops.get("ReorderOutput", 0.0)
        lines.append(f"| {r['arch']} | {r['model']} | {r['seed']} | {r['macs_ratio']:.3f} | {r['run_ms']:.2f} | "
                     f"{ops.get('Conv/nchwc', 0.0):.2f} | {ops.get('Conv', 0.0) + ops.get('FusedConv', 0.0):.2f} | "
                     f"{reorder:.2f} | "
                     f"{r['layers_ms']:.2f} | {r['rest_ms']:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["mobilenet_v2", "resnet18"])
    parser.add_argument("--copies", type=int, default=2)
    args = parser.parse_args()
    rows = [row for arch in args.cases for row in profile_case(arch, args.copies)]
    meta = {"host": platform.node(), "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": "benchmarks/profile_regimes.py " + " ".join(f"--{k} {v}" for k, v in vars(args).items())}
    (RESULTS / "profile_regimes.json").write_text(json.dumps({"rows": rows, **meta}, indent=1))
    lines = markdown(rows) + ["", f"Run {meta['date']} on {meta['host']}, onnxruntime {meta['onnxruntime']}."]
    (RESULTS / "profile_regimes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
