"""How far apart are two separate timing loops of the same pair of models? (the closed loop's noise, issue 21)

    .venv/bin/python benchmarks/loop_repeatability.py [--cases cifar_resnet20:28 mobilenet_v2:224] [--loops 6]

The closed loop accepts a plan when its latency, a ratio to the dense model timed alternately in one loop
(`compare.py`, 100 rounds), lands in [0.95, 1] of the budget. Within one loop the ratio's p50 is tight; this
measures what a second loop of the same two models reads. Per case: the dense network (random weights) and a
copy pruned by Torch-Pruning to 30% of its MACs (round_to 8), timed in `--loops` separate loops of two models
(dense, pruned) alternating with as many loops of three (dense, pruned, and a second copy at 27% with l1
ranking: the final timing of `latency_pruning.py` has three), onnxruntime fp32, 1 thread, batch 1.
Reported: each loop's p50 ratio, and over the loops their mean, standard deviation and coefficient of
variation. Results: benchmarks/results/loop_repeatability.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch

from edgecomp.compression.prune import prune_to
from edgecomp.core.models import Size, measure_size
from edgecomp.core.recipe import PruneSection
from edgecomp.deploy.latency import Timer, TimingSettings
from edgecomp.deploy.runners import HostRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_alignment import network, run_record  # noqa: E402 - the same networks, built the same way

HERE = Path(__file__).resolve().parent
ROUNDS = 100


def pruned(dense: torch.nn.Module, example: torch.Tensor, share: float, importance: str) -> torch.nn.Module:
    model = copy.deepcopy(dense)
    dense_macs = measure_size(dense, example).macs
    cfg = PruneSection(target={"macs": share}, round_to=8, importance=importance)
    prune_to(model, example, cfg, Size(int(dense_macs * share), 0), 10)
    return model


def spread(values: list[float]) -> dict:
    mean, sd = statistics.mean(values), statistics.stdev(values)
    return {"loops": values, "mean": mean, "sd": sd, "cv": sd / mean}


def run_case(arch: str, size: int, loops: int) -> dict:
    dense, example = network(arch, size)
    first, second = pruned(dense, example, 0.30, "l2"), pruned(dense, example, 0.27, "l1")
    pairs, trios = [], []
    with HostRunner() as runner:
        profiler = Timer(runner, TimingSettings(device="host", runtime="onnxruntime"), tuple(example.shape[1:]))
        for _ in range(loops):
            pairs.append(profiler.compare([dense, first], iterations=ROUNDS)["ratios"][1]["p50"])
            trios.append(profiler.compare([dense, first, second], iterations=ROUNDS)["ratios"][1]["p50"])
            print(f"{arch} {size} px: pair {pairs[-1]:.4f}, trio {trios[-1]:.4f}", flush=True)
    return {"arch": arch, "input": list(example.shape[1:]), "rounds": ROUNDS, "pair": spread(pairs),
            "trio": spread(trios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["cifar_resnet20:28", "mobilenet_v2:224"])
    parser.add_argument("--loops", type=int, default=6)
    args = parser.parse_args()
    cases = []
    for case in args.cases:
        arch, size = case.split(":")
        cases.append(run_case(arch, int(size), args.loops))
    record = {"cases": cases, **run_record("loop_repeatability.py")}
    (HERE / "results" / "loop_repeatability.json").write_text(json.dumps(record, indent=1))
    lines = ["# Two separate timing loops of the same models (onnxruntime fp32, 1 thread, batch 1)", "",
             f"Written by `{record['command'].strip()}` on {record['date']}: the p50 ratio of a copy pruned to "
             f"30% of the MACs to the dense model, in separate loops of {ROUNDS} alternating rounds; `pair` "
             "loops time (dense, pruned), `trio` loops add a third model.", "",
             "| network | input | loop | p50 ratio per loop | mean | sd | CV |", "|---|---|---|---|---:|---:|---:|"]
    for case in cases:
        for kind in ("pair", "trio"):
            s = case[kind]
            lines.append(f"| {case['arch']} | {'x'.join(map(str, case['input']))} | {kind} | "
                         + ", ".join(f"{v:.3f}" for v in s["loops"])
                         + f" | {s['mean']:.3f} | {s['sd']:.3f} | {s['cv']:.1%} |")
    (HERE / "results" / "loop_repeatability.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
