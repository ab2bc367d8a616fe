"""report.md from a real run directory: compress (teacher schedule), export int8, bench on the host, report."""

from __future__ import annotations

import json
import re

import matplotlib.image
import pytest
import torch
from torch import nn
from PIL import Image

import edgecomp
from edgecomp.core.recipe import load_recipe
from edgecomp.report import render
from edgecomp.compression.train import InputSpec, host_latency_ms
from conftest import run_cli, tiny_recipe

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
    entry = json.loads((root / "bench.json").read_text())["devices"]["host"]
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
