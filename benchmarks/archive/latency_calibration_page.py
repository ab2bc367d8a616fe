"""The calibration confirmation's verdict (benchmarks/PLAN.md, issue 21 calibration sections), from the cell files.

    .venv/bin/python benchmarks/latency_calibration_page.py

Repeats: 0 = the first pair (calibration off: archive/results/latency_pruning_run4/ at 224 px and the `_cal0`
cells of results/latency_pruning/ at 28 px; on: the other cells of results/latency_pruning/), 1 and 2 =
results/latency_calibration/r<k>/cal<n>/ (run by `latency_pruning.py --calibration n --out ...`).
The rule: primary, among the 224-px cell-runs calibration on has at least as many final ratios within 5% of
the budget as calibration off; secondary, the median first-plan miss over all cell-runs is lower with it on.
Writes results/latency_calibration.{json,md}.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from latency_cells import first_miss

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
AT_224 = ("resnet18", "mobilenet_v2")


def read(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]


def repeats() -> dict[tuple[int, int], list[dict]]:
    """(repeat, calibration) -> cells. Repeat 0 is the rule's first run, in results/latency_pruning/ beside
    cells of later settings (profiles on the probed step), which it leaves out."""
    first = [c for c in read(RESULTS / "latency_pruning") if c["latency_model"].get("widths", "drawn") == "drawn"]
    runs = {(0, 0): read(HERE / "archive" / "results" / "latency_pruning_run4")
            + [c for c in first if c["latency_model"].get("calibration", 0) == 0],
            (0, 3): [c for c in first if c["latency_model"].get("calibration", 0) == 3]}
    for repeat in (1, 2):
        for calibration in (0, 3):
            runs[(repeat, calibration)] = read(RESULTS / "latency_calibration" / f"r{repeat}" / f"cal{calibration}")
    return runs


def row(repeat: int, calibration: int, cell: dict) -> dict:
    lat, tp = cell["latency"], cell["tp_macs"]
    return {"repeat": repeat, "calibration": calibration, "arch": cell["arch"], "budget": cell["budget"],
            "ratio": lat["ratio_p50"], "within_5pct": lat["within_5pct"], "first_miss": first_miss(cell),
            "plans": len(lat["loop_attempts"]), "tp_ratio": tp["ratio_p50"],
            "minus_tp": lat["ratio_p50"] - tp["ratio_p50"]}


def main() -> None:
    rows = [row(r, c, cell) for (r, c), cells in sorted(repeats().items()) for cell in cells]
    verdict = {}
    for calibration in (0, 3):
        mine = [r for r in rows if r["calibration"] == calibration]
        wide = [r for r in mine if r["arch"] in AT_224]
        verdict[calibration] = {"cell_runs": len(mine), "cell_runs_224": len(wide),
                                "within_5pct_224": sum(r["within_5pct"] for r in wide),
                                "median_first_miss": statistics.median(r["first_miss"] for r in mine)}
    off, on = verdict[0], verdict[3]
    primary = on["within_5pct_224"] >= off["within_5pct_224"]
    secondary = on["median_first_miss"] < off["median_first_miss"]
    decision = "the default becomes 3" if primary and secondary else "the default stays 0"
    (RESULTS / "latency_calibration.json").write_text(json.dumps(
        {"rows": rows, "verdict": verdict, "primary": primary, "secondary": secondary, "decision": decision},
        indent=1))
    lines = ["# The latency model's calibration, off (0) against on (3): paired repeats", "",
             "Written by `benchmarks/latency_calibration_page.py` from the cell files; the rule is in "
             "`benchmarks/PLAN.md` (issue 21 calibration sections), registered before the repeats ran.", "",
             "| calibration | cell-runs | 224-px cell-runs within 5% | median first-plan miss |",
             "|---:|---:|---:|---:|"]
    for calibration in (0, 3):
        v = verdict[calibration]
        lines.append(f"| {calibration} | {v['cell_runs']} | {v['within_5pct_224']} of {v['cell_runs_224']} | "
                     f"{v['median_first_miss']:.1%} |")
    lines += ["", f"Primary (on within 5% at least as often as off, 224 px): {'holds' if primary else 'fails'}. "
              f"Secondary (median first-plan miss lower on): {'holds' if secondary else 'fails'}. "
              f"So {decision}.", "",
              "| network | budget | repeat | calibration | final ratio | within 5% | first-plan miss | plans | "
              "tp_macs ratio | latency − tp_macs |", "|---|---:|---:|---:|---:|:--|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["arch"], r["budget"], r["repeat"], r["calibration"])):
        lines.append(f"| {r['arch']} | {r['budget']:.2f} | {r['repeat']} | {r['calibration']} | {r['ratio']:.3f} | "
                     f"{'yes' if r['within_5pct'] else 'no'} | {r['first_miss']:.1%} | {r['plans']} | "
                     f"{r['tp_ratio']:.3f} | {r['minus_tp']:+.3f} |")
    (RESULTS / "latency_calibration.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
