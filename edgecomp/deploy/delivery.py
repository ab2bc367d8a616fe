"""`edgecomp export` end to end: the files (`export.py`), then, with --trt, the engine through the one
engine path (`builder.py`) on the runner of the target.

The target is --device, else the recipe's `device.name` (`host`: this machine,
through the HostRunner). Its facts (info.py) are read before any work: a target
without TensorRT is refused (exit 2) with the commands that would build the
engine elsewhere, and the ONNX opset follows the target's TensorRT. Without
--trt, a --device NAME only chooses the opset, from its profile's TensorRT
releases; nothing connects.

export.json records the engine request (`engine_request`: source ONNX,
precision, profile, workspace, DLA core) whether or not an engine was built:
bench builds or reuses exactly that engine (`builder.engine_request` is the one
maker of requests).
"""

from __future__ import annotations

import argparse
import shlex
import uuid
from pathlib import Path
from typing import Any, Optional

from ..core.errors import DeviceError, ExportInputError
from ..core.precision import Precision, check_int8_support
from ..core.recipe import Recipe, load_recipe
from .builder import EngineRequest, engine_request, obtain_engine, request_record, tensorrt_facts
from .devices import Device, resolve_device
from .engines import ENGINE_DIR
from .export import (
    INPUT_NAME,
    ExportOptions,
    ExportResult,
    open_run,
    resolve_options,
    target_opset,
    write_exports,
    write_info,
)
from .runners import make_runner
from .target import build as target_build


def export(*, run: str | Path, trt: bool = False, precision: Precision | str | None = None,
           device: Optional[str] = None, opset: Optional[int] = None, calib_images: Optional[int] = None,
           max_batch: Optional[int] = None, dla_core: Optional[int] = None, workspace_mib: Optional[int] = None,
           fold_bn: Optional[bool] = None, accept_new_host_key: bool = False,
           onnx_only: bool = False) -> ExportResult:
    """Export a run's final model; arguments left None come from the recipe (`export`, `device.name`).
    `onnx_only` (--onnx): model.onnx alone, even when the recipe's precision is int8."""
    folder = open_run(run)
    recipe = load_recipe(folder.recipe)
    options = resolve_options(recipe.export, trt=trt, precision=precision, onnx_only=onnx_only, device=device,
                              opset=opset,
                              calib_images=calib_images, max_batch=max_batch, dla_core=dla_core,
                              workspace_mib=workspace_mib, fold_bn=fold_bn, accept_new_host_key=accept_new_host_key)
    if not options.trt:  # the opset for --device's TensorRT releases; none named: 17, parsed from 8.5 on
        versions, max_opset = _profile_tensorrt(options.device)
        result = write_exports(folder, recipe, options, opset=target_opset(options, versions, max_opset))
    else:
        result = _export_with_engine(folder, recipe, options)
    result.info["engine_request"] = request_record(request_for(result, options, recipe), folder.root)
    write_info(result)
    return result


def _profile_tensorrt(device: Optional[str]) -> tuple[list[str], Optional[int]]:
    """(TensorRT versions, highest opset) of --device's profile, read without connecting; none for host,
    a bare ssh:// URL or no --device."""
    profile = resolve_device(device).profile if device else None
    return (profile.tensorrt_versions, profile.max_onnx_opset) if profile else ([], None)


def _export_with_engine(folder, recipe: Recipe, options: ExportOptions) -> ExportResult:
    target = resolve_device(options.device or recipe.device.name)
    check_int8_support(options.precision, target.profile)
    run_id = f"export-{uuid.uuid4().hex[:10]}"  # runs on one device never share a folder
    with make_runner(target, accept_new_host_key=options.accept_new_host_key, run_id=run_id) as runner:
        info = runner.run("info", [])
        try:
            _model, version, _tool = tensorrt_facts(info, target.label)
        except DeviceError:
            raise ExportInputError(no_tensorrt(target, options, folder.root, recipe)) from None
        max_opset = target.profile.max_onnx_opset if target.profile else None
        result = write_exports(folder, recipe, options, opset=target_opset(options, [version], max_opset))
        request = request_for(result, options, recipe)
        entry = obtain_engine(runner, info, request, folder.root / ENGINE_DIR, log_dir=folder.root / "build-logs")
    result.engine_path = entry["path"]
    result.info["engine"] = engine_record(entry, folder.root)
    return result


def request_for(result: ExportResult, options: ExportOptions, recipe: Recipe) -> EngineRequest:
    """int8 engines come from the Q/DQ model (its scales), everything else from model.onnx."""
    cfg = recipe.model
    int8_path = result.int8_path if options.precision == Precision.int8 else None
    return engine_request(onnx=int8_path if int8_path is not None else result.onnx_path, precision=options.precision,
                          inputs={INPUT_NAME: (cfg.in_channels, cfg.input_size, cfg.input_size)},
                          max_batch=options.max_batch, workspace_mib=options.workspace_mib, dla_core=options.dla_core)


def engine_record(entry: dict[str, Any], root: Path) -> dict[str, Any]:
    """The engine's export.json entry: paths relative to the run directory."""
    record = {k: v for k, v in entry.items() if k not in ("path", "remote")}
    return {"file": str(Path(entry["path"]).relative_to(root)), **record}


def no_tensorrt(target: Device, options: ExportOptions, run_root: Path, recipe: Recipe) -> str:
    """Why --trt cannot be served on a target without TensorRT, and the two ways that can."""
    int8 = options.precision == Precision.int8
    onnx_name = "model.int8.onnx" if int8 else "model.onnx"
    cfg = recipe.model
    args = argparse.Namespace(onnx=onnx_name, engine="model.engine", precision=options.precision.value,
                              workspace_mb=options.workspace_mib, batch=options.max_batch,
                              max_batch=options.max_batch, timing_cache=None, dla=options.dla_core,
                              shape=[f"{INPUT_NAME}:{cfg.in_channels}x{cfg.input_size}x{cfg.input_size}"])
    trtexec = shlex.join(target_build.trtexec_build_command(target_build.TRTEXEC_PATHS[0], args, None))
    return (f"--trt: {target.label} has no TensorRT (neither the tensorrt module nor trtexec); build on the "
            f"device: `edgecomp export --run {run_root} --trt --precision {options.precision.value} --device "
            f"ssh://user@jetson`, or run `edgecomp export --run {run_root}{' --precision int8' if int8 else ''}`, "
            f"copy {run_root / onnx_name} to the device and run there: {trtexec}")
