"""Shared fixtures: tiny recipes on real Fashion-MNIST, run through the CLI."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edgecomp.core.recipe import FASHION_MNIST_ROOT, Recipe, validate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))  # the benchmarks' helpers (paired_stats) are scripts' siblings


def tiny_recipe_dict(**sections) -> dict:
    """A run that finishes in seconds: ResNet-8 at 28 px, a few batches."""
    data = {
        "name": "tiny",
        "seed": 0,
        "model": {"arch": "cifar_resnet8", "num_classes": 10, "in_channels": 1, "input_size": 28},
        "data": {"dataset": "fashion_mnist", "train_subset": 512, "val_subset": 256, "test_subset": 256,
                 "batch_size": 32},
        "dense": {"epochs": 2},
        "prune": {"steps": 2, "target": {"macs": 0.5}, "round_to": 4},
        "finetune": {"epochs_per_step": 1},
        "device": {"latency_iterations": 2},
    }
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return data


def unsplit_imagefolder(root: Path) -> dict:
    """An ImageFolder root of two class folders (no train/, val/ or test/) and the sections a tiny run on it needs."""
    from PIL import Image

    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (16, 16), (200 if label == "cat" else 20, i * 10, 0)).save(root / label / f"{i}.png")
    return {"model": {"num_classes": 2, "in_channels": 3, "input_size": 16},
            "data": {"dataset": "imagefolder", "root": str(root), "val_fraction": 0.25, "train_subset": None,
                     "val_subset": None, "test_subset": None, "batch_size": 8},
            "dense": {"epochs": 1}, "prune": {"steps": 1, "target": {"macs": 0.6}, "round_to": 4}}


def tiny_recipe(**sections) -> Recipe:
    return validate(tiny_recipe_dict(**sections))


def load_benchmark(name: str):
    """A script of benchmarks/ as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def write_recipe(tmp_path):
    def write(data: dict, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data))
        return path

    return write


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "edgecomp", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


@pytest.fixture(scope="session")
def fashion_root() -> Path:
    root = Path(FASHION_MNIST_ROOT)
    if not root.is_dir():
        pytest.fail(f"{root} is missing: `make test` installs dataset-fashion-mnist")
    return root
