"""What the issue-21 pages read off a `latency_pruning.py` cell file: its label and its first plan's miss.

Kept free of torch and onnxruntime so the page scripts (results_page.py, latency_rule_page.py,
latency_calibration_page.py) import it without the runtime latency_pruning.py needs.
"""

from __future__ import annotations


def label(cell: dict) -> str:
    """The network, and the latency model's settings where they are not the default of the day the cell ran
    (the widths are named unless drawn: cells from before `probed` became the default have none)."""
    model = cell.get("latency_model", {})
    calibration, max_step = model.get("calibration", 0), model.get("max_step")
    extra = ([f"calibration {calibration}"] if calibration else []) + ([f"max_step {max_step}"] if max_step else []) \
        + ([f"{model['widths']} widths"] if model.get("widths", "drawn") != "drawn" else []) \
        + (["steps probed"] if model.get("probe") else []) + (["no nudge"] if model.get("nudge") is False else [])
    return cell["arch"] + (f" ({', '.join(extra)})" if extra else "")


def first_miss(cell: dict) -> float:
    """How far the closed loop's first plan measured from the budget, as a share of it."""
    return abs(cell["latency"]["loop_attempts"][0]["measured"] - cell["budget"]) / cell["budget"]
