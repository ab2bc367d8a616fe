"""Build a TensorRT engine from ONNX on this device; print one JSON object.

    python3 build.py --onnx model.onnx --engine model.engine --precision fp32|fp16|int8
        [--batch 1] [--max-batch N] [--workspace-mb 1024]
        [--timing-cache FILE] [--dla N] [--tool api|trtexec] [--shape NAME:CxHxW]

This is the one program that builds edgecomp's engines, on the host and on a
device alike: edgecomp runs it through a runner with the same arguments.
The Python API path serves TensorRT 8.5+ and 10.x: the EXPLICIT_BATCH flag
on 8.x (implied, flag 0, on 10.x), an optimisation profile for a dynamic
batch (min 1, opt --batch, max --max-batch), the workspace through
set_memory_pool_limit, FP16/INT8 builder flags, build_serialized_network.
INT8 has one meaning: the scales of a Q/DQ model (edgecomp's model.int8.onnx,
calibrated on training images) built with the INT8 and FP16 flags; there is
no implicit calibration here. `--tool trtexec` builds with trtexec instead.
--precision has no default: edgecomp decides it (edgecomp/precision.py).
Engines only run on the GPU model and TensorRT version that built them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # the type checker reads the package imports; the fallback below is the device's
    from . import runtime
    from .bench import tensorrt_version as decode_version
else:
    try:
        from . import runtime
        from .bench import tensorrt_version as decode_version
    except ImportError:
        import runtime
        from bench import tensorrt_version as decode_version

TRTEXEC_PATHS = ["/usr/src/tensorrt/bin/trtexec"]
PRECISIONS = ["fp32", "fp16", "int8"]  # the words of edgecomp.core.precision.Precision (this file imports no edgecomp)


def parse_shape_arg(text: str) -> tuple[str, list[int]]:
    """`input:1x28x28` (the dimensions after the batch) → ("input", [1, 28, 28])."""
    name, sep, dims = text.rpartition(":")
    if not sep or not name or not re.fullmatch(r"\d+(x\d+)*", dims):
        raise RuntimeError(f"--shape {text!r}: expected NAME:CxHxW")
    return name, [int(d) for d in dims.split("x")]


def _major(version: str) -> int:
    return int(version.split(".")[0])


def _minor(version: str) -> tuple[int, int]:
    parts = [int(p) for p in re.findall(r"\d+", version)[:2]] + [0]
    return parts[0], parts[1]


# ---------------------------------------------------------------- trtexec


def trtexec_build_command(trtexec: str, args, tensorrt: Optional[str]) -> list[str]:
    """trtexec's command line; `--memPoolSize` since 8.4, `--workspace` before."""
    command = [trtexec, f"--onnx={args.onnx}", f"--saveEngine={args.engine}", "--skipInference"]
    if args.precision == "fp16":
        command.append("--fp16")
    elif args.precision == "int8":
        command += ["--int8", "--fp16"]  # the Q/DQ model carries the scales
    if tensorrt and _minor(tensorrt) < (8, 4):
        command.append(f"--workspace={args.workspace_mb}")
    else:
        command.append(f"--memPoolSize=workspace:{args.workspace_mb}M")
    for text in args.shape:
        name, dims = parse_shape_arg(text)
        tail = "x".join(str(d) for d in dims)
        command += [f"--minShapes={name}:1x{tail}", f"--optShapes={name}:{args.batch}x{tail}",
                    f"--maxShapes={name}:{max(args.batch, args.max_batch or 0)}x{tail}"]
    if args.timing_cache:
        command.append(f"--timingCacheFile={args.timing_cache}")
    if args.dla is not None:
        command += [f"--useDLACore={args.dla}", "--allowGPUFallback"]
    return command


def build_with_trtexec(args) -> dict[str, Any]:
    trtexec = next((p for p in [*_on_path("trtexec"), *TRTEXEC_PATHS] if os.access(p, os.X_OK)), None)
    if trtexec is None:
        raise RuntimeError("trtexec not found (looked on PATH and in /usr/src/tensorrt/bin)")
    done = subprocess.run(trtexec_build_command(trtexec, args, _tensorrt_version()), capture_output=True, text=True)
    sys.stderr.write(done.stdout + done.stderr)
    if done.returncode != 0 or "&&&& PASSED" not in done.stdout:
        errors = [line for line in (done.stdout + done.stderr).splitlines() if "[E]" in line]
        raise RuntimeError(f"trtexec build failed: {errors[-1] if errors else f'exit code {done.returncode}'}")
    code = re.search(r"\[TensorRT v(\d+)\]", done.stdout)
    return {"tool": "trtexec", "tensorrt": _tensorrt_version() or (decode_version(code.group(1)) if code else None)}


def _on_path(name: str) -> list[str]:
    return [os.path.join(d, name) for d in os.environ.get("PATH", "").split(os.pathsep) if d]


def _tensorrt_version() -> Optional[str]:
    try:
        import tensorrt
    except Exception:  # noqa: BLE001
        return None
    return tensorrt.__version__


# ---------------------------------------------------------------- Python API


def _parse_onnx(trt, builder, logger, path: str):
    major = _major(trt.__version__)
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(path):  # reads external weights beside the file too
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT {trt.__version__} cannot parse {os.path.basename(path)}: "
                           + ("; ".join(errors) or "unknown parser error"))
    return network, parser


def _profile(builder, network, args):
    """One optimisation profile: a dynamic batch from 1 to max(--batch, --max-batch)."""
    profile, dynamic = builder.create_optimization_profile(), False
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        dims = list(tensor.shape)
        if all(d >= 0 for d in dims):
            continue
        if any(d < 0 for d in dims[1:]):
            raise RuntimeError(f"input {tensor.name!r} {dims} has dynamic dimensions besides the batch")
        top = max(args.batch, args.max_batch or 0)
        profile.set_shape(tensor.name, [1, *dims[1:]], [args.batch, *dims[1:]], [top, *dims[1:]])
        dynamic = True
    return profile if dynamic else None


def _set_precision(trt, builder, config, args) -> list[str]:
    """FP16 for fp16; FP16 + INT8 for int8, whose scales come from the model's Q/DQ nodes."""
    notes = []
    flags = trt.BuilderFlag
    if args.precision in ("fp16", "int8"):
        if not hasattr(flags, "FP16"):
            raise RuntimeError(f"TensorRT {trt.__version__} has no FP16 flag (strong typing): give a typed model")
        if not builder.platform_has_fast_fp16:
            notes.append("this GPU has no fast FP16")
        config.set_flag(flags.FP16)
    if args.precision == "int8":
        if not builder.platform_has_fast_int8:
            raise RuntimeError("this GPU has no fast INT8 (e.g. Jetson Nano): build fp16")
        config.set_flag(flags.INT8)
    return notes


def _use_dla(trt, builder, config, args) -> None:
    if args.dla is None:
        return
    if builder.num_DLA_cores <= args.dla:
        raise RuntimeError(f"--dla {args.dla}: this device has {builder.num_DLA_cores} DLA cores")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = args.dla
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _timing_cache(config, path: Optional[str]):
    blob = b""
    if path and os.path.isfile(path):
        with open(path, "rb") as handle:
            blob = handle.read()
    cache = config.create_timing_cache(blob)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def build_with_api(args) -> dict[str, Any]:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse_onnx(trt, builder, logger, args.onnx)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, args.workspace_mb * 2**20)
    profile = _profile(builder, network, args)
    if profile is not None:
        config.add_optimization_profile(profile)
    notes = _set_precision(trt, builder, config, args)
    _use_dla(trt, builder, config, args)
    _timing_cache(config, args.timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:  # out of memory on 4 GB devices is the usual cause
        raise RuntimeError(f"TensorRT engine build failed (out of memory? try --workspace-mb {args.workspace_mb // 2})")
    _write(args.engine, bytes(serialized))
    if args.timing_cache:
        _write(args.timing_cache, bytes(config.get_timing_cache().serialize()))
    return {"tool": "api", "tensorrt": trt.__version__, "notes": notes, "dla_cores": builder.num_DLA_cores}


def _write(path: str, blob: bytes) -> None:
    temp = f"{path}.tmp{os.getpid()}"
    with open(temp, "wb") as handle:
        handle.write(blob)
    os.replace(temp, path)  # never a half-written engine under the final name


def run(args) -> dict[str, Any]:
    if not os.path.isfile(args.onnx):
        raise RuntimeError(f"ONNX file not found: {args.onnx}")
    if args.batch < 1 or args.workspace_mb < 1:
        raise RuntimeError("--batch and --workspace-mb must be >= 1")
    start = time.perf_counter()
    result = build_with_trtexec(args) if args.tool == "trtexec" else build_with_api(args)
    if not os.path.isfile(args.engine):
        raise RuntimeError(f"the build reported success but wrote no {args.engine}")
    return {"engine": os.path.basename(args.engine), "bytes": os.path.getsize(args.engine),
            "precision": args.precision, "batch": args.batch, "seconds": time.perf_counter() - start,
            "notes": [], **result}


def parser():
    p = runtime.Parser(prog="build.py", description=__doc__.splitlines()[0])
    p.add_argument("--onnx", required=True)
    p.add_argument("--engine", required=True)
    p.add_argument("--precision", choices=PRECISIONS, required=True)
    p.add_argument("--batch", type=int, default=1, help="batch the engine is tuned for (profile opt)")
    p.add_argument("--max-batch", type=int, default=None, help="largest batch the engine accepts")
    p.add_argument("--workspace-mb", type=int, default=1024)
    p.add_argument("--timing-cache", default=None)
    p.add_argument("--dla", type=int, default=None, help="DLA core to build for (GPU fallback on)")
    p.add_argument("--tool", choices=["api", "trtexec"], default="api")
    p.add_argument("--shape", action="append", default=[], help="trtexec: NAME:CxHxW of a dynamic-batch input")
    return p


if __name__ == "__main__":
    runtime.main("build", parser(), run)
