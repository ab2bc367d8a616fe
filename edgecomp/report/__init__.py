"""report.md and its plots: everything a run directory holds, rendered from its files alone.

`compress` writes it at the end of a run; `export` and `bench` refresh it
(`refresh`); `edgecomp report` renders it again (`render`). Reading is in
`sources`, the Markdown in `sections` and `methods`, the figures in `plots`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..core.rundir import RunDir, write_text
from .latency import latency_section, plot_latency_target
from .methods import methods_section
from .plots import plot_int8, plot_latency, plot_magnitude, plot_pareto, plot_teacher_curves, save_figure
from .sections import bench_section, compress_section, export_section, summary
from .sources import RunFiles, read_run

__all__ = ["write_report", "render", "refresh", "save_figure"]


def write_figures(files: RunFiles) -> set[str]:
    """Every plot the files allow; a figure that has nothing to show any more is removed, never left stale."""
    root, rows = files.root, files.rows
    drawn = {
        "pareto.png": lambda p: plot_pareto(rows, p),
        "magnitude.png": lambda p: plot_magnitude(rows, p),
        "teacher_curves.png": lambda p: plot_teacher_curves(rows, p),
        "latency.png": lambda p: plot_latency(rows, files.benches, p),
        "int8.png": lambda p: plot_int8(files.export, files.benches, p),
        "latency_target.png": lambda p: plot_latency_target(rows, p, files.beside),
    }
    written = set()
    for name, plot in drawn.items():
        if plot(root / name):
            written.add(name)
        else:
            (root / name).unlink(missing_ok=True)
    return written


def write_report(run: RunDir, rows: list[dict[str, Any]], recipe) -> Path:
    files = read_run(run, rows)
    figures = write_figures(files)
    text = "\n".join([
        *summary(files, recipe),
        *compress_section(files, figures),
        *latency_section(rows, figures, files.beside),
        *export_section(files.export, figures),
        *bench_section(files.benches, figures),
        *methods_section(files, recipe),
    ])
    write_text(run.report, text)
    return run.report


ROW_KEYS = ("step", "macs", "macs_ratio", "params", "magnitude", "accuracy", "test_accuracy")


def _missing(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({key for row in rows for key in ROW_KEYS if key not in row})


def render(run_dir: Path, recipe) -> Path:
    run = RunDir(run_dir)
    rows = run.rows()
    if not rows or _missing(rows):
        from ..core.errors import RunDirError

        problem = "no metrics.jsonl rows yet" if not rows else f"metrics.jsonl rows lack {', '.join(_missing(rows))}"
        raise RunDirError(f"--run: {run_dir} has {problem}")
    return write_report(run, rows, recipe)


def refresh(folder: Path) -> Optional[Path]:
    """After export or bench: render the report again when `folder` is a run directory that compress wrote
    (bench of a loose --model writes beside that file, which is no run); returns the report or None."""
    run = RunDir(folder)
    rows = run.rows() if run.recipe.is_file() else []
    if not rows or _missing(rows):
        return None
    from ..core.recipe import load_recipe

    return write_report(run, rows, load_recipe(run.recipe))
