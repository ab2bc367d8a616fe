"""What bench sends to a device besides the model: evaluation images, the dense model, the ONNX signature.

Evaluation images are the validation split (never the training images that
calibrated an INT8 model), preprocessed exactly as in evaluation
(`InputSpec.prepare`). The dense model goes through the same exporter as
model.onnx, so the speed-up compares like with like.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..core.errors import UserInputError
from ..core.recipe import Recipe

EVAL_MAX_IMAGES = 512
EVAL_MAX_BYTES = 128 * 2**20  # at 224 px RGB, 512 float32 images would be 300 MB to copy
EVAL_SPLIT = "val"


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


def write_eval_data(recipe: Recipe, path: Path, limit: int = EVAL_MAX_IMAGES) -> Path:
    """Up to `limit` images of the validation split, preprocessed as in evaluation, as .npz."""
    import numpy as np
    import torch

    from ..core.data import InputSpec, load_data

    bundle = load_data(recipe.data, recipe.model)
    spec = InputSpec.create(recipe.model, bundle.mean, bundle.std, torch.device("cpu"))
    per_image = 4 * recipe.model.in_channels * recipe.model.input_size**2
    limit = max(1, min(limit, EVAL_MAX_BYTES // per_image))
    images, labels, count = [], [], 0
    with torch.no_grad():
        for raw, target in bundle.val.batches(None):
            images.append(spec.prepare(raw).cpu().numpy())
            labels.append(target.numpy())
            count += len(target)
            if count >= limit:
                break
    np.savez(path, images=np.concatenate(images)[:limit].astype(np.float32),
             labels=np.concatenate(labels)[:limit].astype(np.int64))
    return path


def dense_onnx(run: Path) -> Optional[Path]:
    """`<run>/dense.onnx`, exported from checkpoints/step_000.pt when the run has a dense step."""
    from ..core.rundir import RunDir

    rundir = RunDir(run)
    if not any(row.get("step") == 0 for row in rundir.rows()):
        return None
    path = run / "dense.onnx"
    if path.is_file():
        return path
    if not rundir.checkpoint(0).is_file():
        return None
    export_dense(rundir, path)
    return path


def export_dense(rundir, path: Path) -> None:
    """The dense model as ONNX through the same exporter as model.onnx (BN folded, opset 17, dynamic
    batch), rebuilt with the run's own recipe, written atomically."""
    from ..core.models import model_from_payload
    from ..core.recipe import load_recipe
    from .export import save_plain_onnx

    cfg = load_recipe(rundir.recipe).model
    save_plain_onnx(model_from_payload(rundir.load_step(0)["model"], cfg), cfg, path)
