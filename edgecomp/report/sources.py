"""What the report reads: the files of a run directory, and nothing else.

`metrics.jsonl` (compress), `export.json` (export), `bench*.json` (bench:
`bench.json`, and `bench.partial.json` when a measurement broke off),
`latency/beside.json` (`report --beside`: another run's steps timed on this
run's latency target). The
report never imports the modules that wrote them, so it renders the same
from a copied run directory as right after the run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..core.rundir import RunDir


@dataclass
class RunFiles:
    run: RunDir
    rows: list[dict[str, Any]]
    export: Optional[dict[str, Any]] = None
    benches: list[dict[str, Any]] = field(default_factory=list)  # one per (file, device) entry
    beside: Optional[dict[str, Any]] = None  # another run's steps timed on this run's latency target

    @property
    def root(self) -> Path:
        return self.run.root


def read_run(run: RunDir, rows: Optional[list[dict[str, Any]]] = None) -> RunFiles:
    return RunFiles(run, run.rows() if rows is None else rows, read_export(run.root), read_benches(run.root),
                    _read_json(run.root / "latency" / "beside.json", "edgecomp-beside/1"))


def _read_json(path: Path, prefix: str) -> Optional[dict[str, Any]]:
    """A JSON object whose `format` starts with `prefix`; None for a missing, torn or foreign file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and str(data.get("format", "")).startswith(prefix) else None


def read_export(root: Path) -> Optional[dict[str, Any]]:
    return _read_json(root / "export.json", "edgecomp-export/")


def read_benches(root: Path) -> list[dict[str, Any]]:
    """Every entry of every bench*.json, tagged with its file and whether that file is complete: one per
    (device, precision) in edgecomp-bench/2 (`entries`), one per device in a /1 file (`devices`)."""
    entries = []
    for path in sorted(root.glob("bench*.json")):
        document = _read_json(path, "edgecomp-bench/")
        if document is None:
            continue
        found = document.get("entries") if "entries" in document else document.get("devices")
        for entry in (found or {}).values():
            entries.append({**entry, "source": path.name, "complete": bool(document.get("complete")),
                            "error": document.get("error")})
    return entries
