"""`edgecomp export`: a run's final model as verified ONNX, Q/DQ INT8 ONNX and a TensorRT engine.

    model.pt ─fold BN─▶ torch.onnx (dynamic batch) ─onnxslim─▶ checker ─▶ onnxruntime vs PyTorch
             on real validation images (gate: |Δlogit| ≤ atol, 100 % top-1 agreement) ─▶ model.onnx
    int8:    calib.npy (training images, evaluation preprocessing) ─▶ model.int8.onnx (symmetric Q/DQ),
             its top-1 measured against the fp32 ONNX on the validation images
    --trt:   engines/<key>.engine (+ <key>.json): not built here — `delivery.export` hands the file
             to the one engine path (`builder.py`); this module never imports bench or the runners
    for bench: eval.npz (the validation images the gate compared, as the model sees them) and
             dense.onnx (checkpoints/step_000.pt through the same exporter), each a record in export.json;
             bench measures these and never exports again

One record per artefact: a plain export after an int8 one keeps the INT8
record when model.int8.onnx was quantized from this very model.onnx (same
sha256), and otherwise removes model.int8.onnx and calib.npy.

Formats are one table (`FORMATS`) with per-format argument checks, and one
function each: `export_onnx`, `export_onnx_int8_qdq` (the engine's is `builder.obtain_engine`).
"""

from __future__ import annotations

import copy
import io
import json
import platform
import tempfile
import warnings
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np
import onnx
import torch
import torch.nn as nn
from packaging.version import Version
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..core.console import console
from ..core.data import InputSpec, load_data
from ..core.errors import ExportError, ExportInputError, RunDirError, UserInputError
from ..core.models import load_model_file, measure_size, model_from_payload, set_submodule
from ..core.precision import Precision, check_dla, parse_precision
from ..core.recipe import ExportSection, Recipe
from ..core.rundir import RunDir, atomic_write, sha256, write_text
from .artifacts import CALIB_FILE, DENSE_FILE, EVAL_FILE, INT8_FILE, read_export

EXPORT_FORMAT = "edgecomp-export/1"
INPUT_NAME, OUTPUT_NAME, BATCH_AXIS = "input", "logits", "batch"
VERIFY_BATCH = 64  # compared batch 1 first, then batches of 64: the dynamic batch is exercised
ORT_THREADS = 2  # the build host may be a small shared machine
MAX_OPSET = 20  # the TorchScript exporter's highest (the dynamo exporter needs onnxscript; not a dependency)
EVAL_MAX_BYTES = 128 * 2**20  # at 224 px RGB, 512 float32 images would be 300 MB to copy to a device


# ---------------------------------------------------------------- the format table


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str
    precisions: tuple[Precision, ...]
    arguments: tuple[str, ...]  # options only this format uses
    requires: str
    asked_by: str


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("onnx", ".onnx", (Precision.fp32,), ("opset", "fold_bn", "device"),
                 "torch, onnx, onnxslim, onnxruntime; the recipe's validation images", "always written"),
    ExportFormat("onnx_int8", ".int8.onnx", (Precision.int8,), ("calib_images",),
                 "onnxruntime.quantization; calibration images from the recipe's dataset", "--precision int8"),
    ExportFormat("engine", ".engine", tuple(Precision),
                 ("device", "dla_core", "max_batch", "workspace_mib", "accept_new_host_key"),
                 "TensorRT where it is built: here (device.name host) or on --device", "--trt"),
)}

# Why a precision is refused where it is: fp16 ONNX would only add Casts; TensorRT makes fp16 from fp32 ONNX.
PRECISION_REFUSALS = {
    Precision.fp16: "fp16 is a TensorRT build setting: the ONNX model stays fp32 (TensorRT picks fp16 kernels from it, "
            "and onnxruntime's CPU has no fast fp16); add --trt",
    Precision.int8: "--onnx writes the fp32 model.onnx alone; drop --onnx for the Q/DQ model",
}


@dataclass(frozen=True)
class ExportOptions:
    """Every export setting, resolved: user arguments over the recipe's `export` section."""

    trt: bool
    precision: Precision
    device: Optional[str]  # None: the recipe's device.name
    opset: Optional[int]
    fold_bn: bool
    atol: float
    verify_images: int
    calib_images: int
    max_batch: int
    workspace_mib: int
    dla_core: Optional[int]
    accept_new_host_key: bool = False
    onnx_only: bool = False  # --onnx: model.onnx alone, whatever the recipe's precision

    @property
    def formats(self) -> list[ExportFormat]:
        if self.onnx_only:
            return [FORMATS["onnx"]]
        names = ["onnx"] + ["onnx_int8"] * (self.precision == Precision.int8) + ["engine"] * self.trt
        return [FORMATS[name] for name in names]


LIMITS = {"opset": (13, MAX_OPSET), "calib_images": (1, None), "max_batch": (1, None), "dla_core": (0, None),
          "workspace_mib": (16, None)}


def _flag(argument: str) -> str:
    return "--" + argument.replace("_", "-")


def resolve_options(section: ExportSection, *, trt: bool, precision: Precision | str | None,
                    onnx_only: bool = False, **given: Any) -> ExportOptions:
    """Merge the user's arguments (None: not given) over the recipe; refuse what the formats do not take."""
    given = {key: value for key, value in given.items() if value is not None and value is not False}
    for key, value in given.items():
        low, high = LIMITS.get(key, (None, None))
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"{low}..{high}" if high is not None else f">= {low}"
            raise ExportInputError(f"{_flag(key)}: must be {bounds} (got {value})")
    try:
        chosen = parse_precision(precision)
    except UserInputError as error:
        raise ExportInputError(str(error).split(": ", 1)[1]) from None
    if onnx_only and trt:
        raise ExportInputError("--onnx: writes model.onnx alone; drop it to build an engine with --trt")
    defaults = {**section.model_dump(exclude={"precision"}), "device": None}
    options = ExportOptions(trt=trt, precision=chosen or section.precision, onnx_only=onnx_only,
                            **{**defaults, **given})
    check_arguments(options, given, precision_given=chosen is not None)
    return options


def check_arguments(options: ExportOptions, given: dict[str, Any], *, precision_given: bool) -> None:
    """Each argument must be used by a chosen format, and a precision the user gave served by one."""
    chosen = options.formats
    if precision_given and not any(options.precision in f.precisions for f in chosen):
        raise ExportInputError(f"--precision {options.precision.value}: {PRECISION_REFUSALS[options.precision]}")
    for argument in given:
        owners = [f for f in FORMATS.values() if argument in f.arguments]
        if owners and not any(f in chosen for f in owners):
            needs = ", ".join(f"{f.name} ({f.asked_by})" for f in owners)
            raise ExportInputError(f"{_flag(argument)}: used only by the {needs} export")
    if options.trt:
        try:
            check_dla(options.precision, options.dla_core)
        except UserInputError as error:
            raise ExportInputError(str(error).split(": ", 1)[1]) from None


# ---------------------------------------------------------------- BatchNorm folding


def _foldable(conv: Optional[nn.Module], bn: Optional[nn.Module]) -> bool:
    return (isinstance(conv, nn.Conv2d) and type(bn) is nn.BatchNorm2d and bn.running_mean is not None
            and bn.num_features == conv.out_channels)


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Conv2d→BatchNorm2d pairs: neighbours in a Sequential, or siblings named convN / bnN."""
    pairs = []
    for parent_name, parent in model.named_modules():
        children = list(parent.named_children())
        if isinstance(parent, nn.Sequential):
            candidates = [(a, b) for a, b in zip(children, children[1:])]
        else:
            siblings = dict(children)
            candidates = [((n, m), ("bn" + n[4:], siblings.get("bn" + n[4:]))) for n, m in children
                          if n.startswith("conv")]
        pairs += [(_join(parent_name, a), _join(parent_name, b)) for (a, conv), (b, bn) in candidates
                  if _foldable(conv, bn)]
    return pairs


@torch.no_grad()
def fold_batchnorm(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Fold BNs into their convs in place (eval semantics); checked against the unfolded outputs."""
    model.eval()
    before = model(example)
    pairs = conv_bn_pairs(model)
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)  # conv_bn_pairs found them so
        fused = fuse_conv_bn_eval(conv, bn)
        set_submodule(model, conv_name, fused)
        set_submodule(model, bn_name, nn.Identity())
    diff = float((model(example) - before).abs().max()) if pairs else 0.0
    if not diff <= 1e-4 * max(1.0, float(before.abs().max())):
        raise ExportError(f"folding BatchNorm changed the outputs by {diff:.2e}: a BN named like a conv's "
                          f"partner is applied elsewhere in forward(); export with --no-fold-bn")
    return [f"{conv}+{bn}" for conv, bn in pairs]


# ---------------------------------------------------------------- ONNX


def export_onnx(model: nn.Module, example: torch.Tensor, *, opset: int = 17,
                fold_bn: bool = True) -> tuple[onnx.ModelProto, list[str]]:
    """The model as a checked ONNX graph with a dynamic batch axis; returns it and the folded pairs."""
    model = copy.deepcopy(model).eval()  # folding edits modules: never the caller's model
    folded = fold_batchnorm(model, example) if fold_bn else []
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is chosen on purpose: opset 17 for TensorRT 8.5/8.6, no onnxscript needed.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        # f is annotated as a path, but the TorchScript exporter (dynamo=False) also writes to a BytesIO
        torch.onnx.export(model, (example,), buffer,  # type: ignore[arg-type]
                          dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: BATCH_AXIS}, OUTPUT_NAME: {0: BATCH_AXIS}})
    proto = simplify(onnx.load_from_string(buffer.getvalue()))
    onnx.checker.check_model(proto, full_check=True)
    return proto, folded


def simplify(proto: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    try:
        return onnxslim.slim(proto)
    except Exception as exc:  # noqa: BLE001 - a simplifier bug must not stop an export that verifies
        warnings.warn(f"onnxslim failed ({exc}); keeping the unsimplified graph", stacklevel=2)
        return proto


def io_shapes(proto: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    def describe(values):
        return [{"name": v.name, "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]}
                for v in values]

    return {"inputs": describe(proto.graph.input), "outputs": describe(proto.graph.output)}


def ort_session(model: Path | onnx.ModelProto, threads: int = ORT_THREADS):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def batch_slices(count: int, size: int = VERIFY_BATCH) -> list[slice]:
    """Batch 1 first, then full batches and a remainder: several batch sizes reach the dynamic axis."""
    return [slice(0, min(1, count))] + [slice(s, min(s + size, count)) for s in range(1, count, size)]


def ort_logits(session, images: np.ndarray) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[s]})[0] for s in batch_slices(len(images))])


@torch.no_grad()
def torch_logits(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    model.eval()
    return torch.cat([model(images[s]) for s in batch_slices(len(images))]).numpy()


@dataclass
class Fidelity:
    images: int
    max_abs_diff: float
    top1_agreement: float
    atol: float
    batch_sizes: list[int]

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.atol and self.top1_agreement == 1.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed,
                "reference": "PyTorch fp32 (BN not folded), same validation images"}


def compare_onnx(onnx_model, reference: nn.Module, images: torch.Tensor, atol: float) -> Fidelity:
    """onnxruntime (CPU) against PyTorch on the same inputs."""
    ours = ort_logits(ort_session(onnx_model), images.numpy())
    theirs = torch_logits(reference, images)
    diff = float(np.abs(ours - theirs).max())
    agreement = float((ours.argmax(1) == theirs.argmax(1)).mean())
    sizes = sorted({s.stop - s.start for s in batch_slices(len(images))})
    return Fidelity(len(images), diff, agreement, atol, sizes)


def check_fidelity(onnx_model, reference: nn.Module, images: torch.Tensor, atol: float) -> Fidelity:
    fidelity = compare_onnx(onnx_model, reference, images, atol)
    if not fidelity.passed:
        raise ExportError(
            f"ONNX does not reproduce PyTorch: max |logit difference| {fidelity.max_abs_diff:.3g} (allowed "
            f"{atol:g}), top-1 agreement {fidelity.top1_agreement:.2%} (needed 100%) on {fidelity.images} "
            f"validation images; nothing was written"
        )
    return fidelity


# ---------------------------------------------------------------- INT8 (Q/DQ)


def _calibration_reader(images: np.ndarray, input_name: str, batch: int = 32):
    from onnxruntime.quantization import CalibrationDataReader

    class ArrayReader(CalibrationDataReader):
        def __init__(self):
            self.chunks = iter(images[s : s + batch] for s in range(0, len(images), batch))

        def get_next(self):
            chunk = next(self.chunks, None)
            return None if chunk is None else {input_name: chunk}

    return ArrayReader()


def save_plain_onnx(model: nn.Module, cfg, path: Path, opset: int = 17) -> None:
    """An unverified export (same graph recipe as model.onnx, without the fidelity gate or slimming), for
    measuring latency: the dense reference of bench and each step of latency-budget pruning."""
    example = torch.zeros(2, cfg.in_channels, cfg.input_size, cfg.input_size)
    proto, _ = export_onnx(model.cpu(), example, opset=opset)
    atomic_write(path, lambda temp: onnx.save(proto, str(temp)))


def export_onnx_int8_qdq(fp32_path: Path, out_path: Path, calib: np.ndarray) -> None:
    """Static INT8 with explicit Q/DQ nodes, symmetric (zero points 0) as TensorRT requires."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix=".int8-", dir=out_path.parent) as folder:
        prepared, quantized = Path(folder) / "prepared.onnx", Path(folder) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(prepared))  # shape inference + graph cleanup before calibration
        quantize_static(
            str(prepared), str(quantized), _calibration_reader(calib, INPUT_NAME), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
            # QuantizeBias False: biases stay float; TensorRT's parser rejects DequantizeLinear on int32 and
            # fuses the float bias into the int8 convolution itself.
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )
        data = quantized.read_bytes()
    atomic_write(out_path, lambda temp: temp.write_bytes(data))


def int8_accuracy(fp32_path: Path, int8_path: Path, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    inputs, truth = images.numpy(), labels.numpy()
    fp32 = ort_logits(ort_session(fp32_path), inputs).argmax(1)
    int8 = ort_logits(ort_session(int8_path), inputs).argmax(1)
    top1_fp32, top1_int8 = float((fp32 == truth).mean()), float((int8 == truth).mean())
    return {"images": len(truth), "top1_fp32": top1_fp32, "top1_int8": top1_int8,
            "drop_points": round(100 * (top1_fp32 - top1_int8), 3), "top1_agreement": float((fp32 == int8).mean())}


# ---------------------------------------------------------------- the opset for the target's TensorRT


def default_opset(trt_version: Optional[str]) -> int:
    """The ONNX opset to export for a target TensorRT version.

    TensorRT 8.5/8.6 parse up to opset 17; 10.x reads 19 (and more); 8.0-8.4
    (JetPack 4.6 ships 8.2) are given 13, which they all read. Unknown target:
    17, which every TensorRT from 8.5 on parses.
    """
    if not trt_version:
        return 17
    version = Version(trt_version)
    if version >= Version("10"):
        return 19
    return 17 if version >= Version("8.5") else 13


def target_opset(options: ExportOptions, trt_versions: list[str], max_opset: Optional[int] = None) -> int:
    """--opset / export.opset, else the highest opset every TensorRT of the target parses (17 if unknown)."""
    if options.opset is not None:
        return options.opset
    opset = min((default_opset(v) for v in trt_versions), default=default_opset(None))
    return min(opset, max_opset) if max_opset else opset


# ---------------------------------------------------------------- the whole export


@dataclass
class ExportResult:
    run_dir: Path
    onnx_path: Path
    info_path: Path
    info: dict[str, Any]
    int8_path: Optional[Path] = None
    engine_path: Optional[Path] = None

    @property
    def fidelity(self) -> dict[str, Any]:
        return self.info["fidelity"]


@dataclass
class ExportJob:
    run: RunDir
    recipe: Recipe
    options: ExportOptions
    model: nn.Module
    spec: InputSpec
    data: Any  # edgecomp.core.data.DataBundle
    images: torch.Tensor  # validation inputs, preprocessed exactly as in evaluation
    labels: torch.Tensor


def open_run(run: str | Path) -> RunDir:
    folder = RunDir(Path(run))
    for path in (folder.recipe, folder.model):
        if not path.is_file():
            raise RunDirError(f"--run: {path} does not exist (a run directory written by edgecomp compress)")
    return folder


def take_images(source, spec: InputSpec, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `limit` images of a split, as the model sees them in evaluation."""
    images, labels, count = [], [], 0
    for raw, label in source.batches(None):
        images.append(spec.prepare(raw))
        labels.append(label)
        count += len(label)
        if count >= limit:
            break
    if not images:
        raise ExportInputError("the recipe's dataset split used for export is empty")
    return torch.cat(images)[:limit].contiguous(), torch.cat(labels)[:limit]


def write_exports(folder: RunDir, recipe: Recipe, options: ExportOptions, *, opset: int) -> ExportResult:
    """model.onnx (verified), eval.npz, dense.onnx, and for int8 calib.npy + model.int8.onnx; export.json is
    the caller's to write."""
    previous = read_export(folder.root)
    job = prepare(folder, recipe, options)
    info = write_onnx(job, opset)
    result = ExportResult(folder.root, folder.root / "model.onnx", folder.root / "export.json", info)
    info["eval"] = write_eval(job)
    info["dense"] = write_dense(job, opset)
    if FORMATS["onnx_int8"] in options.formats:
        info["int8"] = write_int8(job, result.onnx_path)
    else:
        info["int8"] = keep_or_remove_int8(folder.root, previous, info["onnx"]["sha256"])
    if info["int8"]:
        result.int8_path = folder.root / INT8_FILE
    return result


def keep_or_remove_int8(root: Path, previous: Optional[dict[str, Any]], onnx_sha256: str) -> Optional[dict]:
    """No artefact without a record: the earlier INT8 record stays when its Q/DQ model was quantized from
    this very model.onnx; otherwise model.int8.onnx and calib.npy (stale, or never recorded) are removed."""
    int8 = (previous or {}).get("int8")
    files = [root / INT8_FILE, root / CALIB_FILE]
    if int8 and int8.get("source_onnx_sha256") == onnx_sha256 and all(p.is_file() for p in files):
        assert previous is not None  # int8 came from it
        return {**int8, "kept_from_export": previous.get("created")}
    stale = [p for p in files if p.is_file()]
    for path in stale:
        path.unlink()
    if stale:
        console.print(f"[yellow]note[/]: removed {', '.join(p.name for p in stale)}: quantized from an earlier "
                      f"model.onnx; `edgecomp export --run {root} --precision int8` writes them again")
    return None


def write_info(result: ExportResult) -> None:
    """export.json, with the size of every file the export wrote (or kept)."""
    files = (result.onnx_path, result.int8_path, result.engine_path, result.run_dir / CALIB_FILE,
             result.run_dir / EVAL_FILE, result.run_dir / DENSE_FILE)
    result.info["files"] = {p.name: p.stat().st_size for p in files if p and p.is_file()}
    write_text(result.info_path, json.dumps(result.info, indent=2, default=str) + "\n")


def prepare(folder: RunDir, recipe: Recipe, options: ExportOptions) -> ExportJob:
    model = load_model_file(folder.model, recipe.model).eval()
    data = load_data(recipe.data, recipe.model)
    spec = InputSpec.create(recipe.model, data.mean, data.std, torch.device("cpu"))
    images, labels = take_images(data.val, spec, options.verify_images)
    return ExportJob(folder, recipe, options, model, spec, data, images, labels)


def write_onnx(job: ExportJob, opset: int) -> dict[str, Any]:
    """model.onnx, written only once it reproduces PyTorch; returns the start of export.json."""
    import onnxruntime
    import onnxslim

    from ..core.version import __version__

    options = job.options
    proto, folded = export_onnx(job.model, job.images[:2], opset=opset, fold_bn=options.fold_bn)
    fidelity = check_fidelity(proto, job.model, job.images, options.atol)
    path = job.run.root / "model.onnx"
    atomic_write(path, lambda temp: onnx.save(proto, str(temp)))
    size = measure_size(job.model, job.spec.example(1))
    return {
        "format": EXPORT_FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": {"edgecomp": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "onnxslim": onnxslim.__version__,
                     "python": platform.python_version()},
        "precision": options.precision.value, "formats": [f.name for f in options.formats],
        "model": {"arch": job.recipe.model.arch, "macs": size.macs, "params": size.params},
        "aux": aux_summary(job.run.rows()),
        "fold_bn": {"enabled": options.fold_bn, "folded": folded},
        "onnx": {"file": path.name, "opset": opset, "exporter": "torch.onnx (TorchScript), onnxslim",
                 "sha256": sha256(path), **io_shapes(proto)},
        "fidelity": fidelity.as_dict(), "int8": None, "engine": None,
    }


def write_int8(job: ExportJob, fp32_path: Path) -> dict[str, Any]:
    """calib.npy from the training split, model.int8.onnx from it, and its accuracy on the validation images."""
    calib = take_images(job.data.train, job.spec, job.options.calib_images)[0].numpy().astype(np.float32)
    calib_path, int8_path = job.run.root / CALIB_FILE, job.run.root / INT8_FILE
    atomic_write(calib_path, lambda temp: save_array(temp, calib))
    export_onnx_int8_qdq(fp32_path, int8_path, calib)
    accuracy = int8_accuracy(fp32_path, int8_path, job.images, job.labels)
    return {"file": int8_path.name, "calib_file": calib_path.name, "calib_images": len(calib),
            "calib_split": "train", "scored_split": "val", "source_onnx_sha256": sha256(fp32_path),
            "scheme": "Q/DQ, symmetric int8 activations and per-channel weights, float biases", **accuracy}


def write_eval(job: ExportJob) -> dict[str, Any]:
    """eval.npz: the validation images the fidelity gate compared (as the model sees them), for bench's
    accuracy on the device; capped at EVAL_MAX_BYTES because bench copies it there."""
    per_image = 4 * int(np.prod(job.images.shape[1:]))
    count = max(1, min(len(job.images), EVAL_MAX_BYTES // per_image))
    images = job.images[:count].numpy().astype(np.float32)
    labels = job.labels[:count].numpy().astype(np.int64)
    path = job.run.root / EVAL_FILE

    def save(temp: Path) -> None:
        with open(temp, "wb") as stream:  # a file object: np.savez would append .npz to a bare name
            np.savez(stream, images=images, labels=labels)

    atomic_write(path, save)
    return {"file": EVAL_FILE, "split": "val", "images": count, "preprocessing": "as in evaluation"}


def write_dense(job: ExportJob, opset: int) -> Optional[dict[str, Any]]:
    """dense.onnx from checkpoints/step_000.pt through the same exporter and opset as model.onnx (bench's
    speed-up compares like with like); None when the run has no dense step. Compared against PyTorch and
    recorded, not gated: it is a timing reference, and a mismatch must not block the model's export."""
    path = job.run.root / DENSE_FILE
    if not any(row.get("step") == 0 for row in job.run.rows()) or not job.run.checkpoint(0).is_file():
        path.unlink(missing_ok=True)  # a stale dense.onnx must not stand in for a dense step there is not
        return None
    dense = model_from_payload(job.run.load_step(0)["model"], job.recipe.model).eval()
    proto, _ = export_onnx(dense, job.images[:2], opset=opset, fold_bn=job.options.fold_bn)
    fidelity = compare_onnx(proto, dense, job.images[: 1 + VERIFY_BATCH], job.options.atol)  # batch 1, then 64
    atomic_write(path, lambda temp: onnx.save(proto, str(temp)))
    return {"file": DENSE_FILE, "from": job.run.checkpoint(0).relative_to(job.run.root).as_posix(),
            "opset": opset, "fidelity": fidelity.as_dict()}


def save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as stream:  # a file object: np.save would append .npy to a bare name
        np.save(stream, array)


def aux_summary(rows: list[dict[str, Any]]) -> Any:
    """Auxiliary branches folded (rep) or dropped (heads) at each step, as metrics.jsonl records them."""
    records = [{"step": row.get("step"), **(row["aux"] if isinstance(row["aux"], dict) else {"aux": row["aux"]})}
               for row in rows if row.get("aux") not in (None, "none")]
    return records or "none"
