"""The one engine path: every TensorRT engine, here or on a device, is built by `target/build.py`
through a runner, with the same arguments, and kept in the engine store.

    key (device model and TensorRT from info.py, precision, shapes, ONNX digest, DLA core)
      ├─ hit in <run>/engines/  → reused, nothing built
      └─ miss → build.py on the runner (HostRunner here, SshRunner on a device) → fetched → stored

INT8 has one meaning: the Q/DQ model's scales (`model.int8.onnx`, calibrated
on training images by `edgecomp export --precision int8`); a float model is
refused for int8 instead of being calibrated on whatever images are at hand.
`export` and `bench` both come here; neither builds an engine any other way.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..core.errors import DeviceError, EdgecompError, UserInputError
from ..core.precision import Precision, check_dla
from ..core.rundir import sha256 as file_sha256
from .engines import EngineKey, Shapes, engine_key, find_engine, shapes_for, store_engine
from .runners import Runner

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


@dataclass(frozen=True)
class EngineRequest:
    """What engine is wanted; the device facts (model, TensorRT) complete its key."""

    onnx: Path  # the model it is built from: model.onnx, or the Q/DQ model.int8.onnx for int8
    precision: Precision
    shapes: Shapes
    workspace_mib: int = 1024
    dla_core: Optional[int] = None


def engine_request(*, onnx: Path, precision: Precision, inputs: dict[str, tuple[int, ...]], max_batch: int,
                   workspace_mib: int = 1024, dla_core: Optional[int] = None) -> EngineRequest:
    """The one place an engine request is made: export makes it (and records it in export.json), bench reads
    that record back through here. `inputs`: each dynamic-batch input's dims after the batch."""
    shapes: Shapes = {}
    for name, dims in inputs.items():
        shapes.update(shapes_for(name, tuple(int(d) for d in dims), max_batch))
    return EngineRequest(onnx=Path(onnx), precision=Precision(precision), shapes=shapes,
                         workspace_mib=workspace_mib, dla_core=dla_core)


def request_record(request: EngineRequest, root: Path) -> dict[str, Any]:
    """The request as export.json keeps it: the ONNX relative to the run, the profile's batch and dims."""
    maxima = {name: list(mmx[2]) for name, mmx in request.shapes.items()}
    batches = {dims[0] for dims in maxima.values()}
    return {"onnx": str(Path(request.onnx).relative_to(root)), "precision": Precision(request.precision).value,
            "inputs": {name: dims[1:] for name, dims in maxima.items()}, "max_batch": max(batches, default=1),
            "workspace_mib": request.workspace_mib, "dla_core": request.dla_core}


def is_qdq(path: Path) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in QDQ_OPS for node in graph.node)


def check_request(request: EngineRequest) -> None:
    """Refuse, before any connection, what no build can serve."""
    check_dla(request.precision, request.dla_core)
    if request.precision == Precision.int8 and not is_qdq(request.onnx):
        raise UserInputError(
            f"--precision int8: {request.onnx.name} has no Q/DQ nodes; INT8 engines are built from the Q/DQ model "
            f"(`edgecomp export --run DIR --precision int8` writes model.int8.onnx, calibrated on training images)")


def tensorrt_facts(info: dict[str, Any], label: str) -> tuple[str, str, str]:
    """(device model, TensorRT version, build tool) from info.py; a device without TensorRT is refused."""
    version = info.get("tensorrt") or info.get("trtexec_tensorrt")
    if not version:
        raise DeviceError(f"--device {label}: no TensorRT there (neither the tensorrt Python module nor trtexec)")
    tool = "api" if info.get("tensorrt") else "trtexec"
    return info.get("model") or label, version, tool


def build_args(request: EngineRequest, *, onnx: str, engine: str, tool: str, timing_cache: str) -> list[str]:
    """build.py's command line: the same words for every runner (staged files have fixed names)."""
    args = ["--onnx", onnx, "--engine", engine, "--precision", Precision(request.precision).value,
            "--workspace-mb", str(request.workspace_mib), "--tool", tool, "--timing-cache", timing_cache]
    for name, (_low, opt, high) in request.shapes.items():
        args += ["--batch", str(opt[0]), "--max-batch", str(high[0]),
                 "--shape", f"{name}:" + "x".join(str(d) for d in opt[1:])]
    if request.dla_core is not None:
        args += ["--dla", str(request.dla_core)]
    return args


def key_for(request: EngineRequest, info: dict[str, Any], label: str) -> EngineKey:
    device, version, _tool = tensorrt_facts(info, label)
    return engine_key(device=device, trt_version=version, precision=request.precision, shapes=request.shapes,
                      onnx_sha256=file_sha256(request.onnx), dla_core=request.dla_core)


def obtain_engine(runner: Runner, info: dict[str, Any], request: EngineRequest, store: Path, *,
                  name: str = "model", log_dir: Optional[Path] = None) -> dict[str, Any]:
    """The engine for `request` on the runner's device: from the store, else built there and stored.

    Returns its record: `path` (local), `remote` (where the runner's programs see it), `key`, `reused`."""
    check_request(request)
    key = key_for(request, info, runner.label)
    found = find_engine(store, key)
    if found is not None:
        return {"path": found, "remote": runner.stage(found, f"{name}.engine"), "key": key.fields(), "reused": True}
    _device, _version, tool = tensorrt_facts(info, runner.label)
    cache = store / f"{key.name.split('_')[0]}_trt{key.trt_version}.timing.cache"  # shared by the device's builds
    if cache.is_file():
        runner.stage(cache, "timing.cache")
    engine = runner.output(f"{name}.engine")
    args = build_args(request, onnx=runner.stage(request.onnx, f"{name}.onnx"), engine=engine, tool=tool,
                      timing_cache=runner.output("timing.cache"))
    built = runner.run("build", args, tag=f"build-{name}", log_dir=log_dir)
    with tempfile.TemporaryDirectory(prefix="edgecomp-engine-") as scratch:
        runner.fetch(engine, Path(scratch) / "model.engine")
        details = {"onnx": request.onnx.name, "built_on": runner.label,
                   **{k: built.get(k) for k in ("tool", "tensorrt", "notes", "seconds", "dla_cores")}}
        path = store_engine(store, key, (Path(scratch) / "model.engine").read_bytes(), details)
        _keep_timing_cache(runner, cache)
    return {"path": path, "remote": engine, "key": key.fields(), "reused": False, **details}


def _keep_timing_cache(runner: Runner, cache: Path) -> None:
    """Bring the device's timing cache home: the next build of this device starts from it."""
    try:
        runner.fetch(runner.output("timing.cache"), cache)
    except (EdgecompError, OSError):  # trtexec may write none; a missing cache only costs build time
        pass
