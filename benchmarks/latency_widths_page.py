"""The profile-widths rule's verdict (benchmarks/PLAN.md, "profiles on mixed alignments"), from the cell files.

    .venv/bin/python benchmarks/latency_widths_page.py

Cells: results/latency_widths/r<k>/<widths>/ (run by `latency_pruning.py --widths W --out ...`, 3 repeats).
Per cell-run d = tp_macs ratio - latency ratio in the final loop (how much of the dense latency the latency
model saves against Torch-Pruning at the same MACs). The rule, over the 224-px cell-runs: the default becomes
"mixed" if the mean d is higher with mixed than with drawn and mixed has at least as many final ratios within
5% under the budget; otherwise it stays "drawn". Writes results/latency_widths.{json,md}.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from paired_stats import paired_difference

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
CELLS = RESULTS / "latency_widths"
AT_224 = ("resnet18", "mobilenet_v2")
WIDTHS = ("drawn", "mixed")


def first_miss(cell: dict) -> float:
    return abs(cell["latency"]["loop_attempts"][0]["measured"] - cell["budget"]) / cell["budget"]


def rows() -> list[dict]:
    found = []
    for path in sorted(CELLS.glob("r*/*/*.json")):
        cell, repeat, widths = json.loads(path.read_text()), int(path.parent.parent.name[1:]), path.parent.name
        lat, tp = cell["latency"], cell["tp_macs"]
        found.append({"repeat": repeat, "widths": widths, "arch": cell["arch"], "budget": cell["budget"],
                      "ratio": lat["ratio_p50"], "within_5pct": lat["within_5pct"], "macs_ratio": lat["macs_ratio"],
                      "tp_ratio": tp["ratio_p50"], "d": tp["ratio_p50"] - lat["ratio_p50"],
                      "speedup_per_macs": lat["speedup_per_macs_reduction"], "first_miss": first_miss(cell),
                      "plans": len(lat["loop_attempts"]), "steps": cell["latency_model"]["steps"],
                      "profile_seconds": cell["latency_model"]["profile_seconds"]})
    return found


def verdict(found: list[dict]) -> dict:
    wide = [r for r in found if r["arch"] in AT_224]
    by = {w: {(r["repeat"], r["arch"], r["budget"]): r for r in wide if r["widths"] == w} for w in WIDTHS}
    diff = paired_difference({k: r["d"] for k, r in by["mixed"].items()}, {k: r["d"] for k, r in by["drawn"].items()})
    per = {w: {"cell_runs_224": len(by[w]), "mean_d": statistics.fmean(r["d"] for r in by[w].values()),
               "within_5pct_224": sum(r["within_5pct"] for r in by[w].values()),
               "median_first_miss": statistics.median(r["first_miss"] for r in by[w].values())} for w in WIDTHS}
    higher = per["mixed"]["mean_d"] > per["drawn"]["mean_d"]
    band = per["mixed"]["within_5pct_224"] >= per["drawn"]["within_5pct_224"]
    repeatable = {}
    for w in WIDTHS:
        for arch in sorted({r["arch"] for r in found}):
            seen = {json.dumps(r["steps"], sort_keys=True) for r in found if r["widths"] == w and r["arch"] == arch}
            repeatable[f"{arch} {w}"] = len(seen) == 1
    return {"per_widths": per, "mixed_minus_drawn_d": {"mean": diff.mean, "low": diff.low, "high": diff.high,
                                                         "pairs": diff.n},
            "mean_d_higher": higher, "band_not_worse": band, "steps_repeatable": repeatable,
            "decision": "the default becomes mixed" if higher and band else "the default stays drawn"}


def markdown(found: list[dict], result: dict) -> list[str]:
    per, diff = result["per_widths"], result["mixed_minus_drawn_d"]
    lines = ["# The latency model's profiled copies: counts as drawn against counts on mixed alignments", "",
             "Written by `benchmarks/latency_widths_page.py` from the cell files; the rule is in `benchmarks/PLAN.md` "
             "(issue 21, \"profiles on mixed alignments\"), registered before the repeats ran. d = tp_macs ratio − "
             "latency ratio in the final loop: the share of the dense latency the latency model saves against "
             "Torch-Pruning at the same MACs (higher is better).", "",
             "| widths | 224-px cell-runs | mean d | within 5% | median first-plan miss |", "|---|---:|---:|---:|---:|"]
    for w in WIDTHS:
        v = per[w]
        lines.append(f"| {w} | {v['cell_runs_224']} | {v['mean_d']:+.3f} | {v['within_5pct_224']} of "
                     f"{v['cell_runs_224']} | {v['median_first_miss']:.1%} |")
    lines += ["", f"Mixed − drawn, mean d paired by repeat and cell: {diff['mean']:+.3f} [{diff['low']:+.3f}, "
              f"{diff['high']:+.3f}] (95% t-interval, {diff['pairs']} pairs). Mean d higher with mixed: "
              f"{'yes' if result['mean_d_higher'] else 'no'}; within 5% at least as often: "
              f"{'yes' if result['band_not_worse'] else 'no'}. So {result['decision']}.", "",
              "Steps found the same in every repeat: " + ", ".join(
                  f"{k} {'yes' if v else 'no'}" for k, v in result["steps_repeatable"].items()) + ".", "",
              "| network | budget | repeat | widths | final ratio | within 5% | MACs ratio | tp_macs ratio | d | "
              "speed-up ÷ MACs | first-plan miss | plans | channel steps |",
              "|---|---:|---:|---|---:|:--|---:|---:|---:|---:|---:|---:|---|"]
    for r in sorted(found, key=lambda r: (r["arch"], r["budget"], r["repeat"], r["widths"])):
        steps = ", ".join(f"{k} {v}" for k, v in r["steps"].items())
        lines.append(f"| {r['arch']} | {r['budget']:.2f} | {r['repeat']} | {r['widths']} | {r['ratio']:.3f} | "
                     f"{'yes' if r['within_5pct'] else 'no'} | {r['macs_ratio']:.3f} | {r['tp_ratio']:.3f} | "
                     f"{r['d']:+.3f} | {r['speedup_per_macs']:.2f} | {r['first_miss']:.1%} | {r['plans']} | "
                     f"{steps} |")
    return lines


def main() -> None:
    found = rows()
    result = verdict(found)
    (RESULTS / "latency_widths.json").write_text(json.dumps({"rows": found, **result}, indent=1))
    lines = markdown(found, result)
    (RESULTS / "latency_widths.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
