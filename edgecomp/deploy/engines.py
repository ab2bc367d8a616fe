"""The engine store: TensorRT engines kept apart by what they are valid for.

An engine is tied to the GPU model and the exact TensorRT version it was built
with (no hardware compatibility on JetPack), so every engine is stored under a
key — device model, TensorRT version, precision, input shapes, the digest of
the ONNX model it was built from, DLA core — with the key's fields in a JSON
file beside it: `<run>/engines/<key>.engine` + `<key>.json`. An engine whose
key file is missing or disagrees is never reused (`check_engine`). Export and
bench share one store; who builds on a miss is `builder.py`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from ..core.errors import EngineMismatchError
from ..core.precision import Precision
from ..core.rundir import atomic_write, write_text

ENGINE_FORMAT = "edgecomp-engine/1"
ENGINE_DIR = "engines"

Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # name -> (min, opt, max)


def shapes_for(input_name: str, dims: tuple[int, ...], max_batch: int) -> Shapes:
    """Optimisation profile of the dynamic batch: min 1, opt = max = max_batch; `dims` after the batch."""
    one, full = (1, *dims), (max_batch, *dims)
    return {input_name: (one, full, full)}


# ---------------------------------------------------------------- engine keys


@dataclass(frozen=True)
class EngineKey:
    """What an engine is valid for; two engines with equal keys are interchangeable."""

    device: str
    trt_version: str
    precision: str
    shapes: tuple[tuple[str, str], ...]  # (input name, "min/opt/max" as 1x3x224x224 dims)
    onnx_sha256: str
    dla_core: Optional[int] = None  # a DLA engine and a GPU engine are not interchangeable

    @property
    def name(self) -> str:
        """A file stem: readable fields plus a digest of all of them (the stem is never trusted alone)."""
        device = re.sub(r"[^a-z0-9]+", "-", self.device.lower()).strip("-") or "device"
        shapes = "_".join(f"{n}-{s.replace('/', '-')}" for n, s in self.shapes)
        digest = hashlib.sha256(json.dumps(self.fields(), sort_keys=True).encode()).hexdigest()[:10]
        return f"{device}_trt{self.trt_version}_{self.precision}_{re.sub(r'[^A-Za-z0-9x._-]', '', shapes)}_{digest}"

    def fields(self) -> dict[str, Any]:
        data = asdict(self)
        data["shapes"] = dict(self.shapes)
        return data


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def engine_key(*, device: str, trt_version: str, precision: Precision, shapes: Shapes, onnx_sha256: str,
               dla_core: Optional[int] = None) -> EngineKey:
    profile = tuple(sorted((name, "/".join(_dims(s) for s in mmx)) for name, mmx in shapes.items()))
    return EngineKey(device.strip(), trt_version.strip(), Precision(precision).value, profile, onnx_sha256, dla_core)


def check_engine(path: Path, wanted: EngineKey) -> None:
    """Refuse an engine whose key file is missing or names another device, version, precision, shape or model."""
    sidecar = Path(path).with_suffix(".json")
    if not sidecar.is_file():
        raise EngineMismatchError(f"{path}: no key file {sidecar.name}; an engine of unknown origin is never reused")
    try:
        stored = json.loads(sidecar.read_text()).get("key", {})
    except (OSError, ValueError, AttributeError) as exc:
        raise EngineMismatchError(f"{sidecar}: unreadable key file ({exc})") from None
    wanted_fields = wanted.fields()
    differ = [f"{k} {stored.get(k)!r} (needed {v!r})" for k, v in wanted_fields.items() if stored.get(k) != v]
    if differ:
        raise EngineMismatchError(
            f"{path} was built for another target: {'; '.join(differ)}; rebuild it (engines are tied to the GPU "
            f"model, the TensorRT version, the precision, the input shapes and the model)"
        )


def find_engine(folder: Path, wanted: EngineKey) -> Optional[Path]:
    """The stored engine for `wanted`, None when there is none; a mismatched one raises EngineMismatchError."""
    path = Path(folder) / f"{wanted.name}.engine"
    if not path.is_file():
        return None
    check_engine(path, wanted)
    return path


def store_engine(folder: Path, key: EngineKey, plan: bytes, details: dict[str, Any]) -> Path:
    """Write `<key>.engine` and `<key>.json` (key fields + build details), each atomically; engine first."""
    path = Path(folder) / f"{key.name}.engine"
    atomic_write(path, lambda temp: temp.write_bytes(plan))
    record = {"format": ENGINE_FORMAT, "key": key.fields(), "engine": path.name, "bytes": len(plan), **details}
    write_text(path.with_suffix(".json"), json.dumps(record, indent=2) + "\n")
    return path
