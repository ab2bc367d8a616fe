"""How much does onnxruntime's session profiling slow a run, against the same model timed whole? (issue 21)

    .venv/bin/python benchmarks/profiling_overhead.py [--cases cifar_resnet20:28 resnet18:224]

The latency model is fitted on per-layer times from onnxruntime's session profiling (`Profiler.observe`). Per
case (random weights, onnxruntime fp32, 1 thread, batch 1): the dense network profiled as the latency model
profiles it (30 runs, the profile's own wall time per run), a latency model fitted on it and 5 random-width
copies, and the dense network timed whole, unprofiled (`compare.py`, 100 rounds). Reported: the profiled wall
ms, the whole p50 ms, their ratio, and the sum of the fitted per-layer intercepts (the part of the table that no
channel count changes). Results: benchmarks/results/profiling_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


from edgecomp.compression.latency_prune import build_table
from edgecomp.core.recipe import PruneSection
from edgecomp.deploy.latency import channel_counts
from edgecomp.deploy.latency.profiles import Profiler, ProfileSettings
from edgecomp.deploy.runners import HostRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_alignment import network, run_record  # noqa: E402 - the same networks, built the same way

HERE = Path(__file__).resolve().parent


def run_case(arch: str, size: int) -> dict:
    dense, example = network(arch, size)
    shape = tuple(example.shape[1:])
    settings = ProfileSettings(device="host", runtime="onnxruntime", threads=1, iterations=30)
    cfg = PruneSection(target={"latency": 0.5})
    with HostRunner() as runner:
        profiler = Profiler(runner, settings, shape)
        table, _ = build_table(dense, example, cfg, 10, settings.key(shape, arch), profiler.observe, 6, 0)
        whole = profiler.compare([dense], iterations=100)["models"][0]["p50"]
    profiled = table.observations[0]
    counts = {n: c for n, c in channel_counts(dense).items() if n in table.layers}
    case = {"arch": arch, "input": list(shape), "profiled_wall_ms": profiled.wall_ms,
            "profiled_run_ms": profiled.run_ms, "whole_p50_ms": whole, "profiled_over_whole": profiled.wall_ms / whole,
            "intercepts_ms": sum(fit.intercept for fit in table.fits.values()),
            "table_dense_ms": table.predict(counts), "layers": len(table.layers)}
    print(json.dumps(case), flush=True)
    return case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["cifar_resnet20:28", "resnet18:224"])
    args = parser.parse_args()
    cases = [run_case(arch, int(size)) for arch, size in (c.split(":") for c in args.cases)]
    record = {"cases": cases, **run_record("profiling_overhead.py")}
    (HERE / "results" / "profiling_overhead.json").write_text(json.dumps(record, indent=1))
    lines = ["# onnxruntime session profiling against a whole, unprofiled run (fp32, 1 thread, batch 1)", "",
             f"Written by `{record['command'].strip()}` on {record['date']}.", "",
             "| network | input | layers priced | profiled wall (ms) | whole p50 (ms) | profiled ÷ whole | "
             "sum of fitted intercepts (ms) | table's dense prediction (ms) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for c in cases:
        lines.append(f"| {c['arch']} | {'x'.join(map(str, c['input']))} | {c['layers']} | "
                     f"{c['profiled_wall_ms']:.3f} | {c['whole_p50_ms']:.3f} | {c['profiled_over_whole']:.2f} | "
                     f"{c['intercepts_ms']:.3f} | {c['table_dense_ms']:.3f} |")
    (HERE / "results" / "profiling_overhead.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
