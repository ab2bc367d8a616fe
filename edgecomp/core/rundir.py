"""The run directory: paths, atomic writes, checkpoints and metrics rows.

Every file is written to a temporary name in the same folder and renamed, so
a killed run never leaves a partial file under a final name. A step counts as
finished only once `checkpoints/manifest.json` lists its checkpoint with a
matching sha256. A step's checkpoint carries its own metrics row;
`metrics.jsonl` is rebuilt from the checkpoints on resume, so a row is never
lost nor duplicated.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .errors import RunDirError
from .models import read_checkpoint

CHECKPOINT_FORMAT = "edgecomp-checkpoint/1"


def _umask() -> int:
    """The process's umask: from /proc on Linux (no side effect); elsewhere set it and straight back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: Path, writer: Callable[[Path], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        # mkstemp creates 0600; a run file gets the mode any other tool would give it (0666 less the umask),
        # so a teammate can read a run on a shared machine
        os.chmod(temp, 0o666 & ~_umask())
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


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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

    manifest = property(lambda self: self.checkpoints / "manifest.json")

    def _manifest(self) -> dict[str, str]:
        try:
            return json.loads(self.manifest.read_text())
        except (OSError, ValueError):
            return {}

    def finished_steps(self) -> list[int]:
        """Steps 0..k whose checkpoints are listed in the manifest with a matching checksum.

        A checkpoint written but not yet in the manifest (killed in between) or damaged since does
        not count, and neither does any step after it: those steps are simply run again.
        """
        listed = self._manifest()
        steps: list[int] = []
        while str(len(steps)) in listed:
            path = self.checkpoint(len(steps))
            if not path.is_file() or sha256(path) != listed[str(len(steps))]:
                break
            steps.append(len(steps))
        return steps

    def checkpoint_sums(self) -> dict[str, str]:
        """The checksums of the finished steps' checkpoints: what identifies a run's models."""
        listed = self._manifest()
        return {str(step): listed[str(step)] for step in self.finished_steps()}

    def save_step(self, step: int, payload: dict[str, Any]) -> None:
        """Checkpoint, then manifest entry: each written atomically, in that order."""
        save_tensors(self.checkpoint(step), {"format": CHECKPOINT_FORMAT, "step": step, **payload})
        listed = {k: v for k, v in self._manifest().items() if int(k) < step}
        listed[str(step)] = sha256(self.checkpoint(step))
        write_text(self.manifest, json.dumps(listed, indent=1))

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
