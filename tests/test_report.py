"""report.md from a real run directory: compress (teacher schedule), export int8, bench on the host, report."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import matplotlib.image
import pytest
import torch
from conftest import run_cli, tiny_recipe
from PIL import Image
from torch import nn

import edgecomp
from edgecomp.compression.train import InputSpec, host_latency_ms
from edgecomp.core.recipe import load_recipe
from edgecomp.report import render

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = {"pareto.png", "magnitude.png", "teacher_curves.png", "latency.png", "int8.png"}
LATENCY_ITERATIONS = 20


def assert_valid_png(path):
    assert path.is_file(), path.name
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path.name
    with Image.open(path) as image:
        image.verify()  # raises on a truncated or corrupt file
    assert matplotlib.image.imread(path).ndim == 3, path.name


def figures_named(text: str) -> set[str]:
    return set(re.findall(r"!\[[^]]+\]\(([^)]+\.png)\)", text))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, fashion_root):
    """A tiny real run through every command: compress and export with the Python API, bench through the CLI."""
    recipe = tiny_recipe(data={"train_subset": 256}, dense={"epochs": 1},
                         augment={"policy": "randaugment", "schedule": {"kind": "teacher", "dense": 9}},
                         teacher={"calibration": {"samples": 32, "grid": [0, 15, 30]}},
                         device={"latency_iterations": LATENCY_ITERATIONS})
    root = edgecomp.compress(recipe, out=tmp_path_factory.mktemp("report") / "run").run_dir
    edgecomp.export(run=root, precision="int8", calib_images=64)
    after_export = (root / "report.md").read_text()
    bench = run_cli("bench", "--run", str(root), "--device", "host", "--iterations", "30", "--warmup", "5")
    assert bench.returncode == 0, bench.stderr
    return root, after_export


@pytest.mark.e2e
def test_export_and_bench_refresh_the_report(full_run):
    root, after_export = full_run
    assert "## Export" in after_export and "Not measured yet" in after_export  # export refreshed, no bench yet
    text = (root / "report.md").read_text()
    entry = json.loads((root / "bench.json").read_text())["entries"]["host/fp32"]
    assert f"| {entry['latency_ms']['p50']:.3f} | {entry['latency_ms']['p99']:.3f} |" in text
    assert f"{entry['speedup']:.2f}×" in text and f"{entry['accuracy']:.4f} ({entry['accuracy_samples']} img)" in text


@pytest.mark.e2e
def test_report_names_every_artefact_and_figure(full_run):
    root, _ = full_run
    for name in FIGURES:  # `edgecomp report` must rebuild all of them from the files alone
        (root / name).unlink()
    (root / "report.md").unlink()
    result = run_cli("report", "--run", str(root))
    assert result.returncode == 0, result.stderr
    text = (root / "report.md").read_text()
    export = json.loads((root / "export.json").read_text())
    export_rows = text.split("## Export", 1)[1].split("\n## ", 1)[0].splitlines()
    for written in [export["eval"]["file"], export["dense"]["file"]]:  # what bench reads: a row of its own
        assert any(row.startswith(f"| `{written}`") for row in export_rows), written
    for artefact in [export["onnx"]["file"], export["int8"]["file"], export["int8"]["calib_file"], "bench.json"]:
        assert f"`{artefact}`" in text or f"| {artefact} |" in text, artefact
    assert f"int8 {export['int8']['top1_int8']:.2%} vs fp32 {export['int8']['top1_fp32']:.2%}" in text
    assert "## How each figure was measured" in text and f"{LATENCY_ITERATIONS} batch-1" in text
    assert figures_named(text) == FIGURES
    for name in FIGURES:
        assert_valid_png(root / name)


@pytest.mark.e2e
def test_host_latency_rows_carry_their_spread(full_run):
    root, _ = full_run
    rows = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["latency_iterations"] == LATENCY_ITERATIONS
        assert 0 < row["latency_p25_ms"] <= row["latency_ms"] <= row["latency_p75_ms"]
    assert rows[0]["latency_speedup"] == 1.0 and all(r["latency_speedup"] > 0 for r in rows[1:])


@pytest.mark.e2e
def test_report_drops_what_the_files_no_longer_hold(full_run, tmp_path):
    root, _ = full_run
    (root / "bench.json").rename(tmp_path / "bench.json")
    try:
        render(root, load_recipe(root / "recipe.yaml"))
        text = (root / "report.md").read_text()
        assert "Not measured yet" in text and "latency.png" not in text
        assert not (root / "latency.png").exists()  # no stale figure beside the report
    finally:
        (tmp_path / "bench.json").rename(root / "bench.json")


def test_interleaved_host_latency_against_a_reference():
    spec = InputSpec(1, 8, None, None, device=torch.device("cpu"))
    small, large = nn.Conv2d(1, 2, 3), nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1) for _ in range(40)])
    stats = host_latency_ms(small, spec, 15, warmup=2, reference=large)
    assert stats["iterations"] == 15 and stats["p25"] <= stats["p50"] <= stats["p75"]
    assert stats["dense_p50"] > 0 and stats["speedup"] > 1  # 40 convolutions against one
    assert host_latency_ms(small, spec, 0) is None


def synthetic_rows(**last):
    """Three metrics rows as compress writes them; `last` overrides the final step's fields."""
    rows = [{"step": k, "macs": 4e6 * (1 - 0.3 * k), "macs_ratio": 1 - 0.3 * k, "params": 9e4, "magnitude": 0.0,
             "accuracy": 0.9 - 0.01 * k, "test_accuracy": 0.89 - 0.01 * k, "latency_ms": 10.0 - k,
             "latency_p25_ms": 9.8 - k, "latency_p75_ms": 10.2 - k, "latency_speedup": 1.0 + 0.2 * k,
             "latency_threads": 1, "latency_unreliable": None, "train_throughput": 100.0} for k in range(3)]
    rows[-1].update(last)
    return rows


def test_a_meaningless_host_latency_is_not_shown_as_a_result(tmp_path):
    from edgecomp.report.plots import host_trend_rows
    from edgecomp.report.sections import compress_section, table

    reason = "latency p25–p75 spans 93% of its median (above 25%): the machine's load, not the model"
    ratio = "dense/step ratio p25–p75 spans 80% of its median (above 25%): the machine's load, not the model"
    rows = synthetic_rows(latency_ms=636.07, latency_p25_ms=53.79, latency_p75_ms=647.99, latency_speedup=1.02,
                          latency_unreliable=reason, latency_speedup_unreliable=ratio)
    last_line = table(rows).splitlines()[-1]
    assert last_line.count("not meaningful (spread)") == 2 and "636.07" not in last_line and "1.02×" not in last_line
    assert "| 9.00 [8.80–9.20] | 1.20× |" in table(rows).splitlines()[-2]  # a sound step keeps its figures
    assert [r["step"] for r in host_trend_rows(rows)] == [0, 1]  # latency.png leaves the flagged step out
    rows[-1]["latency_speedup_unreliable"] = None  # a steady paired ratio stays a result beside a noisy time
    assert "| not meaningful (spread) | 1.02× |" in table(rows).splitlines()[-1]
    section = "\n".join(compress_section(SimpleNamespace(rows=rows), set()))
    assert f"- step 2: host latency not meaningful: {reason}" in section


def test_no_test_split_means_no_test_figure_anywhere(tmp_path):
    from edgecomp.report.methods import _accuracy_method
    from edgecomp.report.plots import plot_pareto
    from edgecomp.report.sections import _accuracy_line, table

    rows = synthetic_rows()
    for row in rows:
        row["test_accuracy"] = None
    line = _accuracy_line(rows[0], rows[-1])
    assert line.startswith("No held-out test split, so no test accuracy") and "0.0000" not in line
    assert all(line.split(" | ")[6] == "–" for line in table(rows).splitlines()[2:])  # test acc column
    data = SimpleNamespace(val_subset=None, test_subset=None)
    assert "no test accuracy: the data has no held-out test split" in _accuracy_method(rows, data)
    assert plot_pareto(rows, tmp_path / "pareto.png")  # validation only, no test line
    assert_valid_png(tmp_path / "pareto.png")


def test_magnitude_plot_only_when_the_magnitude_varies(tmp_path):
    from edgecomp.report.plots import plot_magnitude

    assert not plot_magnitude(synthetic_rows(), tmp_path / "flat.png")  # policy none: M is 0 throughout
    assert not (tmp_path / "flat.png").exists()
    assert plot_magnitude(synthetic_rows(magnitude=5.0), tmp_path / "varies.png")


def test_host_latency_threads_and_spread_verdict():
    from edgecomp.compression.train import unreliable_reason

    spec = InputSpec(1, 8, None, None, device=torch.device("cpu"))
    before = torch.get_num_threads()
    stats = host_latency_ms(nn.Conv2d(1, 2, 3), spec, 5, warmup=1, reference=nn.Conv2d(1, 4, 3), threads=1)
    assert stats["threads"] == 1 and torch.get_num_threads() == before  # the caller's thread count comes back
    assert {"unreliable", "speedup_unreliable"} <= set(stats)
    assert unreliable_reason("latency", 9.9, 10.0, 10.1) is None
    assert unreliable_reason("dense/step ratio", 1.6, 1.62, 1.64) is None
    # the row: 636.07 [53.79–647.99] ms
    assert unreliable_reason("latency", 53.79, 636.07, 647.99).startswith("latency p25–p75 spans 93% of its median")
    assert unreliable_reason("dense/step ratio", 0.7, 1.02, 1.5).startswith("dense/step ratio p25–p75 spans 78%")


def test_console_lines_never_wrap_a_long_path_in_a_log(monkeypatch):
    from edgecomp.core.console import console, stage

    monkeypatch.setattr(console, "_force_terminal", False)  # as when stderr is redirected to a log
    long_path = "/runs/" + "a-very-long-folder-name/" * 12 + "report.md"
    with console.capture() as captured:
        console.print(f"[bold green]done[/]: 30.0% of the dense MACs; report: {long_path}")
        with stage("step 1: validation (2000 images)", 3) as advance:
            advance()
    lines = captured.get().splitlines()
    assert lines[0].endswith(f"report: {long_path}") and len(lines[0]) > console.width
    assert lines[1] == "  step 1: validation (2000 images) ..."  # not a terminal: a line instead of a bar
