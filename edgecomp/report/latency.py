"""The latency target in the report: each step's budget, the plan's prediction (the MACs share) and the measurement,
and accuracy against measured latency, beside another run's steps (a MACs-targeted run's) when
`edgecomp report --beside` timed them on this run's target (latency/beside.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from .plots import _axes, _finish


def _budget_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r.get("latency_budget") is not None]


def _value(value: Optional[float], unit: str) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if unit == "fraction" else f"{value:.3f} ms"


def latency_section(rows: list[dict[str, Any]], figures: set[str],
                    beside: Optional[dict[str, Any]] = None) -> list[str]:
    steps = _budget_rows(rows)
    if not steps:
        return []
    unit, final = steps[-1]["latency_unit"], steps[-1]
    what = "fraction of the dense model's p50, both timed alternately in one loop" if unit == "fraction" \
        else "p50 in ms"
    verdict = "met" if final["budget_met"] else "NOT met (the fastest plan was kept)"
    # a fraction's range is over the paired per-round ratios; an absolute budget's is the p25-p75 of its rounds
    spread = "2.5–97.5% of paired rounds" if unit == "fraction" else "p25–p75 of rounds"
    spread += ", widest over its loops"
    lines = ["## Latency target", "",
             f"Budget as a {what}, on `{final['measured_on']}` ({final['latency_runtime']}, "
             f"{final['latency_threads']} thread(s), batch {final.get('latency_batch', 1)}). Final step: {verdict}.", "",
             f"| step | budget | predicted | measured [{spread}] | p50 (ms) | dense p50 (ms) | plans | met | "
             "in band |", "|---:|---:|---:|---:|---:|---:|---:|:--|:--|"]
    for row in steps:
        spread = ""
        if row.get("measured_latency_low") is not None:
            spread = f" [{row['measured_latency_low']:.3f}–{row['measured_latency_high']:.3f}]"
        lines.append(f"| {row['step']} | {_value(row['latency_budget'], unit)} | "
                     f"{_value(row['predicted_latency'], unit)} | {_value(row['measured_latency'], unit)}{spread} | "
                     f"{row['measured_p50_ms']:.3f} | {row['dense_p50_ms'] or 0:.3f} | "
                     f"{len(row['latency_attempts'])} | {'yes' if row['budget_met'] else 'no'} | "
                     f"{_in_band(row)} |")
    lines.append("")
    if beside:
        lines += _beside_lines(beside)
    if "latency_target.png" in figures:
        lines += ["![accuracy vs measured latency](latency_target.png)", ""]
    return lines


def _in_band(row: dict[str, Any]) -> str:
    """Whether the kept plan also sits within the tolerance under the budget (rows before this field: –)."""
    return "–" if row.get("budget_in_band") is None else ("yes" if row["budget_in_band"] else "no")


def _beside_lines(beside: dict[str, Any]) -> list[str]:
    lines = [f"Beside it, run `{beside['name']}` ({beside['target_kind']} target, `{beside['run']}`): its steps "
             f"timed on the same target beside its own dense model ({beside['rounds']} alternating rounds, "
             f"{beside['date']}; `edgecomp report --beside`).", "",
             "| step | MACs ratio | measured latency [2.5–97.5% of paired rounds] | val accuracy |",
             "|---:|---:|---:|---:|"]
    for row in beside["steps"]:
        lines.append(f"| {row['step']} | {row['macs_ratio']:.3f} | {row['measured_latency']:.3f} "
                     f"[{row['measured_latency_low']:.3f}–{row['measured_latency_high']:.3f}] | "
                     f"{row['accuracy']:.4f} |")
    return lines + [""]


def plot_latency_target(rows: list[dict[str, Any]], path: Path, beside: Optional[dict[str, Any]] = None) -> bool:
    """Validation accuracy against measured latency (fraction of dense) per step; another run's steps timed on
    the same target (`report --beside`), when there are any, at their own measured latency."""
    steps = [r for r in _budget_rows(rows) if r["latency_unit"] == "fraction"]
    if not steps:
        return False
    fig, ax = _axes()
    dense = rows[0]
    ax.plot([1.0] + [r["measured_latency"] for r in steps], [dense["accuracy"]] + [r["accuracy"] for r in steps],
            "o-", label="latency target (measured)")
    ax.plot([r["predicted_latency"] for r in steps], [r["accuracy"] for r in steps], "x", color="tab:gray",
            label="plan's prediction (MACs share)")
    for row in steps:
        ax.axvline(row["latency_budget"], color="tab:red", alpha=0.2)
    if beside:
        other = beside["steps"]
        ax.plot([1.0] + [r["measured_latency"] for r in other],
                [beside["dense_accuracy"]] + [r["accuracy"] for r in other],
                "s--", label=f"{beside['name']}: {beside['target_kind']} target (measured)")
    ax.set_xlabel("latency, fraction of the dense model's p50 (red: budgets)")
    ax.set_ylabel("top-1 accuracy on validation images (fraction)")
    ax.set_title("accuracy vs measured latency (per step)")
    return _finish(fig, ax, path)
