"""TensorRT: building an engine from the verified ONNX model, and keeping engines apart.

`tensorrt` is imported lazily (`import_tensorrt`), never at module import:
nothing here needs it until an engine is built on this machine. One code path
serves TensorRT 8.5/8.6 (JetPack 5.1-6.0) and 10.x (JetPack 6.1/6.2); where
they differ the branch says why (see shared/reference/tensorrt-jetson.md).

An engine is tied to the GPU model and the exact TensorRT version it was built
with (no hardware compatibility on JetPack), so every engine is stored under a
key — device model, TensorRT version, precision, input shapes and the ONNX
model's digest — with the key's fields in a JSON file beside it. An engine
whose key file is missing or disagrees is never reused (`check_engine`).

Status: the builder code has run only against a fake `tensorrt` module in the
tests (tests/test_export.py), never against real TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .errors import EngineMismatchError, ExportError, ExportInputError
from .rundir import atomic_write, write_text

TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # JetPack's location; often not on PATH
ENGINE_FORMAT = "edgecomp-engine/1"

Shapes = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]  # name -> (min, opt, max)


def import_tensorrt():
    """The `tensorrt` module, or None where it is not installed (this build host, CI)."""
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def default_opset(trt_version: Optional[str]) -> int:
    """The ONNX opset to export for a target TensorRT version.

    TensorRT 8.5/8.6 parse up to opset 17; 10.x reads 19 (and more); 8.0-8.4
    (JetPack 4.6 ships 8.2) are given 13, which they all read. Unknown target:
    17, which every TensorRT from 8.5 on parses.
    """
    if not trt_version:
        return 17
    major_minor = version_tuple(trt_version)[:2]
    if major_minor >= (10, 0):
        return 19
    if major_minor >= (8, 5):
        return 17
    return 13


def shapes_for(input_name: str, channels: int, size: int, max_batch: int) -> Shapes:
    """Optimisation profile of the dynamic batch: min 1, opt = max = max_batch."""
    one, full = (1, channels, size, size), (max_batch, channels, size, size)
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


def engine_key(*, device: str, trt_version: str, precision: str, shapes: Shapes, onnx_sha256: str,
               dla_core: Optional[int] = None) -> EngineKey:
    profile = tuple(sorted((name, "/".join(_dims(s) for s in mmx)) for name, mmx in shapes.items()))
    return EngineKey(device.strip(), trt_version.strip(), str(precision), profile, onnx_sha256, dla_core)


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


# ---------------------------------------------------------------- trtexec (build on the device by hand)


def trtexec_command(onnx_name: str, engine_name: str, precision: str, shapes: Shapes, workspace_mib: int,
                    dla_core: Optional[int] = None) -> str:
    """The trtexec line that builds the same engine on a Jetson (TensorRT 8.5+ and 10.x flags)."""
    parts = [TRTEXEC, f"--onnx={onnx_name}", f"--saveEngine={engine_name}"]
    if precision in ("fp16", "int8"):
        parts.append(f"--{precision}")  # int8 expects the Q/DQ model: its scales are in the graph
    for index, flag in enumerate(("--minShapes", "--optShapes", "--maxShapes")):
        parts.append(f"{flag}=" + ",".join(f"{name}:{_dims(mmx[index])}" for name, mmx in shapes.items()))
    parts.append(f"--memPoolSize=workspace:{workspace_mib}M")  # --workspace is gone in 10.x; this exists since 8.4
    parts.append("--timingCacheFile=timing.cache")
    if dla_core is not None:
        parts += [f"--useDLACore={dla_core}", "--allowGPUFallback"]
    return " ".join(parts)


# ---------------------------------------------------------------- building with the Python API


@dataclass
class BuildSettings:
    precision: str
    shapes: Shapes
    workspace_mib: int = 1024
    dla_core: Optional[int] = None
    timing_cache: Optional[Path] = None
    calib_images: Optional[np.ndarray] = None  # int8: float32 NCHW, preprocessed as in evaluation
    calib_cache: Optional[Path] = None


@dataclass
class BuildReport:
    plan: bytes
    trt_version: str
    flags: list[str] = field(default_factory=list)
    dla_fallback: list[str] = field(default_factory=list)  # layers that run on the GPU instead of the DLA
    timing_cache: Optional[str] = None

    def details(self) -> dict[str, Any]:
        return {"trt_version": self.trt_version, "flags": self.flags, "dla_fallback": self.dla_fallback,
                "timing_cache": self.timing_cache}


def trt_major(trt) -> int:
    return version_tuple(trt.__version__)[0]


def network_flags(trt) -> int:
    """Explicit batch: a creation flag on 8.x; implied on 10.x, where the flag is deprecated (pass 0)."""
    if trt_major(trt) < 10:
        return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    return 0


def build_engine(trt, onnx_path: Path, settings: BuildSettings) -> BuildReport:
    """Build a serialized engine on this machine's GPU (TensorRT 8.5+ / 10.x)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = parse_onnx(trt, builder, logger, onnx_path)  # the parser owns weights: keep it alive
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    profile = add_profile(builder, config, settings.shapes)
    report = BuildReport(b"", trt.__version__, flags=["EXPLICIT_BATCH"] if network_flags(trt) else [])
    report.flags += set_precision(trt, builder, config, settings, profile)
    report.dla_fallback = use_dla(trt, builder, config, network, settings.dla_core)
    if settings.dla_core is not None:
        report.flags += ["DLA", "GPU_FALLBACK"]
    report.timing_cache = load_timing_cache(config, settings.timing_cache)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError("TensorRT could not build the engine (build_serialized_network returned None); "
                          "the TensorRT log above says why (often: workspace too small or out of memory)")
    save_timing_cache(config, settings.timing_cache)
    report.plan = bytes(plan)
    return report


def parse_onnx(trt, builder, logger, onnx_path: Path):
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors or 'no detail'} (try another --opset)")
    return network, parser


def add_profile(builder, config, shapes: Shapes):
    """One optimisation profile for the dynamic batch (8.x and 10.x alike)."""
    profile = builder.create_optimization_profile()
    for name, (smallest, optimal, largest) in shapes.items():
        profile.set_shape(name, smallest, optimal, largest)
    config.add_optimization_profile(profile)
    return profile


def set_precision(trt, builder, config, settings: BuildSettings, profile) -> list[str]:
    """FP16/INT8 builder flags; INT8 by entropy calibration on the recipe's images."""
    if settings.precision == "fp32":
        return []
    if trt_major(trt) >= 11:
        raise ExportInputError(
            f"--precision {settings.precision}: TensorRT {trt.__version__} has no FP16/INT8 builder flags (strong "
            f"typing replaced them); use TensorRT 10.x, or build the Q/DQ model (model.int8.onnx) with trtexec "
            f"--stronglyTyped"
        )
    if settings.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        return ["FP16"]
    if settings.calib_images is None or not len(settings.calib_images):
        raise ExportInputError("--precision int8: no calibration images")
    config.set_flag(trt.BuilderFlag.INT8)
    batch = settings.shapes[next(iter(settings.shapes))][1][0]  # calibration runs at the profile's opt shape
    config.int8_calibrator = make_calibrator(trt, settings.calib_images, batch, settings.calib_cache)
    config.set_calibration_profile(profile)  # dynamic shapes: calibrate with this profile
    return ["INT8"]


def use_dla(trt, builder, config, network, core: Optional[int]) -> list[str]:
    """Put the network on a DLA core with GPU fallback; return the layers the DLA cannot run."""
    if core is None:
        return []
    available = int(getattr(builder, "num_DLA_cores", 0))
    if core >= available:
        raise ExportInputError(f"--dla-core {core}: this device has {available} DLA core(s)")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    return [layer.name for layer in layers if not config.can_run_on_DLA(layer)]


def load_timing_cache(config, path: Optional[Path]) -> Optional[str]:
    """Start from a saved timing cache (rebuilds are much faster); an empty one otherwise."""
    if path is None:
        return None
    data = Path(path).read_bytes() if Path(path).is_file() else b""
    config.set_timing_cache(config.create_timing_cache(data), False)  # False: refuse a mismatched cache
    return "loaded" if data else "new"


def save_timing_cache(config, path: Optional[Path]) -> None:
    if path is None:
        return
    data = bytes(memoryview(config.get_timing_cache().serialize()))
    atomic_write(Path(path), lambda temp: temp.write_bytes(data))


def make_calibrator(trt, images: np.ndarray, batch: int, cache: Optional[Path]):
    """An IInt8EntropyCalibrator2 over `images` (float32 NCHW), fed through CUDA memory owned by torch.

    The class is defined here because its base class lives in `tensorrt`, imported lazily.
    """
    import torch

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            super().__init__()  # TensorRT's pybind trampoline needs the base initialiser
            self.images, self.batch, self.index, self.device_batch = whole_batches(images, batch), batch, 0, None

        def get_batch_size(self) -> int:
            return self.batch

        def get_batch(self, names):
            if self.index >= len(self.images):
                return None  # calibration done
            chunk = np.ascontiguousarray(self.images[self.index : self.index + self.batch], dtype=np.float32)
            self.index += self.batch
            self.device_batch = torch.from_numpy(chunk).cuda()  # kept referenced until the next call
            return [int(self.device_batch.data_ptr())]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache is not None and cache.is_file() else None

        def write_calibration_cache(self, data) -> None:
            if cache is not None:
                payload = bytes(data)
                atomic_write(cache, lambda temp: temp.write_bytes(payload))

    return EntropyCalibrator()


def whole_batches(images: np.ndarray, batch: int) -> np.ndarray:
    """TensorRT reads exactly one opt-shape batch per pointer: drop the remainder, repeat a too-short set."""
    if len(images) < batch:
        images = np.concatenate([images] * -(-batch // len(images)))
    return images[: len(images) - len(images) % batch]


def local_device_model() -> str:
    """The GPU this machine builds for: the Jetson module name, else CUDA's device name."""
    model_file = Path("/proc/device-tree/model")
    if model_file.is_file():
        return model_file.read_bytes().rstrip(b"\x00").decode(errors="replace").strip()
    import torch

    return torch.cuda.get_device_name(0)
