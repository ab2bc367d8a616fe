"""`edgecomp bench`: latency, throughput, accuracy and power of a model, measured on a device.

Bench measures what export wrote and never exports again: export.json names
the model, the Q/DQ model, the evaluation images (`eval.npz`, validation
split), the dense model (`dense.onnx`) and the engine request (precision,
profile, workspace, DLA core). On the device (through a runner): `info.py`
(facts), the engine from the one engine path (`builder.obtain_engine` with
export's request: export's engine from `engines/<key>` when the key matches,
else built there by `build.py` and stored), `bench.py` (timing), `eval.py`
(top-1 on the evaluation images), and the same timing for the dense model at
the same precision (speed-up).

onnxruntime runs the ONNX models as exported: model.onnx is fp32, the Q/DQ
model.int8.onnx is int8 (`--precision int8`); each entry says which it timed.

Results of a run go to its `bench.json`, one entry per (device, precision)
(format edgecomp-bench/2; a /1 file's entries are kept), written atomically
once every step finished. `--model FILE` writes `<stem>.bench.json` beside the
file and never a run's bench.json: a run's results change only through
`--run`. When a step fails, what was measured so far goes to the matching
`.partial.json` ("complete": false, with the error), never under the final name.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from ..core.console import console
from ..core.errors import EdgecompError, UserInputError
from ..core.precision import DEFAULT_PRECISION, Precision, check_int8_support, parse_precision
from ..core.recipe import ExportSection
from ..core.rundir import write_text
from .artifacts import EVAL_SPLIT, dynamic_inputs, onnx_signature, read_export, recorded_file
from .builder import EngineRequest, engine_request, is_qdq, obtain_engine
from .devices import Device, resolve_device
from .engines import ENGINE_DIR
from .runners import Runner, make_runner

BENCH_FORMAT = "edgecomp-bench/2"  # /2: entries keyed "device/precision"; /1 kept one entry per device
BENCH_FILE, PARTIAL_FILE = "bench.json", "bench.partial.json"
MODEL_SUFFIX, MODEL_PARTIAL_SUFFIX = ".bench.json", ".bench.partial.json"  # <stem>.bench.json beside --model
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
    """What `bench` measured on one device at one precision; `entry` is that (device, precision) entry."""

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
    """What to measure: the model, where results go, and what export recorded beside it."""

    model: Path
    out_dir: Path
    results: str = BENCH_FILE  # the run's bench.json, or <stem>.bench.json beside a --model file
    partial: str = PARTIAL_FILE
    logs: str = ""  # sub-folder of bench-logs/: "" for a run, the model's stem for --model
    qdq_model: Optional[Path] = None  # export's model.int8.onnx: int8 is timed / built from it
    onnx_inputs: list[dict[str, Any]] = field(default_factory=list)
    opset: Optional[int] = None
    qdq: bool = False  # the model has Q/DQ nodes: an int8 model
    eval_data: Optional[Path] = None  # export's eval.npz
    dense: Optional[Path] = None  # export's dense.onnx
    precision: Precision = DEFAULT_PRECISION  # export's engine precision: TensorRT's default
    max_batch: int = ExportSection().max_batch  # export's engine profile: its engine is reused
    workspace_mib: int = ExportSection().workspace_mib
    dla_core: Optional[int] = None  # export's DLA core: part of the engine key
    inputs: Optional[dict[str, tuple[int, ...]]] = None  # export's profile dims; None: the ONNX signature's
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
    """Measure a run's `model.onnx` (int8: its `model.int8.onnx`), or a given .onnx/.engine, on a device
    (default: the recipe's device.name, else host); writes the run's bench.json, or <stem>.bench.json beside
    a --model file."""
    options = _options(iterations, batch, warmup, backend, precision)
    job = plan_job(run, model, options, evaluate)
    target = resolve_device(device or job.device or "host")
    entry = _new_entry(target, job, options)
    with make_runner(target, accept_new_host_key=accept_new_host_key, ssh_options=ssh_options,
                     remote_python=remote_python, run_id=_run_id(job)) as runner:  # kept on the device on error
        try:
            measure(runner, target, job, options, entry, log_dir_for(job, target))
        except EdgecompError as error:
            _write_partial(job, entry, error)
            raise
    return BenchResult(_write_complete(job, entry), target.label, entry)


def measure_latency_ms(onnx_path: Path, device: str = "host", iterations: int = 50, batch: int = 1) -> float:
    """p50 latency (ms) of an ONNX model on a device, e.g. after each pruning step; writes nothing."""
    options = _options(iterations, batch, min(10, iterations), Backend.auto, None)
    target = resolve_device(device)
    job = plan_job(None, Path(onnx_path), options, evaluate=False)
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


def plan_job(run: Optional[Path], model: Optional[Path], options: BenchOptions, evaluate: bool) -> Job:
    if run is not None and model is not None:
        raise UserInputError("--run and --model: give one of them")
    if run is None and model is None:
        raise UserInputError("--run or --model: give the run directory or the model file")
    if run is not None:
        job = _run_job(Path(run), options)
    else:
        assert model is not None  # one of run and model is given (checked above)
        job = _model_job(Path(model))
    if not job.is_engine:
        job.onnx_inputs, job.opset = onnx_signature(job.model, options.batch)
        job.qdq = is_qdq(job.model)
    if job.qdq and options.precision not in (None, Precision.int8):
        raise UserInputError(f"--precision {options.precision.value}: {job.model.name} is a Q/DQ (int8) model")
    if job.qdq:
        job.precision = Precision.int8  # a Q/DQ model given with --model is int8, whatever the default
    if run is not None:
        _add_run_extras(job, Path(run), evaluate)
    return job


def _model_job(model: Path) -> Job:
    """A file outside a run's flow: its results go beside it as <stem>.bench.json, never into a run's."""
    if not model.is_file():
        raise UserInputError(f"--model: {model} does not exist")
    if model.suffix != ".onnx" and model.suffix not in ENGINE_SUFFIXES:
        raise UserInputError(f"--model: {model} is neither .onnx nor a TensorRT engine (.engine/.plan)")
    stem = model.name[: -len(model.suffix)]
    return Job(model=model, out_dir=model.resolve().parent, results=stem + MODEL_SUFFIX,
               partial=stem + MODEL_PARTIAL_SUFFIX, logs=stem)


def _run_job(run: Path, options: BenchOptions) -> Job:
    if not (run / "recipe.yaml").is_file():
        raise UserInputError(f"--run: {run} is not a run directory (no recipe.yaml)")
    model = run / "model.onnx"
    if not model.is_file():
        raise UserInputError(f"--run: {model} does not exist; run `edgecomp export --run {run}` first")
    return Job(model=model, out_dir=run.resolve())


def _add_run_extras(job: Job, run: Path, evaluate: bool) -> None:
    """What export recorded (export.json); the recipe only for device.name, and for the engine settings of
    an export.json written before it recorded its engine request."""
    from ..core.recipe import load_recipe

    recipe = load_recipe(run / "recipe.yaml")
    info = read_export(run) or {}
    again = f"`edgecomp export --run {run}` again records it"
    job.device = recipe.device.name
    request = info.get("engine_request")
    if request:
        job.precision, job.max_batch = Precision(request["precision"]), request["max_batch"]
        job.workspace_mib, job.dla_core = request["workspace_mib"], request["dla_core"]
        job.inputs = {name: tuple(dims) for name, dims in request["inputs"].items()}
    else:
        section = recipe.export
        job.precision, job.max_batch = section.precision, section.max_batch
        job.workspace_mib, job.dla_core = section.workspace_mib, section.dla_core
    int8 = info.get("int8")
    job.qdq_model = recorded_file(run, int8)
    if job.qdq_model is not None:
        assert int8 is not None  # the Q/DQ model was found through this record
        job.calibration = {"split": int8.get("calib_split", "unknown"), "images": int8.get("calib_images"),
                           "file": int8.get("calib_file")}
    job.eval_data = recorded_file(run, info.get("eval")) if evaluate else None
    if evaluate and job.eval_data is None:
        job.warnings.append(f"accuracy not measured: export.json records no evaluation images; {again}")
    job.dense = recorded_file(run, info.get("dense"))
    if job.dense is None and "dense" not in info:  # recorded None: the run has no dense step
        job.warnings.append(f"speed-up not measured: export.json records no dense model; {again}")


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
    """Each program's JSON and log, fetched back: <out>/bench-logs/[<model stem>/]<device>/."""
    folder = job.out_dir / "bench-logs" / job.logs if job.logs else job.out_dir / "bench-logs"
    return folder / re.sub(r"[^A-Za-z0-9._-]+", "_", target.label)


def measure(runner: Runner, target: Device, job: Job, options: BenchOptions, entry: dict[str, Any],
            log_dir: Optional[Path]) -> None:
    """Fill `entry` step by step, so that a failure leaves what was measured."""
    call = _caller(runner, log_dir)
    entry["info"] = _step(entry, "info", lambda: call("info", []))
    backend, provider = choose_backend(options.backend, job, entry["info"], target)
    _check_device_fit(target, job, backend, options, entry)
    if _needs_build(job, backend):
        model = _engine(runner, job, options, entry, log_dir)
    else:
        timed, entry["precision"] = _as_exported(job, options, target)
        entry["model"] = timed.name
        if entry["precision"] == Precision.int8.value:
            entry["int8_calibration"] = _calibration(job, timed)
        model = runner.stage(timed, "model" + timed.suffix)
    data = runner.stage(job.eval_data, "eval.npz") if job.eval_data else None
    timing = _step(entry, "bench", lambda: call("bench", _bench_args(model, backend, provider, options, job)))
    _record_timing(entry, timing, backend)
    if data is not None and backend == Backend.trtexec.value and not entry["info"].get("tensorrt"):
        entry["warnings"].append("accuracy not measured: trtexec times engines, eval.py needs TensorRT's Python API")
    elif data is not None:
        _measure_accuracy(call, entry, model, data, backend, provider, options)
        entry["accuracy_split"] = EVAL_SPLIT
    if job.dense is not None:
        _measure_dense(call, runner, job, options, backend, provider, entry, log_dir)


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
        assert profile is not None  # wanted came from it
        warnings.append(f"power mode is {mode.get('name')}, {profile.name} is timed in {wanted.name}: "
                        f"sudo nvpmodel -m {wanted.id} && sudo jetson_clocks")
    for warning in warnings:
        console.print(f"[yellow]warning[/]: {warning}")


def _as_exported(job: Job, options: BenchOptions, target: Device) -> tuple[Path, Optional[str]]:
    """The file onnxruntime times, and its precision: ONNX runs as exported, so model.onnx is fp32 and the
    Q/DQ model int8; a precision no exported file has is refused, never timed as another."""
    if job.is_engine:
        return job.model, None  # --backend tensorrt/trtexec forced on an engine: its precision is in the plan
    wanted = options.precision
    if wanted == Precision.fp16:
        raise UserInputError(f"--precision fp16: onnxruntime on {target.label} runs the ONNX models as exported "
                             f"(fp32, or the int8 Q/DQ model); fp16 is a TensorRT build setting")
    if wanted == Precision.int8 and job.qdq_model is not None:
        return job.qdq_model, Precision.int8.value
    if wanted == Precision.int8 and not job.qdq:
        raise UserInputError(f"--precision int8: no Q/DQ model for {job.model.name}; `edgecomp export --run DIR "
                             f"--precision int8` writes model.int8.onnx (bench it with --run DIR --precision int8)")
    return job.model, Precision.int8.value if job.qdq else Precision.fp32.value


def request_for(job: Job, options: BenchOptions, onnx: Path) -> EngineRequest:
    """Export's engine request (export.json), at bench's --precision and a profile wide enough for --batch;
    with export's DLA core, so that export's engine is reused on a key hit."""
    inputs = job.inputs if job.inputs is not None else dynamic_inputs(job.onnx_inputs)
    return engine_request(onnx=onnx, precision=options.precision or job.precision, inputs=inputs,
                          max_batch=max(options.batch, job.max_batch), workspace_mib=job.workspace_mib,
                          dla_core=job.dla_core)


def _engine(runner: Runner, job: Job, options: BenchOptions, entry: dict[str, Any], log_dir: Optional[Path],
            name: str = "model") -> str:
    """The engine of the job's model (int8: its Q/DQ model) or of the dense model; where the device sees it."""
    precision = options.precision or job.precision
    if name == "dense":
        onnx = job.dense
    else:
        onnx = job.qdq_model if precision == Precision.int8 and job.qdq_model is not None else job.model
    assert onnx is not None  # the dense engine is built only for a run that has its dense model (_measure_dense)
    request = request_for(job, options, onnx)
    if request.dla_core is not None and request.precision == Precision.fp32:  # export's DLA core, bench's fp32
        raise UserInputError(f"--precision fp32: export built for DLA core {request.dla_core} (export.json), which "
                             f"runs fp16 or int8 only; export without --dla-core for a GPU fp32 engine")
    record = _step(entry, f"engine-{name}", lambda: obtain_engine(
        runner, entry["info"], request, job.out_dir / ENGINE_DIR, name=name, log_dir=log_dir))
    if name == "model":
        entry["engine"] = {k: str(v) if isinstance(v, Path) else v for k, v in record.items() if k != "remote"}
        entry["precision"], entry["model"] = request.precision.value, onnx.name
        if request.precision == Precision.int8:
            entry["int8_calibration"] = _calibration(job, onnx)
    return record["remote"]


def _calibration(job: Job, qdq: Path) -> dict[str, Any]:
    """Which images calibrated the Q/DQ model: export.json's record for a run's own, unknown for a file."""
    if qdq == job.qdq_model and job.calibration:
        return job.calibration
    return {"split": "unknown (a Q/DQ model given with --model)"}


def _bench_args(model: str, backend: str, provider: str, options: BenchOptions, job: Job) -> list[str]:
    args = ["--model", model, "--backend", backend, "--provider", provider, "--iterations", str(options.iterations),
            "--warmup", str(options.warmup), "--batch", str(options.batch)]
    if backend == Backend.trtexec.value:
        args += [f"--shape={name}:" + "x".join(str(d) for d in (options.batch, *dims))
                 for name, dims in dynamic_inputs(job.onnx_inputs).items()]  # trtexec's shapes for this batch
    return args


def _record_timing(entry: dict[str, Any], timing: dict[str, Any], backend: str) -> None:
    for key in ("latency_ms", "throughput_fps", "peak_rss_mb", "device_memory_mb", "power", "provider"):
        entry[key] = timing.get(key)
    entry["backend"] = backend
    entry["trtexec"] = timing.get("trtexec")


def _measure_accuracy(call, entry, model: str, data: str, backend: str, provider: str, options) -> None:
    eval_backend = Backend.tensorrt.value if backend == Backend.trtexec.value else backend
    args = ["--model", model, "--data", data, "--batch", str(options.batch), "--backend", eval_backend,
            "--provider", provider]
    result = _step(entry, "eval", lambda: call("eval", args))
    entry["accuracy"], entry["accuracy_samples"] = result["accuracy"], result["samples"]


def _measure_dense(call, runner, job: Job, options: BenchOptions, backend: str, provider: str,
                   entry: dict[str, Any], log_dir: Optional[Path]) -> None:
    """The dense model at the model's precision, timed the same way: the speed-up compares like with like."""
    if entry["precision"] == Precision.int8.value:
        entry["warnings"].append("speed-up not measured: the dense model has no Q/DQ (int8) model to compare with")
        return
    if _needs_build(job, backend):
        model = _engine(runner, job, options, entry, log_dir, name="dense")
    else:
        model = runner.stage(job.dense, "dense.onnx")
    args = _bench_args(model, backend, provider, options, job)
    timing = _step(entry, "bench-dense", lambda: call("bench", args, tag="bench-dense"))
    entry["dense"] = {key: timing.get(key) for key in ("latency_ms", "throughput_fps", "peak_rss_mb")}
    dense_p50, p50 = timing["latency_ms"].get("p50"), entry["latency_ms"].get("p50")
    entry["speedup"] = dense_p50 / p50 if dense_p50 and p50 else None


# ---------------------------------------------------------------- bench.json


def entry_key(entry: dict[str, Any]) -> str:
    """An entry's key in bench.json: one per device and precision."""
    return f"{entry['device']}/{entry.get('precision') or 'unknown'}"


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    write_text(path, json.dumps(payload, indent=2, default=str) + "\n")  # atomic: never a half-written file


def read_entries(path: Path) -> Optional[dict[str, dict[str, Any]]]:
    """The entries of a bench file by key; a /1 file's (one per device) are re-keyed by device and precision.
    None for a missing, torn or foreign file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("format") == BENCH_FORMAT:
        return dict(data.get("entries") or {})
    if data.get("format") == "edgecomp-bench/1":
        return {entry_key(entry): entry for entry in (data.get("devices") or {}).values()}
    return None


def _document(entries: dict[str, Any], complete: bool, error: Optional[str] = None) -> dict[str, Any]:
    document = {"format": BENCH_FORMAT, "complete": complete, "entries": entries}
    if error is not None:
        document["error"] = error
    return document


def _write_complete(job: Job, entry: dict[str, Any]) -> Path:
    """Add or replace this (device, precision) entry; every other entry stays."""
    path, key = job.out_dir / job.results, entry_key(entry)
    entries = read_entries(path) or {}
    entries[key] = entry
    _write_json(path, _document(entries, complete=True))
    partial = read_entries(job.out_dir / job.partial)
    if partial is not None and set(partial) <= {key}:
        (job.out_dir / job.partial).unlink(missing_ok=True)  # superseded by this complete measurement
    return path


def _write_partial(job: Job, entry: dict[str, Any], error: EdgecompError) -> None:
    """Keep what was measured; nothing to keep when only the device facts came back before a mistake of
    the user's (say, an engine for a device without TensorRT)."""
    measured = [step for step in entry["steps_done"] if step != "info"]
    if not measured and (not entry["steps_done"] or isinstance(error, UserInputError)):
        return
    message = str(error).splitlines()[0]
    _write_json(job.out_dir / job.partial, _document({entry_key(entry): entry}, complete=False, error=message))
