"""The page of benchmarks/small_model.py's fine-tuning cells: paired differences by seed, 95% t intervals.

    .venv/bin/python benchmarks/small_model_page.py

Writes benchmarks/results/small_model.md and .json. For each architecture (the budget it was pruned for) and arm
against `plain`: the mean over the seeds both have of the difference in final validation accuracy (which decides,
PLAN.md) and in test accuracy (reported), with Student's t interval over the seeds; the mean validation curve
per arm shows the plateau.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from paired_stats import paired_difference  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

CELLS = HERE / "results" / "small_model" / "cells"
FIRST_SEEDS, HALF_WIDTH, MAX_SEEDS = 6, 0.5, 10  # PLAN.md: more seeds if six give a half-width over 0.5
AGAINST = [("kd", "plain"), ("magnitude", "plain"), ("rep", "plain"), ("kd_rep", "plain")]  # issue 35's arms


def load() -> dict[str, dict[str, dict[int, dict]]]:
    """group (the budget an architecture was pruned for) -> arm -> seed -> cell."""
    tree: dict = {}
    for path in sorted(CELLS.glob("*.json")):
        cell = json.loads(path.read_text())
        tree.setdefault(cell["arch"].rsplit("_", 1)[-1], {}).setdefault(cell["arm"], {})[cell["seed"]] = cell
    return tree


def seeds_needed(val: dict) -> int:
    """PLAN.md, issue 35: six seeds; if the first six seeds' 95% half-width is above 0.5 points,
    n = ceil((t sd / 0.5)^2) seeds from their spread (t at 5 degrees of freedom), capped at 10. Fixed once the
    first six are in, so later seeds cannot end the wait early."""
    first = val["differences"][:FIRST_SEEDS]
    if len(first) < FIRST_SEEDS:
        return FIRST_SEEDS
    spread = scipy_stats.t.ppf(0.975, FIRST_SEEDS - 1) * statistics.stdev(first)
    return min(MAX_SEEDS, max(FIRST_SEEDS, math.ceil((spread / HALF_WIDTH) ** 2)))


def verdict(rows: list[dict]) -> str:
    """PLAN.md, issue 35: an arm is shown when its validation interval against plain is above zero at both sizes,
    once each size has the seeds the rule asks for."""
    if len(rows) < 2:
        return "pending (one size only)"
    short = [r for r in rows if r["val"]["n"] < seeds_needed(r["val"])]
    if short:
        return "pending (" + ", ".join(f"{r['group']}: {r['val']['n']} of {seeds_needed(r['val'])} seeds"
                                       for r in short) + ")"
    return "shown" if all(r["val"]["low"] > 0 for r in rows) else "not shown"


def write_page() -> None:
    tree, record = load(), []
    lines = ["# Small models from the shipped ResNet-20 reference: training arms on one pruned network "
             "(benchmarks/small_model.py)", "",
             "Differences in accuracy points (×100) against `plain` (crop + flip, cross-entropy), paired by seed, "
             "95% t interval over the seeds both arms have; validation (5,000 images, the folded model after the "
             "last epoch) decides, test (10,000) is reported. Every arm at a size fine-tunes the same pruned "
             "weights for 20 epochs; seeds change only the fine-tune's randomness.", "",
             "| arm | budget (MACs share) | seeds | validation Δ [95%] | test Δ [95%] | verdict |",
             "|---|---:|---:|---:|---:|---|"]
    for a, b in AGAINST:
        rows = []
        for group, arms in sorted(tree.items(), key=lambda item: -float(item[0])):
            if a not in arms or b not in arms or not set(arms[a]) & set(arms[b]):
                continue
            val = paired_difference({s: c["val_accuracy"] * 100 for s, c in arms[a].items()},
                                    {s: c["val_accuracy"] * 100 for s, c in arms[b].items()})
            test = paired_difference({s: c["test_accuracy"] * 100 for s, c in arms[a].items()},
                                     {s: c["test_accuracy"] * 100 for s, c in arms[b].items()})
            share = next(iter(arms[a].values()))["macs_ratio"]
            rows.append({"arm": a, "against": b, "group": group, "macs_ratio": share, "val": val.as_dict(),
                         "test": test.as_dict()})
        words = verdict(rows)
        for row in rows:
            val, test = row["val"], row["test"]
            lines.append(f"| {a} | {row['group']} ({row['macs_ratio']:.3f}) | {val['n']} | {val['mean']:+.2f} "
                         f"[{val['low']:+.2f}, {val['high']:+.2f}] | {test['mean']:+.2f} [{test['low']:+.2f}, "
                         f"{test['high']:+.2f}] | {words} |")
            record.append({**row, "verdict": words})
    lines += ["", "| budget | arm | seeds | validation | test | mean validation curve (every 4th epoch) | "
              "minutes a cell |", "|---:|---|---:|---:|---:|---|---:|"]
    for group, arms in sorted(tree.items(), key=lambda item: -float(item[0])):
        for arm, seeds in sorted(arms.items()):
            runs = list(seeds.values())
            epochs = len(runs[0]["val_curve"])
            curve = [statistics.fmean(c["val_curve"][e] for c in runs) * 100 for e in range(epochs)]
            lines.append(f"| {group} | {arm} | {len(runs)} | "
                         f"{statistics.fmean(c['val_accuracy'] for c in runs) * 100:.2f} | "
                         f"{statistics.fmean(c['test_accuracy'] for c in runs) * 100:.2f} | "
                         + ", ".join(f"{v:.2f}" for v in curve[3::4]) + " | "
                         f"{statistics.fmean(c['seconds'] for c in runs) / 60:.1f} |")
    (HERE / "results" / "small_model.md").write_text("\n".join(lines) + "\n")
    (HERE / "results" / "small_model.json").write_text(json.dumps(record, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    write_page()
