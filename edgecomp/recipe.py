"""The recipe: one validated description of a compression run.

Every section rejects unknown keys and documents every field (the JSON Schema
from `edgecomp recipe schema` carries the descriptions). YAML is read with
`safe_load` only. Errors come out as one line naming the dotted field path.
"""

from __future__ import annotations

import copy
import json
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import RecipeError
from .precision import DEFAULT_PRECISION, Precision

SHIPPED_RECIPES = Path(__file__).parent / "recipes"
FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
MAX_MAGNITUDE = 30


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Optimizer(str, Enum):
    sgd = "sgd"
    adamw = "adamw"


class OptimSettings(Section):
    optimizer: Optimizer = Field(Optimizer.sgd, description="sgd (momentum 0.9, Nesterov) or adamw")
    lr: float = Field(0.05, gt=0, description="peak learning rate; cosine decay to 0 over the stage")
    weight_decay: float = Field(5e-4, ge=0, description="decoupled (adamw) or L2 (sgd) weight decay")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the cross-entropy")


class ModelSection(Section):
    arch: str = Field(
        "resnet18",
        description="torchvision model name (resnet18, mobilenet_v2, ...), an edgecomp tiny model "
        "(cifar_resnet8/14/20, toy_grouped), 'timm:NAME' when timm is installed, or 'pkg.module:callable'",
    )
    num_classes: int = Field(10, ge=2, description="number of output classes")
    in_channels: int = Field(3, ge=1, le=4, description="input channels the model takes (data is adapted to it)")
    input_size: int = Field(224, ge=16, le=1024, description="square input side in pixels (data is resized to it)")
    small_input: bool = Field(
        False, description="replace the stem's stride and max-pool for 28-64 px images (ResNet/MobileNet/...)"
    )
    pretrained: bool = Field(
        False, description="start from the library's pretrained ImageNet weights (needs them cached or online)"
    )
    weights: Optional[str] = Field(None, description="state_dict file (.pt) to load into the built model")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments for the model factory")


class Dataset(str, Enum):
    fashion_mnist = "fashion_mnist"
    cifar10 = "cifar10"
    cifar100 = "cifar100"
    imagefolder = "imagefolder"


class DataSection(Section):
    dataset: Dataset = Field(Dataset.fashion_mnist, description="fashion_mnist, cifar10, cifar100 or imagefolder")
    root: Optional[str] = Field(
        None,
        description="folder holding the data; default for fashion_mnist: " + FASHION_MNIST_ROOT,
    )
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="share of the training set carved out (deterministically) for validation"
    )
    split_seed: int = Field(0, ge=0, description="seed of the train/val split (independent of the run seed)")
    train_subset: Optional[int] = Field(None, ge=1, description="use only this many training samples")
    val_subset: Optional[int] = Field(None, ge=1, description="use only this many validation samples")
    test_subset: Optional[int] = Field(None, ge=1, description="use only this many held-out test samples")
    batch_size: int = Field(128, ge=1, description="training and evaluation batch size")
    workers: int = Field(0, ge=0, description="data-loader worker processes (ImageFolder only)")


class DenseSection(Section):
    epochs: int = Field(0, ge=0, description="epochs of dense training (0: use the weights as they are)")
    weights: Optional[str] = Field(
        None, description="weights of the dense model to start from (state_dict or edgecomp model file); "
        "with dense.epochs 0 they are used as they are, otherwise trained further"
    )
    optim: OptimSettings = Field(default_factory=OptimSettings, description="optimizer of the dense stage")


class Importance(str, Enum):
    l1 = "l1"
    l2 = "l2"
    taylor = "taylor"
    bn_scale = "bn_scale"
    lamp = "lamp"
    random = "random"


class StepSchedule(str, Enum):
    linear = "linear"
    geometric = "geometric"


class PruneTarget(Section):
    macs: Optional[float] = Field(None, gt=0, lt=1, description="fraction of the dense MACs to keep at the end")
    params: Optional[float] = Field(None, gt=0, lt=1, description="fraction of the dense parameters to keep")
    latency_ms: Optional[float] = Field(
        None, gt=0, description="stop at the first step whose exported model measures at or below this p50 "
        "latency (batch 1) on prune.target.device; macs/params still set each step's size"
    )
    device: str = Field("host", description="where latency_ms is measured: host, a device profile, or ssh://...")
    latency_iterations: int = Field(100, ge=10, description="timed inferences per latency measurement")

    @model_validator(mode="after")
    def _exactly_one(self) -> "PruneTarget":
        if (self.macs is None) == (self.params is None):
            raise ValueError("give exactly one of macs or params")
        return self


class PruneSection(Section):
    steps: int = Field(3, ge=1, le=100, description="number of pruning steps, each followed by fine-tuning")
    target: PruneTarget = Field(
        default_factory=lambda: PruneTarget(macs=0.5), description="final size as a fraction of the dense model"
    )
    schedule: StepSchedule = Field(
        StepSchedule.linear, description="per-step targets: linear (equal decrements) or geometric (equal ratios)"
    )
    importance: Importance = Field(
        Importance.l2, description="channel importance: l1, l2 (group magnitude), taylor, bn_scale, lamp, random"
    )
    global_pruning: bool = Field(True, description="rank channels across layers (True) or prune each layer alike")
    round_to: int = Field(8, ge=1, description="keep channel counts multiples of this (8 suits TensorRT)")
    max_layer_ratio: float = Field(
        0.9, gt=0, lt=1, description="never remove more than this fraction of one layer's channels"
    )
    ignored_layers: list[str] = Field(
        default_factory=list, description="module names never pruned, besides the classifier (always kept)"
    )
    calib_batches: int = Field(2, ge=1, description="training batches whose gradients feed taylor importance")


class FinetuneSection(Section):
    epochs_per_step: int = Field(1, ge=0, description="fine-tuning epochs after each pruning step (0: prune only)")
    optim: OptimSettings = Field(
        default_factory=lambda: OptimSettings(lr=0.01), description="optimizer of each fine-tuning stage"
    )


class Policy(str, Enum):
    randaugment = "randaugment"
    trivialaugment = "trivialaugment"
    erasing = "erasing"
    none = "none"


class ScheduleKind(str, Enum):
    constant = "constant"
    linear = "linear"
    steps = "steps"
    teacher = "teacher"


class MagnitudeSchedule(Section):
    kind: ScheduleKind = Field(
        ScheduleKind.linear,
        description="constant (M=dense always), linear in the MACs ratio s (M=min+(dense-min)*s), "
        "steps (one value per pruning step), teacher (largest M at which the teacher keeps "
        "teacher.calibration's accuracy target; dense stage: dense)",
    )
    dense: float = Field(9.0, ge=0, le=MAX_MAGNITUDE, description="magnitude for the dense model (0..30)")
    min: float = Field(0.0, ge=0, le=MAX_MAGNITUDE, description="magnitude a model of size 0 would get (linear)")
    values: list[float] = Field(
        default_factory=list, description="steps: magnitude for pruning steps 1..N (length = prune.steps)"
    )


class AugmentSection(Section):
    policy: Policy = Field(Policy.randaugment, description="randaugment, trivialaugment, erasing or none")
    num_ops: int = Field(2, ge=1, le=8, description="RandAugment: operations applied to each image")
    erasing: bool = Field(
        True, description="add random erasing whose probability and area follow the magnitude"
    )
    flip: bool = Field(True, description="random horizontal flip (always on, magnitude-independent)")
    crop_padding: int = Field(
        2, ge=0, description="random crop after zero padding by this many pixels (0: off)"
    )
    schedule: MagnitudeSchedule = Field(default_factory=MagnitudeSchedule, description="magnitude per step")


class AuxKind(str, Enum):
    none = "none"
    rep = "rep"  # parallel 1x1 / identity branches, folded into each k×k conv after training
    heads = "heads"  # auxiliary classifiers after intermediate stages, dropped after training


class AuxSection(Section):
    kind: AuxKind = Field(
        AuxKind.none,
        description="training-only branches trained on a strongly augmented view, removed before pruning and "
        "export: none, rep (1x1 and identity branches beside every k×k conv+BN, folded exactly into the conv) "
        "or heads (auxiliary classifiers after intermediate stages, dropped)",
    )
    strong_magnitude: Optional[float] = Field(
        None, ge=0, le=MAX_MAGNITUDE,
        description="augmentation magnitude of the strong view the branches train on (0..30; null: "
        "augment.schedule.dense)",
    )
    weight: float = Field(1.0, ge=0, description="weight of the strong-view loss added to the main loss")
    heads_at: list[str] = Field(
        default_factory=list,
        description="heads: module names whose outputs get an auxiliary classifier (empty: found automatically "
        "for ResNet, MobileNet, EfficientNet, RegNet and the CIFAR ResNets)",
    )
    head_kd: float = Field(
        0.0, ge=0, le=1,
        description="weight of distillation from the main head's (detached) weak-view logits, added to each "
        "auxiliary output's strong-view loss (0: off)",
    )
    identity: bool = Field(
        True, description="rep: add the identity (BN-only) branch where in = out channels and stride 1"
    )


class DifficultyMode(str, Enum):
    none = "none"
    weight = "weight"
    filter = "filter"


class DifficultySection(Section):
    mode: DifficultyMode = Field(
        DifficultyMode.none,
        description="use teacher difficulty d = 1 - p_teacher(y|augmented x): none, weight (down-weight samples "
        "harder than tau(s)) or filter (replace them by a weaker view)",
    )
    tau_dense: float = Field(
        0.9, gt=0, le=1, description="tau(s) at the dense size: hardest difficulty the dense model is asked to learn"
    )
    tau_min: float = Field(
        0.5, gt=0, le=1, description="tau(s) as the size ratio s tends to 0; tau(s) = min + (dense - min) * s"
    )
    min_weight: float = Field(
        0.1, ge=0, le=1, description="weight mode: weight of a sample with d = 1 (falls linearly from 1 at tau(s))"
    )


class CalibrationSection(Section):
    samples: int = Field(512, ge=16, description="augmented validation samples per candidate magnitude")
    grid: list[float] = Field(
        default_factory=lambda: [float(m) for m in range(0, 31, 3)],
        description="candidate magnitudes (0..30) evaluated with the teacher",
    )
    target_dense: float = Field(
        0.8, gt=0, le=1,
        description="teacher accuracy to keep, as a fraction of its clean accuracy, at the dense size",
    )
    target_small: float = Field(
        0.95, gt=0, le=1, description="the same fraction as the size ratio tends to 0 (smaller models: easier data)"
    )


class TeacherSection(Section):
    weights: Optional[str] = Field(
        None, description="teacher checkpoint (state_dict or edgecomp model file); default: the dense model"
    )
    kd_weight: float = Field(
        0.0, ge=0, le=1, description="weight of distillation from the frozen teacher (0: off)"
    )
    temperature: float = Field(4.0, gt=0, description="distillation temperature")
    difficulty: DifficultySection = Field(
        default_factory=DifficultySection, description="teacher-measured sample difficulty (finding C)"
    )
    calibration: CalibrationSection = Field(
        default_factory=CalibrationSection, description="the teacher magnitude schedule (augment.schedule.kind)"
    )

    def needed(self) -> bool:
        return self.kd_weight > 0 or self.difficulty.mode != DifficultyMode.none


class ExportSection(Section):
    precision: Precision = Field(
        DEFAULT_PRECISION,
        description="precision of the TensorRT engine: fp32, fp16 or int8 (int8 also writes a Q/DQ ONNX model "
        "calibrated on training images); the plain ONNX model is always fp32",
    )
    opset: Optional[int] = Field(
        None, ge=13, le=20,
        description="ONNX opset; null: chosen for the target's TensorRT (17 for 8.5/8.6, 19 for 10.x, 13 before "
        "8.5; 17 when the target is unknown)",
    )
    fold_bn: bool = Field(True, description="fold each BatchNorm into the convolution before it (checked exact)")
    atol: float = Field(
        1e-4, gt=0, le=1, description="largest |logit difference| allowed between ONNX (onnxruntime) and PyTorch"
    )
    verify_images: int = Field(
        512, ge=1, description="validation images on which ONNX must match PyTorch (fewer if the set is smaller)"
    )
    calib_images: int = Field(
        512, ge=1, description="int8: training images (preprocessed as in evaluation) used for calibration"
    )
    max_batch: int = Field(
        8, ge=1, description="TensorRT optimisation profile: batch min 1, opt and max this (the ONNX is dynamic)"
    )
    workspace_mib: int = Field(1024, ge=16, description="TensorRT builder workspace limit in MiB")
    dla_core: Optional[int] = Field(
        None, ge=0, description="build for this DLA core with GPU fallback (fp16/int8 only; null: GPU)"
    )


class DeviceSection(Section):
    name: str = Field(
        "host", description="default --device of `edgecomp export --trt` and `edgecomp bench`: host, a device "
        "profile or ssh://user@host[:port]")
    latency_iterations: int = Field(
        30, ge=0, description="timed batch-1 forward passes on the host CPU after each step (0: skip)"
    )


class Recipe(Section):
    name: str = Field("run", min_length=1, pattern=r"^[A-Za-z0-9._-]+$", description="run name (runs/<name>)")
    seed: int = Field(0, ge=0, description="seed of everything random in the run")
    model: ModelSection = Field(default_factory=ModelSection, description="the network")
    data: DataSection = Field(default_factory=DataSection, description="datasets and loading")
    dense: DenseSection = Field(default_factory=DenseSection, description="the dense (unpruned) stage")
    prune: PruneSection = Field(default_factory=PruneSection, description="structured pruning")
    finetune: FinetuneSection = Field(default_factory=FinetuneSection, description="fine-tuning after each step")
    augment: AugmentSection = Field(default_factory=AugmentSection, description="augmentation and its schedule")
    aux: AuxSection = Field(default_factory=AuxSection, description="auxiliary branches (finding B)")
    teacher: TeacherSection = Field(default_factory=TeacherSection, description="the dense model as teacher")
    export: ExportSection = Field(default_factory=ExportSection, description="export settings")
    device: DeviceSection = Field(default_factory=DeviceSection, description="where latency is measured")

    @model_validator(mode="after")
    def _cross_checks(self) -> "Recipe":
        sched = self.augment.schedule
        if sched.kind == ScheduleKind.steps and len(sched.values) != self.prune.steps:
            raise ValueError(
                f"augment.schedule.values: needs {self.prune.steps} values (prune.steps), got {len(sched.values)}"
            )
        if any(not 0 <= v <= MAX_MAGNITUDE for v in sched.values):
            raise ValueError(f"augment.schedule.values: every magnitude must be in 0..{MAX_MAGNITUDE}")
        grid = self.teacher.calibration.grid
        if not grid or any(not 0 <= v <= MAX_MAGNITUDE for v in grid):
            raise ValueError(f"teacher.calibration.grid: needs magnitudes in 0..{MAX_MAGNITUDE}")
        return self

    def to_plain(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())


# ---------------------------------------------------------------- loading


def resolve_recipe_path(path: str | Path) -> Path:
    """A file here wins; a bare name that is not one resolves to a shipped recipe."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    if candidate.name == str(path):
        for name in (candidate.name, candidate.name + ".yaml"):
            shipped = SHIPPED_RECIPES / name
            if shipped.is_file():
                return shipped
    shipped_names = ", ".join(sorted(p.name for p in SHIPPED_RECIPES.glob("*.yaml")))
    raise RecipeError(f"recipe file not found: {path} (shipped recipes: {shipped_names})")


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}: malformed YAML{where}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; values are parsed as YAML scalars/lists."""
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set {item!r}: expected key.path=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        parts = key.strip().split(".")
        node = data
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                path = ".".join(parts[: depth + 1])
                raise RecipeError(f"--set {key}: {path} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def _describe(error: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in error["loc"]).encode("unicode_escape").decode() or "recipe"
    kind, ctx, got = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "extra_forbidden":
        return f"{loc}: unknown key"
    if kind == "missing":
        return f"{loc}: required"
    bounds = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}
    if kind in bounds:
        limit = next(iter(ctx.values()))
        limit = int(limit) if isinstance(limit, float) and limit.is_integer() else limit
        return f"{loc}: must be {bounds[kind]} {limit} (got {got!r})"
    if kind == "enum":
        return f"{loc}: must be one of {ctx.get('expected')} (got {got!r})"
    if kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
        return message if message.startswith(("augment.", "prune.", "teacher.")) else f"{loc}: {message}"
    return f"{loc}: {error['msg'].lower()} (got {got!r})"


def validate(data: dict[str, Any], source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors(include_url=False)).replace("\n", "\\n")
        raise RecipeError(problems if source == "recipe" else f"{source}: {problems}") from None


def load_recipe(path: str | Path, overrides: Optional[list[str]] = None) -> Recipe:
    """Read, override and validate a recipe. Raises RecipeError (exit 2)."""
    resolved = resolve_recipe_path(path)
    data = apply_overrides(read_yaml(resolved), overrides or [])
    return validate(data)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_plain(), sort_keys=False)


def recipe_schema() -> dict[str, Any]:
    return Recipe.model_json_schema()
