"""The page of benchmarks/small_model.py's fine-tuning cells: paired differences by seed, 95% t intervals.

    .venv/bin/python benchmarks/small_model_page.py

Writes benchmarks/results/small_model.md and .json. For each cell set, architecture group (the budget or size
a set's architectures share) and arm against the set's baseline arm: the mean over the seeds both have of the
difference in final validation accuracy (which decides, PLAN.md) and in test accuracy (reported), with Student's
t interval over the seeds; the mean validation curve per arm shows the plateau.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from paired_stats import paired_difference  # noqa: E402

CELLS = HERE / "results" / "small_model" / "cells"
AGAINST = {"planners": [("model", "aligned"), ("model", "control")]}


def load() -> dict[str, dict[str, dict[str, dict[int, dict]]]]:
    """set -> group (budget) -> arm -> seed -> cell."""
    tree: dict = {}
    for path in sorted(CELLS.glob("*.json")):
        cell = json.loads(path.read_text())
        group = cell["arch"].rsplit("_", 1)[-1]
        tree.setdefault(cell["cells"], {}).setdefault(group, {}).setdefault(cell["arm"], {})[cell["seed"]] = cell
    return tree


def write_page() -> None:
    tree, lines, record = load(), ["# Small models from the shipped ResNet-20 reference: fine-tuning at equal "
                                   "latency (benchmarks/small_model.py)", ""], []
    lines += ["Differences in accuracy points (×100), paired by seed, 95% t interval over the seeds both arms "
              "have; validation (5,000 images) decides, test (10,000) is reported. A cell is one fine-tune "
              "of 20 epochs from the same pruned weights; seeds change only the fine-tune's randomness.", ""]
    for cells, groups in sorted(tree.items()):
        lines += [f"## {cells}", "", "| budget | comparison | seeds | validation Δ [95%] | test Δ [95%] |",
                  "|---:|---|---:|---:|---:|"]
        for group, arms in sorted(groups.items(), key=lambda item: -float(item[0])):
            for a, b in AGAINST.get(cells, []):
                if a not in arms or b not in arms or not set(arms[a]) & set(arms[b]):
                    continue
                val = paired_difference({s: c["val_accuracy"] * 100 for s, c in arms[a].items()},
                                        {s: c["val_accuracy"] * 100 for s, c in arms[b].items()})
                test = paired_difference({s: c["test_accuracy"] * 100 for s, c in arms[a].items()},
                                         {s: c["test_accuracy"] * 100 for s, c in arms[b].items()})
                lines.append(f"| {group} | {a} − {b} | {val.n} | {val.mean:+.2f} [{val.low:+.2f}, {val.high:+.2f}] "
                             f"| {test.mean:+.2f} [{test.low:+.2f}, {test.high:+.2f}] |")
                record.append({"cells": cells, "group": group, "a": a, "b": b, "val": val.as_dict(),
                               "test": test.as_dict()})
        lines += ["", "| budget | arm | seeds | validation | test | mean validation curve (every 4th epoch, "
                  "last) | minutes a cell |", "|---:|---|---:|---:|---:|---|---:|"]
        for group, arms in sorted(groups.items(), key=lambda item: -float(item[0])):
            for arm, seeds in sorted(arms.items()):
                runs = list(seeds.values())
                curve = [statistics.fmean(c["val_curve"][e] for c in runs) * 100 for e in range(len(runs[0]["val_curve"]))]
                shown = ", ".join(f"{v:.2f}" for v in curve[3::4]) + (f", {curve[-1]:.2f}" if len(curve) % 4 else "")
                lines.append(f"| {group} | {arm} | {len(runs)} | "
                             f"{statistics.fmean(c['val_accuracy'] for c in runs) * 100:.2f} | "
                             f"{statistics.fmean(c['test_accuracy'] for c in runs) * 100:.2f} | {shown} | "
                             f"{statistics.fmean(c['seconds'] for c in runs) / 60:.1f} |")
        lines.append("")
    (HERE / "results" / "small_model.md").write_text("\n".join(lines) + "\n")
    (HERE / "results" / "small_model.json").write_text(json.dumps(record, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    write_page()
