"""report.md (a table of the dense model and every step) and pareto.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .rundir import RunDir, write_text


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| step | MACs | MACs ratio | params | magnitude | val acc | test acc | latency (ms) | fine-tune img/s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['step']}{' (dense)' if row['step'] == 0 else ''} | {row['macs'] / 1e6:.2f} M "
            f"| {row['macs_ratio']:.3f} | {row['params'] / 1e3:.1f} k | {row['magnitude']:.1f} "
            f"| {row['accuracy']:.4f} | {row['test_accuracy']:.4f} | {_fmt(row.get('latency_ms'), '.2f')} "
            f"| {_fmt(row.get('train_throughput'), '.0f')} |"
        )
    return "\n".join(lines)


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure atomically (temporary name, then rename) and close it."""
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def plot_pareto(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    macs = [r["macs"] / 1e6 for r in rows]
    ax.plot(macs, [r["test_accuracy"] for r in rows], "o-", label="test")
    ax.plot(macs, [r["accuracy"] for r in rows], "s--", alpha=0.6, label="val")
    for row, x in zip(rows, macs):
        ax.annotate(str(row["step"]), (x, row["test_accuracy"]), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("MMACs per image")
    ax.set_ylabel("top-1 accuracy")
    ax.set_title("accuracy vs MACs (label: step)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def plot_teacher_curves(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for row in rows:
        cal = row["calibration"]
        magnitudes = sorted(float(m) for m in cal["curve"])
        line, = ax.plot(magnitudes, [cal["curve"][str(m)] for m in magnitudes], "o-", label=f"step {row['step']}")
        ax.axhline(cal["target_fraction"] * cal["clean_accuracy"], color=line.get_color(), ls=":", lw=1)
        ax.axvline(cal["chosen"], color=line.get_color(), ls="--", lw=1)
    ax.set_xlabel("magnitude M")
    ax.set_ylabel("teacher accuracy on augmented val")
    ax.set_title("teacher calibration (dotted: target, dashed: chosen M)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def teacher_section(run: RunDir, rows: list[dict[str, Any]]) -> list[str]:
    calibrated = [r for r in rows if r.get("calibration")]
    judged = [r for r in rows if r.get("mean_difficulty") is not None]
    if not calibrated and not judged:
        return []
    lines = ["## Teacher (finding C)", "", "| step | target (× clean acc) | chosen M | mean difficulty | filtered | "
             "weight range |", "|---:|---:|---:|---:|---:|---:|"]
    for row in rows[1:]:
        cal = row.get("calibration") or {}
        weights = f"{row['weight_min']:.2f}–{row['weight_max']:.2f}" if row.get("weight_max") else "–"
        lines.append(
            f"| {row['step']} | {_fmt(cal.get('target_fraction'), '.3f')} | {_fmt(cal.get('chosen'), '.1f')} "
            f"| {_fmt(row.get('mean_difficulty'), '.3f')} | {_fmt(row.get('filtered_fraction'), '.1%')} | {weights} |"
        )
    if calibrated:
        plot_teacher_curves(calibrated, run.root / "teacher_curves.png")
        lines += ["", "![teacher curves](teacher_curves.png)"]
    return lines + [""]


def _budget_lines(recipe, final: dict[str, Any]) -> list[str]:
    budget = recipe.prune.target.latency_ms
    if budget is None:
        return []
    met = final.get("measured_latency_ms") is not None and final["measured_latency_ms"] <= budget
    verdict = "met" if met else "NOT met after the last step"
    return ["", f"Latency budget {budget} ms on `{recipe.prune.target.device}` (exported ONNX, p50, batch 1): "
                f"{verdict} at step {final['step']} with {_fmt(final.get('measured_latency_ms'), '.3f')} ms."]


def write_report(run: RunDir, rows: list[dict[str, Any]], recipe) -> Path:
    plot_pareto(rows, run.pareto)
    dense, final = rows[0], rows[-1]
    text = "\n".join([
        f"# edgecomp run `{recipe.name}`",
        "",
        f"Model `{recipe.model.arch}` at {recipe.model.input_size} px on `{recipe.data.dataset.value}`; "
        f"{recipe.prune.steps} pruning steps ({recipe.prune.importance.value} importance) to "
        f"{final['macs_ratio']:.1%} of the dense MACs; augmentation `{recipe.augment.policy.value}` with the "
        f"`{recipe.augment.schedule.kind.value}` magnitude schedule.",
        "",
        f"Final test accuracy {final['test_accuracy']:.4f} vs dense {dense['test_accuracy']:.4f} "
        f"({(final['test_accuracy'] - dense['test_accuracy']) * 100:+.2f} points). Latency is the median "
        f"batch-1 PyTorch forward on `{final.get('latency_device')}`, not a device measurement.",
        *_budget_lines(recipe, final),
        "",
        table(rows),
        "",
        "![accuracy vs MACs](pareto.png)",
        "",
        *teacher_section(run, rows),
    ])
    write_text(run.report, text)
    return run.report


def render(run_dir: Path, recipe) -> Path:
    run = RunDir(run_dir)
    rows = run.rows()
    if not rows:
        from .errors import RunDirError

        raise RunDirError(f"--run: {run_dir} has no metrics.jsonl rows yet")
    return write_report(run, rows, recipe)
