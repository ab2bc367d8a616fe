"""The run directory: paths, atomic writes, checkpoints and metrics rows.

Every file is written to a temporary name in the same folder and renamed, so
a killed run never leaves a partial file under a final name. A step's
checkpoint carries its own metrics row; `metrics.jsonl` is rebuilt from the
checkpoints on resume, so a row is never lost nor duplicated.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import RunDirError
from .models import read_checkpoint

CHECKPOINT_FORMAT = "edgecomp-checkpoint/1"


def atomic_write(path: Path, writer: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        writer(Path(temp))
        with open(temp, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda temp: temp.write_text(text))


def save_tensors(path: Path, payload: dict[str, Any]) -> None:
    atomic_write(path, lambda temp: torch.save(payload, temp))


class RunDir:
    def __init__(self, root: Path):
        self.root = Path(root)

    recipe = property(lambda self: self.root / "recipe.yaml")
    checkpoints = property(lambda self: self.root / "checkpoints")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    model = property(lambda self: self.root / "model.pt")
    report = property(lambda self: self.root / "report.md")
    pareto = property(lambda self: self.root / "pareto.png")

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step_{step:03d}.pt"

    def finished_steps(self) -> list[int]:
        steps = []
        for path in self.checkpoints.glob("step_*.pt"):
            try:
                steps.append(int(path.stem.removeprefix("step_")))
            except ValueError:
                continue
        return sorted(steps)

    def save_step(self, step: int, payload: dict[str, Any]) -> None:
        save_tensors(self.checkpoint(step), {"format": CHECKPOINT_FORMAT, "step": step, **payload})

    def load_step(self, step: int) -> dict[str, Any]:
        data = read_checkpoint(self.checkpoint(step), f"checkpoint {self.checkpoint(step)}")
        if data.get("format") != CHECKPOINT_FORMAT:
            raise RunDirError(f"{self.checkpoint(step)}: not an edgecomp checkpoint")
        return data

    def rows(self) -> list[dict[str, Any]]:
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def write_rows(self, rows: list[dict[str, Any]]) -> None:
        write_text(self.metrics, "".join(json.dumps(row) + "\n" for row in rows))
