"""The layout's import rules, read from the source (ast), not from a running interpreter.

- the deployment wing (edgecomp/deploy) never imports the compression wing (edgecomp/compression);
- export (deploy/export.py) never imports bench, the runners, the builder or delivery;
- the target-side programs import only the standard library, numpy, onnxruntime, tensorrt
  (cuda-python where installed) and each other;
- the ground (edgecomp/core) imports nothing above it: no wing, no report, not the face.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgecomp"
TARGET_ALLOWED = {"numpy", "onnxruntime", "tensorrt", "cuda"}  # cuda: cuda-python, optional on the device
COMPRESSION = {"edgecomp.compression.train", "edgecomp.compression.pipeline", "edgecomp.compression.study", "edgecomp.compression.distributed"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved (`from . import x` gives package.x)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            stem = ".".join(base + ([node.module] if node.module else []))
            found.add(stem)
            found |= {f"{stem}.{alias.name}" for alias in node.names}
    return found


def files(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def hits(path: Path, forbidden: set[str]) -> list[str]:
    return sorted(name for name in imports(path) if any(name == f or name.startswith(f + ".") for f in forbidden))


@pytest.mark.parametrize("path", files("deploy"), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_deployment_never_imports_the_compression_wing(path):
    assert hits(path, COMPRESSION) == []


def test_export_never_imports_bench_or_the_runners():
    forbidden = {f"edgecomp.deploy.{name}" for name in ("bench", "runners", "builder", "delivery")}
    assert hits(PACKAGE / "deploy" / "export.py", forbidden) == []
    assert hits(PACKAGE / "deploy" / "engines.py", forbidden | {"edgecomp.deploy.export"}) == []


@pytest.mark.parametrize("path", files("deploy/target"), ids=lambda p: p.name)
def test_target_programs_import_only_what_jetpack_ships(path):
    siblings = {p.stem for p in (PACKAGE / "deploy" / "target").glob("*.py")}
    allowed = set(sys.stdlib_module_names) | TARGET_ALLOWED | siblings | {"__future__"}
    outside = sorted(name for name in imports(path)
                     if name.split(".")[0] not in allowed and not name.startswith("edgecomp.deploy.target"))
    assert outside == []


@pytest.mark.parametrize("path", files("core"), ids=lambda p: p.name)
def test_the_ground_imports_nothing_above_it(path):
    above = [name for name in imports(path)
             if name == "edgecomp" or (name.startswith("edgecomp.") and not name.startswith("edgecomp.core"))]
    assert above == []


@pytest.mark.parametrize("name", ["block", "plan", "loop"])
def test_the_latency_pruner_never_imports_the_runners(name):
    """It asks plain functions for timings (run.py builds them from the deployment wing's timers)."""
    path = PACKAGE / "compression" / "latency" / f"{name}.py"
    assert hits(path, {"edgecomp.deploy.runners", "edgecomp.deploy.latency", "edgecomp.deploy.devices"}) == []


def test_the_rule_reader_sees_imports():
    """The checks above would pass on a reader that finds nothing: it must find these."""
    assert "edgecomp.deploy.runners" in imports(PACKAGE / "deploy" / "bench.py")
    assert "edgecomp.core.errors" in imports(PACKAGE / "deploy" / "builder.py")
    assert "edgecomp.deploy.target.runtime" in imports(PACKAGE / "deploy" / "target" / "build.py")
    assert "edgecomp.compression.train" in hits(PACKAGE / "compression" / "pipeline.py", COMPRESSION)
    assert "edgecomp.core.errors" in imports(PACKAGE / "core" / "models.py")
    assert "edgecomp.deploy.runners" in imports(PACKAGE / "compression" / "latency" / "run.py")
    assert len(files("core")) >= 7 and len(files("deploy")) >= 8
