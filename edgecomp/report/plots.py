"""The report's figures: PNGs beside report.md, every axis labelled with its unit.

Each `plot_*` writes one file atomically and returns True, or returns False
(writing nothing) when the run directory holds nothing to plot yet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

ACCURACY_VAL = "top-1 accuracy on validation images (fraction)"


def _axes(width: float = 5.5, height: float = 3.8):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=120)


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure atomically (temporary name, then rename) and close it."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def _finish(fig, ax, path: Path, legend: bool = True) -> bool:
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)
    return True


def plot_pareto(rows: list[dict[str, Any]], path: Path) -> bool:
    fig, ax = _axes()
    macs = [r["macs"] / 1e6 for r in rows]
    tested = all(r.get("test_accuracy") is not None for r in rows)  # no held-out split: no test line at all
    labelled = "test_accuracy" if tested else "accuracy"
    if tested:
        ax.plot(macs, [r["test_accuracy"] for r in rows], "o-", label="test")
    ax.plot(macs, [r["accuracy"] for r in rows], "s--", alpha=0.6, label="val" if tested else "val (no test split)")
    for row, x in zip(rows, macs):
        ax.annotate(str(row["step"]), (x, row[labelled]), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("MACs per image (millions)")
    ax.set_ylabel("top-1 accuracy (fraction)")
    ax.set_title("accuracy vs MACs (label: step, 0 = dense)")
    return _finish(fig, ax, path)


def plot_magnitude(rows: list[dict[str, Any]], path: Path) -> bool:
    """The augmentation magnitude each step trained at, beside the size it trained; nothing when it never
    changed (policy none, a constant schedule): a flat line on an arbitrary axis says nothing."""
    if len({r["magnitude"] for r in rows}) < 2:
        return False
    fig, ax = _axes()
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["magnitude"] for r in rows], "o-", color="tab:blue", label="magnitude M")
    ax.set_xlabel("step (0 = dense)")
    ax.set_ylabel("RandAugment magnitude M (0–30)")
    ax.set_xticks(steps)
    ax.set_ylim(bottom=0)
    size = ax.twinx()
    size.plot(steps, [100 * r["macs_ratio"] for r in rows], "s--", color="tab:orange", label="MACs")
    size.set_ylabel("MACs (% of dense)")
    size.set_ylim(0, 105)
    ax.set_title("magnitude per step")
    lines = ax.get_lines() + size.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize="small", loc="lower left")
    return _finish(fig, ax, path, legend=False)


def plot_teacher_curves(rows: list[dict[str, Any]], path: Path) -> bool:
    calibrated = [r for r in rows if r.get("calibration")]
    if not calibrated:
        return False
    fig, ax = _axes()
    for row in calibrated:
        cal = row["calibration"]
        magnitudes = sorted(float(m) for m in cal["curve"])
        line, = ax.plot(magnitudes, [cal["curve"][str(m)] for m in magnitudes], "o-", label=f"step {row['step']}")
        ax.axhline(cal["target_fraction"] * cal["clean_accuracy"], color=line.get_color(), ls=":", lw=1)
        ax.axvline(cal["chosen"], color=line.get_color(), ls="--", lw=1)
    ax.set_xlabel("RandAugment magnitude M (0–30)")
    ax.set_ylabel("teacher top-1 on augmented val (fraction)")
    ax.set_title("teacher calibration (dotted: target, dashed: chosen M)")
    return _finish(fig, ax, path)


def _bench_label(entry: dict[str, Any]) -> str:
    return f"{entry['device']} · {entry.get('backend')} {entry.get('precision')} b{entry.get('batch')}"


def plot_latency(rows: list[dict[str, Any]], benches: list[dict[str, Any]], path: Path) -> bool:
    """Accuracy against measured p50 latency: one line per bench entry from the dense model (square) to the
    pruned one (circle), whiskers to p99; the per-step host PyTorch times as a grey trend with p25–p75 bars
    (a step whose host time is flagged not meaningful is left out)."""
    timed = [e for e in benches if (e.get("latency_ms") or {}).get("p50")]
    if not timed:
        return False
    fig, ax = _axes(6.2, 4.2)
    dense_acc, final_acc = rows[0]["accuracy"], rows[-1]["accuracy"]
    for entry in timed:
        p50, p99 = entry["latency_ms"]["p50"], entry["latency_ms"].get("p99") or entry["latency_ms"]["p50"]
        accuracy = entry["accuracy"] if entry.get("accuracy") is not None else final_acc
        dense = (entry.get("dense") or {}).get("latency_ms") or {}
        xs, ys = ([dense["p50"]], [dense_acc]) if dense.get("p50") else ([], [])
        line, = ax.plot(xs + [p50], ys + [accuracy], "-", label=_bench_label(entry))
        ax.errorbar([p50], [accuracy], xerr=[[0], [p99 - p50]], fmt="o", color=line.get_color(), capsize=3)
        if xs:
            ax.plot(xs, ys, "s", color=line.get_color(), mfc="white")
    _host_trend(ax, rows)
    ax.set_xscale("log")
    ax.set_xlabel("latency p50 per batch (ms, log scale; bench: whisker to p99; host steps: p25–p75 bars)")
    ax.set_ylabel(ACCURACY_VAL)
    ax.set_title("accuracy vs measured latency (□ dense, ● pruned)")
    return _finish(fig, ax, path)


def host_trend_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps latency.png draws as host times: timed, and not flagged as meaningless by their spread."""
    return [r for r in rows if r.get("latency_ms") and not r.get("latency_unreliable")]


def _host_trend(ax, rows: list[dict[str, Any]]) -> None:
    timed = host_trend_rows(rows)
    if not timed:
        return
    x = [r["latency_ms"] for r in timed]
    low = [r["latency_ms"] - (r.get("latency_p25_ms") or r["latency_ms"]) for r in timed]
    high = [(r.get("latency_p75_ms") or r["latency_ms"]) - r["latency_ms"] for r in timed]
    ax.errorbar(x, [r["accuracy"] for r in timed], xerr=[low, high], fmt=".:", color="grey", capsize=2,
                label="per step, host PyTorch (trend)")


def plot_int8(export: Optional[dict[str, Any]], benches: list[dict[str, Any]], path: Path) -> bool:
    """INT8 against fp32 top-1: export's check (both ONNX models, same images) and each device's measurement."""
    bars: list[tuple[str, float, str]] = []
    int8 = (export or {}).get("int8")
    if int8:
        bars += [("export check\nfp32 ONNX", int8["top1_fp32"], "tab:blue"),
                 ("export check\nint8 Q/DQ", int8["top1_int8"], "tab:orange")]
    measured = [e for e in benches if e.get("accuracy") is not None]
    if int8 or any(e.get("precision") == "int8" for e in measured):
        colours: dict[Optional[str], str] = {"int8": "tab:orange", "fp16": "tab:green"}  # by precision, if any
        bars += [(f"bench {e['device']}\n{e.get('precision')}", e["accuracy"], colours.get(e.get("precision"), "tab:blue"))
                 for e in measured]
    if not bars:
        return False
    fig, ax = _axes(max(4.0, 1.2 * len(bars) + 1), 3.8)
    positions = range(len(bars))
    ax.bar(positions, [b[1] for b in bars], color=[b[2] for b in bars])
    for x, (_, value, _) in zip(positions, bars):
        ax.annotate(f"{value:.2%}", (x, value), ha="center", textcoords="offset points", xytext=(0, 3),
                    fontsize="small")
    ax.set_xticks(list(positions), [b[0] for b in bars], fontsize="small")
    ax.set_xlabel("model, and where its accuracy was measured")
    ax.set_ylabel("top-1 accuracy (fraction)")
    ax.set_ylim(0, 1.08)
    ax.set_title("INT8 vs fp32 accuracy")
    return _finish(fig, ax, path, legend=False)
