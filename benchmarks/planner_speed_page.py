"""The page of benchmarks/archive/planner_speed.py's cells and the verdict of PLAN.md's issue-32 speed rule.

    .venv/bin/python benchmarks/planner_speed_page.py

Writes benchmarks/results/planner_speed.md and .json from benchmarks/results/planner_speed/*.json. Per cell
(network x budget, the seeds averaged): g = MACs `model` kept / MACs the aligned curve keeps at `model`'s measured
latency - 1. The rule: `model` keeps more MACs at equal latency when the mean of g over the cells has a 95% t
interval above 0 (and no more than 4 cells extrapolated).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from paired_stats import mean_interval  # noqa: E402

CELLS = HERE / "results" / "planner_speed"
MAX_EXTRAPOLATED = 4


def cells() -> dict[tuple[str, str], list[dict]]:
    """(network, budget) -> the seeds' budget summaries, each with its cell's seed and block."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(CELLS.glob("*.json")):
        cell = json.loads(path.read_text())
        for budget, summary in cell["budgets"].items():
            grouped.setdefault((cell["arch"], budget), []).append(
                {**summary, "seed": cell["seed"], "block": cell["block"],
                 "nudges": [cell["loops"][f"{planner}_{budget}"]["nudges"] for planner in ("model", "aligned")]})
    return grouped


def verdict(gains: list[float], extrapolated: int) -> tuple[str, tuple[float, float, float]]:
    mean, low, high = mean_interval(gains)
    if extrapolated > MAX_EXTRAPOLATED:
        return "not decided (too many cells extrapolated)", (mean, low, high)
    if low > 0:
        return "passes: `model` keeps more MACs at equal latency", (mean, low, high)
    if high < 0:
        return "fails: `aligned` keeps more MACs at equal latency", (mean, low, high)
    return "fails: no difference shown", (mean, low, high)


def main() -> None:
    grouped = cells()
    rows, gains, extrapolated = [], [], 0
    for (arch, budget), seeds in sorted(grouped.items(), key=lambda item: (item[0][0], -float(item[0][1]))):
        gain = statistics.fmean(s["macs_gain"] for s in seeds)
        outside = sum(s["extrapolated"] for s in seeds)
        gains.append(gain)
        extrapolated += outside > 0
        rows.append({"arch": arch, "budget": float(budget), "seeds": [s["seed"] for s in seeds], "macs_gain": gain,
                     "per_seed": [s["macs_gain"] for s in seeds],
                     "latency_at_equal_macs": statistics.fmean(s["latency_at_equal_macs"] for s in seeds),
                     "model_latency": statistics.fmean(s["model_latency"] for s in seeds),
                     "aligned_latency": statistics.fmean(s["aligned_latency"] for s in seeds),
                     "model_macs": statistics.fmean(s["model_macs"] for s in seeds),
                     "aligned_macs": statistics.fmean(s["aligned_macs_at_model_latency"] for s in seeds),
                     "params_ratio": statistics.fmean(s["model_params"] / s["aligned_params"] for s in seeds),
                     "extrapolated": outside, "both_in_band": sum(s["both_in_band"] for s in seeds),
                     "blocks": sorted({s["block"] for s in seeds}),
                     "nudges": [sum(s["nudges"][i] for s in seeds) for i in (0, 1)]})
    words, (mean, low, high) = verdict(gains, extrapolated)
    summary = {"cells": len(rows), "mean_gain": mean, "low": low, "high": high, "verdict": words,
               "cells_model_ahead": sum(g > 0 for g in gains), "extrapolated_cells": extrapolated, "rows": rows}
    (HERE / "results" / "planner_speed.json").write_text(json.dumps(summary, indent=1))
    lines = [
        "# The latency planners at matched latency (onnxruntime fp32, 1 thread, batch 1, this host)", "",
        "Written by `benchmarks/planner_speed_page.py` from the cells of `benchmarks/archive/planner_speed.py` (random "
        "weights, two seeds per network, final timing one loop of 300 rounds, order shuffled each round). "
        "MACs gain: the MACs share `model` kept over the share the aligned curve keeps at `model`'s measured "
        "latency, minus 1 (positive: `model` keeps more at the same latency). Latency at equal MACs: `model`'s "
        "latency over aligned Torch-Pruning's at `model`'s MACs, minus 1 (negative: `model` is faster).", "",
        f"**Rule (PLAN.md, issue 32 speed): {words}.** Mean MACs gain over {len(rows)} cells {mean:+.3f} "
        f"[{low:+.3f}, {high:+.3f}] (95% t); `model` ahead in {summary['cells_model_ahead']} of {len(rows)} "
        f"cells; {extrapolated} cell(s) read outside the aligned curve's points.", "",
        "| network | budget | MACs gain (per seed) | latency at equal MACs | model / aligned latency | MACs kept "
        "(model, aligned at its latency) | params model ÷ aligned | both in band | block | nudged plans (model, "
        "aligned) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        per_seed = ", ".join(f"{g:+.3f}" for g in r["per_seed"])
        lines.append(f"| {r['arch']} | {r['budget']:.2f} | {r['macs_gain']:+.3f} ({per_seed}) | "
                     f"{r['latency_at_equal_macs']:+.3f} | {r['model_latency']:.3f} / {r['aligned_latency']:.3f} | "
                     f"{r['model_macs']:.3f}, {r['aligned_macs']:.3f} | {r['params_ratio']:.2f} | "
                     f"{r['both_in_band']}/{len(r['seeds'])} | {'/'.join(map(str, r['blocks']))} | "
                     f"{r['nudges'][0]}, {r['nudges'][1]} |")
    (HERE / "results" / "planner_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
