"""`edgecomp bench`: latency, throughput, accuracy and power of a model, measured on a device.

On the device (through a runner): `info.py` (facts), the engine from the one
engine path (`builder.obtain_engine`: export's engine from `engines/<key>`
when the key matches, else built there by `build.py` and stored), `bench.py`
(timing), `eval.py` (top-1 on up to 512 preprocessed images of the validation
split), and the same timing for the run's dense model (speed-up).

INT8 is the Q/DQ model's (calibrated by export on training images); the
scoring images are the validation split, and bench.json says both.

Results go to `bench.json` in the run directory (or beside `--model`), one
entry per device, written atomically once every step finished. When a step
fails, what was measured so far goes to `bench.partial.json` ("complete":
false, with the error), never under the final name.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import tempfile
import uuid
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..core.console import console
from ..core.errors import DataError, EdgecompError, UserInputError
from ..core.precision import DEFAULT_PRECISION, Precision, check_int8_support, parse_precision
from ..core.recipe import ExportSection
from ..core.rundir import write_text
from .artifacts import EVAL_SPLIT, dense_onnx, onnx_signature, write_eval_data
from .builder import EngineRequest, obtain_engine
from .devices import Device, resolve_device
from .engines import ENGINE_DIR, shapes_for
from .runners import Runner, make_runner

BENCH_FORMAT = "edgecomp-bench/1"
BENCH_FILE, PARTIAL_FILE = "bench.json", "bench.partial.json"
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


class Backend(str, Enum):
    auto = "auto"
    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"
    trtexec = "trtexec"


@dataclass
class BenchOptions:
    iterations: int = 100
    batch: int = 1
    warmup: int = 10
    backend: Backend = Backend.auto
    precision: Optional[Precision] = None


@dataclass
class BenchResult:
    """What `bench` measured on one device; `entry` is the device's object in bench.json."""

    bench_path: Path
    device: str
    entry: dict[str, Any]

    @property
    def latency_ms(self) -> dict[str, Optional[float]]:
        return self.entry["latency_ms"]

    @property
    def p50_ms(self) -> Optional[float]:
        return self.entry["latency_ms"].get("p50")

    @property
    def throughput_fps(self) -> Optional[float]:
        return self.entry["throughput_fps"]

    @property
    def accuracy(self) -> Optional[float]:
        return self.entry["accuracy"]

    @property
    def speedup(self) -> Optional[float]:
        return self.entry["speedup"]


@dataclass
class Job:
    """What to measure: the model, where results go, and the optional eval data and dense model."""

    model: Path
    out_dir: Path
    qdq_model: Optional[Path] = None  # the exporter's model.int8.onnx: INT8 engines are built from it
    onnx_inputs: list[dict[str, Any]] = field(default_factory=list)
    opset: Optional[int] = None
    eval_data: Optional[Path] = None
    dense: Optional[Path] = None
    precision: Precision = DEFAULT_PRECISION  # the recipe's export.precision for a run
    max_batch: int = ExportSection().max_batch  # the engine profile export builds: its engine is reused
    calibration: Optional[dict[str, Any]] = None  # export.json's int8 record: which images calibrated it
    device: Optional[str] = None  # the recipe's device.name: the default --device of a run
    warnings: list[str] = field(default_factory=list)

    @property
    def is_engine(self) -> bool:
        return self.model.suffix in ENGINE_SUFFIXES


# ---------------------------------------------------------------- the public function


def bench(
    *,
    run: Optional[Path] = None,
    model: Optional[Path] = None,
    device: Optional[str] = None,
    iterations: int = 100,
    batch: int = 1,
    warmup: int = 10,
    backend: Backend | str = Backend.auto,
    precision: Precision | str | None = None,
    accept_new_host_key: bool = False,
    ssh_options: Optional[Sequence[str]] = None,
    remote_python: Optional[str] = None,
    evaluate: bool = True,
) -> BenchResult:
    """Measure a run's `model.onnx` (or a given .onnx/.engine) on a device (default: the recipe's
    device.name, else host); writes bench.json."""
    options = _options(iterations, batch, warmup, backend, precision)
    with tempfile.TemporaryDirectory(prefix="edgecomp-bench-") as scratch:
        job = plan_job(run, model, options, Path(scratch), evaluate)
        target = resolve_device(device or job.device or "host")
        entry = _new_entry(target, job, options)
        with make_runner(target, accept_new_host_key=accept_new_host_key, ssh_options=ssh_options,
                         remote_python=remote_python, run_id=_run_id(job)) as runner:  # kept on the device on error
            try:
                measure(runner, target, job, options, entry, log_dir_for(job, target))
            except EdgecompError as error:
                _write_partial(job, target, entry, error)
                raise
    return BenchResult(_write_complete(job, target, entry), target.label, entry)


def measure_latency_ms(onnx_path: Path, device: str = "host", iterations: int = 50, batch: int = 1) -> float:
    """p50 latency (ms) of an ONNX model on a device, e.g. after each pruning step; writes nothing."""
    options = _options(iterations, batch, min(10, iterations), Backend.auto, None)
    target = resolve_device(device)
    with tempfile.TemporaryDirectory(prefix="edgecomp-latency-") as scratch:
        job = plan_job(None, Path(onnx_path), options, Path(scratch), evaluate=False)
        entry = _new_entry(target, job, options)
        with make_runner(target, run_id=_run_id(job)) as runner:
            measure(runner, target, job, options, entry, log_dir=None)
    return entry["latency_ms"]["p50"]


def _options(iterations, batch, warmup, backend, precision) -> BenchOptions:
    for name, value, low in (("--iterations", iterations, 1), ("--batch", batch, 1), ("--warmup", warmup, 0)):
        if value < low:
            raise UserInputError(f"{name}: must be >= {low} (got {value})")
    try:
        chosen = Backend(backend)
    except ValueError:
        raise UserInputError(f"--backend: must be auto, onnxruntime, tensorrt or trtexec (got {backend!r})") from None
    return BenchOptions(iterations, batch, warmup, chosen, parse_precision(precision))


def _run_id(job: Job) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", job.out_dir.name or "model").strip("-") or "model"
    return f"{stem[:40]}-{_dt.datetime.now():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


# ---------------------------------------------------------------- planning (host side, before any connection)


def plan_job(run: Optional[Path], model: Optional[Path], options: BenchOptions, scratch: Path,
             evaluate: bool) -> Job:
    if run is not None and model is not None:
        raise UserInputError("--run and --model: give one of them")
    if run is None and model is None:
        raise UserInputError("--run or --model: give the run directory or the model file")
    job = _run_job(Path(run), options) if run is not None else _model_job(Path(model))
    if not job.is_engine:
        job.onnx_inputs, job.opset = onnx_signature(job.model, options.batch)
    if run is not None:
        _add_run_extras(job, Path(run), scratch, evaluate)
    return job


def _model_job(model: Path) -> Job:
    if not model.is_file():
        raise UserInputError(f"--model: {model} does not exist")
    if model.suffix != ".onnx" and model.suffix not in ENGINE_SUFFIXES:
        raise UserInputError(f"--model: {model} is neither .onnx nor a TensorRT engine (.engine/.plan)")
    return Job(model=model, out_dir=model.resolve().parent)


def _run_job(run: Path, options: BenchOptions) -> Job:
    if not (run / "recipe.yaml").is_file():
        raise UserInputError(f"--run: {run} is not a run directory (no recipe.yaml)")
    model = run / "model.onnx"
    if not model.is_file():
        raise UserInputError(f"--run: {model} does not exist; run `edgecomp export --run {run}` first")
    return Job(model=model, out_dir=run.resolve())


def _add_run_extras(job: Job, run: Path, scratch: Path, evaluate: bool) -> None:
    from ..core.recipe import load_recipe

    recipe = load_recipe(run / "recipe.yaml")
    job.precision, job.max_batch, job.device = recipe.export.precision, recipe.export.max_batch, recipe.device.name
    if (run / "model.int8.onnx").is_file():
        job.qdq_model = run / "model.int8.onnx"
        job.calibration = _calibration_record(run)
    if evaluate:
        try:
            job.eval_data = write_eval_data(recipe, scratch / "eval.npz")
        except DataError as error:
            job.warnings.append(f"accuracy not measured: {str(error).splitlines()[0]}")
    job.dense = dense_onnx(run)


def _calibration_record(run: Path) -> dict[str, Any]:
    """Which images calibrated model.int8.onnx, as export.json recorded it."""
    try:
        int8 = json.loads((run / "export.json").read_text()).get("int8") or {}
    except (OSError, ValueError):
        int8 = {}
    return {"split": int8.get("calib_split", "unknown"), "images": int8.get("calib_images"),
            "file": int8.get("calib_file")}


# ---------------------------------------------------------------- measuring (through the runner)


def _new_entry(target: Device, job: Job, options: BenchOptions) -> dict[str, Any]:
    return {
        "device": target.label, "profile": target.profile.name if target.profile else None,
        "connection": target.connection.url if target.connection else None,
        "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": job.model.name, "backend": None, "provider": None, "precision": None,
        "batch": options.batch, "iterations": options.iterations, "warmup": options.warmup,
        "latency_ms": None, "throughput_fps": None, "peak_rss_mb": None, "device_memory_mb": None,
        "power": None, "accuracy": None, "accuracy_samples": None, "accuracy_split": None,
        "int8_calibration": None, "dense": None, "speedup": None,
        "engine": None, "trtexec": None, "info": None, "warnings": list(job.warnings), "steps_done": [],
    }


def log_dir_for(job: Job, target: Device) -> Path:
    """Each program's JSON and log, fetched back: <out>/bench-logs/<device>/."""
    return job.out_dir / "bench-logs" / re.sub(r"[^A-Za-z0-9._-]+", "_", target.label)


def measure(runner: Runner, target: Device, job: Job, options: BenchOptions, entry: dict[str, Any],
            log_dir: Optional[Path]) -> None:
    """Fill `entry` step by step, so that a failure leaves what was measured."""
    call = _caller(runner, log_dir)
    model = runner.stage(job.model, "model" + job.model.suffix)
    dense = runner.stage(job.dense, "dense.onnx") if job.dense else None
    data = runner.stage(job.eval_data, "eval.npz") if job.eval_data else None
    entry["info"] = _step(entry, "info", lambda: call("info", []))
    backend, provider = choose_backend(options.backend, job, entry["info"], target)
    _check_device_fit(target, job, backend, options, entry)
    engine = _engine(runner, job, options, entry, log_dir) if _needs_build(job, backend) else model
    timing = _step(entry, "bench", lambda: call("bench", _bench_args(engine, backend, provider, options, job)))
    _record_timing(entry, timing, backend, job, options)
    if data is not None and backend == Backend.trtexec.value and not entry["info"].get("tensorrt"):
        entry["warnings"].append("accuracy not measured: trtexec times engines, eval.py needs TensorRT's Python API")
    elif data is not None:
        _measure_accuracy(call, entry, engine, data, backend, provider, options)
        entry["accuracy_split"] = EVAL_SPLIT
    if dense is not None:
        _measure_dense(call, runner, job, options, backend, provider, dense, entry, log_dir)


def _caller(runner: Runner, log_dir: Optional[Path]) -> Callable[..., dict[str, Any]]:
    def call(program: str, args: list[str], tag: Optional[str] = None) -> dict[str, Any]:
        with console.status(f"[bold]{tag or program}[/] on {runner.label}"):
            return runner.run(program, args, tag=tag, log_dir=log_dir)

    return call


def _step(entry: dict[str, Any], name: str, action: Callable[[], Any]) -> Any:
    result = action()
    entry["steps_done"].append(name)
    return result


def choose_backend(requested: Backend, job: Job, info: dict[str, Any], target: Device) -> tuple[str, str]:
    """(backend, onnxruntime provider): TensorRT where the device has it, else onnxruntime."""
    ort = info.get("onnxruntime") or {}
    provider = "cuda" if not target.is_local and "CUDAExecutionProvider" in ort.get("providers", []) else "cpu"
    if requested != Backend.auto:
        return requested.value, provider
    if job.is_engine:
        if info.get("tensorrt"):
            return Backend.tensorrt.value, provider
        if info.get("trtexec"):
            return Backend.trtexec.value, provider
        raise UserInputError(f"--model: {job.model.name} is a TensorRT engine but {target.label} has no TensorRT")
    if info.get("tensorrt") and not target.is_local:
        return Backend.tensorrt.value, provider
    if ort:
        return Backend.onnxruntime.value, provider
    if info.get("tensorrt"):
        return Backend.tensorrt.value, provider
    raise UserInputError(f"--device {target.label}: has neither TensorRT nor onnxruntime for python "
                         f"{info.get('python')} (install one, or set EDGECOMP_REMOTE_PYTHON)")


def _needs_build(job: Job, backend: str) -> bool:
    return not job.is_engine and backend in (Backend.tensorrt.value, Backend.trtexec.value)


def _check_device_fit(target: Device, job: Job, backend: str, options: BenchOptions, entry: dict) -> None:
    profile, warnings = target.profile, entry["warnings"]
    check_int8_support(options.precision or job.precision, profile)
    if profile and profile.max_onnx_opset and job.opset and job.opset > profile.max_onnx_opset \
            and backend != Backend.onnxruntime.value:
        warnings.append(f"{job.model.name} uses ONNX opset {job.opset}; some {profile.name} TensorRT "
                        f"releases parse only up to {profile.max_onnx_opset}")
    mode, wanted = (entry["info"] or {}).get("power_mode"), profile.power_mode if profile else None
    if wanted is not None and mode and mode.get("name") != wanted.name:
        warnings.append(f"power mode is {mode.get('name')}, {profile.name} is timed in {wanted.name}: "
                        f"sudo nvpmodel -m {wanted.id} && sudo jetson_clocks")
    if options.precision is not None and backend == Backend.onnxruntime.value:
        warnings.append(f"--precision {options.precision.value}: onnxruntime runs the ONNX model as exported")
    for warning in warnings:
        console.print(f"[yellow]warning[/]: {warning}")


def engine_request(job: Job, options: BenchOptions, onnx: Path) -> EngineRequest:
    """The engine export would build for this model (same profile: export's engine is reused on a key hit);
    int8 from the Q/DQ model."""
    precision = options.precision or job.precision
    source = job.qdq_model if precision == Precision.int8 and job.qdq_model is not None and onnx == job.model \
        else onnx
    top = max(options.batch, job.max_batch)
    shapes = {}
    for name, dims in (s.rsplit(":", 1) for s in _shape_args(job)):
        shapes.update(shapes_for(name, tuple(int(d) for d in dims.split("x")), top))
    return EngineRequest(onnx=source, precision=precision, shapes=shapes)


def _engine(runner: Runner, job: Job, options: BenchOptions, entry: dict[str, Any], log_dir: Optional[Path],
            onnx: Optional[Path] = None, name: str = "model") -> str:
    """The engine of `onnx` (the job's model by default) on the device; returns where the device sees it."""
    request = engine_request(job, options, onnx or job.model)
    record = _step(entry, f"engine-{name}", lambda: obtain_engine(
        runner, entry["info"], request, job.out_dir / ENGINE_DIR, name=name, log_dir=log_dir))
    if name == "model":
        entry["engine"] = {k: str(v) if isinstance(v, Path) else v for k, v in record.items() if k != "remote"}
        entry["precision"] = request.precision.value
        if request.precision == Precision.int8:
            entry["int8_calibration"] = job.calibration or {"split": "unknown (a Q/DQ model given with --model)"}
    return record["remote"]


def _shape_args(job: Job) -> list[str]:
    """NAME:CxHxW of each dynamic-batch input, for trtexec's min/opt/max shapes."""
    shapes = []
    for tensor in job.onnx_inputs:
        dims = tensor["dims"]
        if dims and dims[0] is None and all(d is not None for d in dims[1:]):
            shapes.append(f"{tensor['name']}:" + "x".join(str(d) for d in dims[1:]))
    return shapes


def _bench_args(model: str, backend: str, provider: str, options: BenchOptions, job: Job) -> list[str]:
    args = ["--model", model, "--backend", backend, "--provider", provider, "--iterations", str(options.iterations),
            "--warmup", str(options.warmup), "--batch", str(options.batch)]
    if backend == Backend.trtexec.value:
        args += [f"--shape={name}:{options.batch}x{dims}" for name, dims in
                 (s.rsplit(":", 1) for s in _shape_args(job))]
    return args


def _record_timing(entry: dict[str, Any], timing: dict[str, Any], backend: str, job: Job,
                   options: BenchOptions) -> None:
    for key in ("latency_ms", "throughput_fps", "peak_rss_mb", "device_memory_mb", "power", "provider"):
        entry[key] = timing.get(key)
    entry["backend"] = backend
    if entry["precision"] is None and not job.is_engine:
        entry["precision"] = "fp32"  # onnxruntime runs the ONNX model as exported
    entry["trtexec"] = timing.get("trtexec")


def _measure_accuracy(call, entry, model: str, data: str, backend: str, provider: str, options) -> None:
    eval_backend = Backend.tensorrt.value if backend == Backend.trtexec.value else backend
    args = ["--model", model, "--data", data, "--batch", str(options.batch), "--backend", eval_backend,
            "--provider", provider]
    result = _step(entry, "eval", lambda: call("eval", args))
    entry["accuracy"], entry["accuracy_samples"] = result["accuracy"], result["samples"]


def _measure_dense(call, runner, job: Job, options: BenchOptions, backend: str, provider: str, dense: str,
                   entry: dict[str, Any], log_dir: Optional[Path]) -> None:
    precision = options.precision or job.precision
    if _needs_build(job, backend) and precision == Precision.int8:
        entry["warnings"].append("speed-up not measured: the dense model has no Q/DQ (int8) model to build from")
        return
    model = _engine(runner, job, options, entry, log_dir, onnx=job.dense, name="dense") \
        if _needs_build(job, backend) else dense
    args = _bench_args(model, backend, provider, options, job)
    timing = _step(entry, "bench-dense", lambda: call("bench", args, tag="bench-dense"))
    entry["dense"] = {key: timing.get(key) for key in ("latency_ms", "throughput_fps", "peak_rss_mb")}
    dense_p50, p50 = timing["latency_ms"].get("p50"), entry["latency_ms"].get("p50")
    entry["speedup"] = dense_p50 / p50 if dense_p50 and p50 else None


# ---------------------------------------------------------------- bench.json


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    write_text(path, json.dumps(payload, indent=2, default=str) + "\n")  # atomic: never a half-written file


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == BENCH_FORMAT else None


def _document(job: Job, devices: dict[str, Any], complete: bool, error: Optional[str] = None) -> dict[str, Any]:
    document = {"format": BENCH_FORMAT, "complete": complete, "model": job.model.name, "devices": devices}
    if error is not None:
        document["error"] = error
    return document


def _write_complete(job: Job, target: Device, entry: dict[str, Any]) -> Path:
    path = job.out_dir / BENCH_FILE
    existing = _read_json(path)
    devices = existing["devices"] if existing and existing.get("model") == job.model.name else {}
    devices[target.label] = entry
    _write_json(path, _document(job, devices, complete=True))
    partial = _read_json(job.out_dir / PARTIAL_FILE)
    if partial and set(partial.get("devices", {})) <= {target.label}:
        (job.out_dir / PARTIAL_FILE).unlink(missing_ok=True)  # superseded by this complete measurement
    return path


def _write_partial(job: Job, target: Device, entry: dict[str, Any], error: EdgecompError) -> None:
    """Keep what was measured; nothing to keep when only the device facts came back before a mistake of
    the user's (say, an engine for a device without TensorRT)."""
    measured = [step for step in entry["steps_done"] if step != "info"]
    if not measured and (not entry["steps_done"] or isinstance(error, UserInputError)):
        return
    message = str(error).splitlines()[0]
    _write_json(job.out_dir / PARTIAL_FILE, _document(job, {target.label: entry}, complete=False, error=message))
