"""What export wrote for bench, read back: export.json's records and the ONNX signature.

`edgecomp export` writes, besides model.onnx, the files bench measures and
records each in export.json: `eval.npz` (the validation images its fidelity
gate compared, preprocessed as in evaluation; never the training images that
calibrated an INT8 model), `dense.onnx` (the dense step through the same
exporter), `model.int8.onnx` and the engine request. Bench reads them here and
never loads the recipe's data or exports anything itself. This module imports
neither torch nor the exporter, so bench starts fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from ..core.errors import UserInputError

EXPORT_FILE = "export.json"
EVAL_FILE, DENSE_FILE, INT8_FILE, CALIB_FILE = "eval.npz", "dense.onnx", "model.int8.onnx", "calib.npy"
EVAL_SPLIT = "val"


def read_export(root: Path) -> Optional[dict[str, Any]]:
    """The run's export.json, None when there is none (or it is torn or foreign)."""
    try:
        info = json.loads((Path(root) / EXPORT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and str(info.get("format", "")).startswith("edgecomp-export/") else None


def recorded_file(root: Path, record: Optional[dict[str, Any]]) -> Optional[Path]:
    """The file an export.json record names, when it is still there."""
    if not record or not record.get("file"):
        return None
    path = Path(root) / record["file"]
    return path if path.is_file() else None


def onnx_signature(path: Path, batch: int) -> tuple[list[dict[str, Any]], Optional[int]]:
    """The graph inputs (name, dims; None for a dynamic one) and opset, read without the weights."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and others
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise UserInputError(f"--model: {path} is not a readable ONNX model ({reason})") from None
    initializers = {t.name for t in proto.graph.initializer}
    inputs = []
    for tensor in proto.graph.input:
        if tensor.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.type.tensor_type.shape.dim]
        if dims and dims[0] is not None and dims[0] != batch:
            raise UserInputError(f"--batch: {path.name} has a fixed batch of {dims[0]}; use --batch {dims[0]}")
        inputs.append({"name": tensor.name, "dims": dims})
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return inputs, opset


def dynamic_inputs(inputs: list[dict[str, Any]]) -> dict[str, tuple[int, ...]]:
    """Each dynamic-batch input's dims after the batch (what an engine's optimisation profile needs)."""
    return {t["name"]: tuple(t["dims"][1:]) for t in inputs
            if t["dims"] and t["dims"][0] is None and all(d is not None for d in t["dims"][1:])}
