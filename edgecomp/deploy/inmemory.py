"""Exporting a model the user holds in memory (`edgecomp.export(model=...)`): the `onnx` row of the format
table, with the same exporter, BN folding and onnxruntime-against-PyTorch gate as a run's model.onnx.

A run directory carries what the other rows need (the recipe's data for int8 calibration, the device for an
engine); a model in memory does not, so those rows are refused with the way to get them.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import onnx
import torch
import torch.nn as nn

from ..core.errors import ExportInputError
from ..core.models import measure_size
from ..core.rundir import atomic_write, write_text
from .export import EXPORT_FORMAT, FORMATS, LIMITS, ExportResult, check_fidelity, default_opset, export_onnx, io_shapes


def export_module(model: nn.Module, example_inputs: torch.Tensor, out: str | Path, *,
                  verify_inputs: Optional[torch.Tensor] = None, opset: Optional[int] = None, fold_bn: bool = True,
                  atol: float = 1e-4) -> ExportResult:
    """`out` (.onnx), written only once onnxruntime reproduces the model on `verify_inputs` (default: the
    example); `<stem>.export.json` beside it records the check. The model is not changed."""
    out = Path(out)
    if out.suffix != FORMATS["onnx"].suffix:
        raise ExportInputError(f"out: {out} must end in {FORMATS['onnx'].suffix}")
    low, high = LIMITS["opset"]
    assert high is not None  # the opset range is bounded above (MAX_OPSET)
    chosen_opset = default_opset(None) if opset is None else opset
    if not low <= chosen_opset <= high:
        raise ExportInputError(f"opset: must be {low}..{high} (got {opset})")
    reference = copy.deepcopy(model).cpu().eval()
    example = example_inputs.detach().cpu()
    images = (example if verify_inputs is None else verify_inputs).detach().cpu()
    proto, folded = export_onnx(reference, example[:2], opset=chosen_opset, fold_bn=fold_bn)
    fidelity = check_fidelity(proto, reference, images, atol)
    atomic_write(out, lambda temp: onnx.save(proto, str(temp)))
    size = measure_size(reference, example[:1])
    info = {"format": EXPORT_FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "source": "a model in memory (edgecomp.export(model=...))", "precision": "fp32", "formats": ["onnx"],
            "model": {"class": type(model).__name__, "macs": size.macs, "params": size.params},
            "fold_bn": {"enabled": fold_bn, "folded": folded},
            "onnx": {"file": out.name, "opset": chosen_opset, "exporter": "torch.onnx (TorchScript), onnxslim",
                     **io_shapes(proto)},
            "fidelity": {**fidelity.as_dict(), "reference": "PyTorch fp32 (BN not folded), the given inputs"},
            "int8": None, "engine": None}
    info_path = out.with_name(out.stem + ".export.json")
    write_text(info_path, json.dumps(info, indent=2) + "\n")
    return ExportResult(out.parent, out, info_path, info)


def refuse_format(name: str) -> ExportInputError:
    """Why a row other than onnx cannot be served for a model in memory, and how to get it."""
    needs, how = {
        "onnx_int8": ("calibration images from a recipe's dataset",
                      "calibrate it on your own images (onnxruntime.quantization.quantize_static)"),
        "engine": ("a target device with TensorRT, named by a recipe or --device",
                   "build the engine on the device: trtexec --onnx=model.onnx --saveEngine=model.engine"),
    }.get(name, ("a run directory", "use edgecomp.export(run=...)"))
    return ExportInputError(f"format: {name!r} needs {needs}, which a model in memory does not carry; export "
                            f"it with format='onnx' and {how}")
