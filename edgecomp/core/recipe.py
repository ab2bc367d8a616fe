"""The recipe: one validated description of a compression run.

Every section rejects unknown keys and documents every field (the JSON Schema
from `edgecomp recipe schema` carries the descriptions). YAML is read with
`safe_load` only. Errors come out as one line naming the dotted field path.
"""

from __future__ import annotations

import copy
import json
import re
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union, cast

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from .errors import RecipeError
from .precision import DEFAULT_PRECISION, Precision

SHIPPED_RECIPES = Path(__file__).parents[1] / "recipes"
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
        "(cifar_resnet8/14/20, toy_grouped), 'timm:NAME' when timm is installed, or 'pkg.module:callable': "
        "a function or class importable from the Python path or the working directory, called as "
        "callable(num_classes=model.num_classes, **model.kwargs) and returning an nn.Module that takes "
        "model.in_channels × model.input_size² images (edgecomp passes no in_channels to it)",
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


TARGET_KINDS = ("macs", "params", "latency", "latency_ms")  # exclusive keys of prune.target
TAG = "kind:"  # pydantic puts a union member's tag in error locations; _describe leaves it out


class MacsTarget(Section):
    macs: float = Field(..., gt=0, lt=1, description="fraction of the dense MACs to keep at the end")

    @property
    def kind(self) -> str:
        return "macs"


class ParamsTarget(Section):
    params: float = Field(..., gt=0, lt=1, description="fraction of the dense parameters to keep at the end")

    @property
    def kind(self) -> str:
        return "params"


class Runtime(str, Enum):
    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"
    torch = "torch"  # PyTorch on this machine's CUDA GPU


class LatencyTarget(Section):
    """Prune for the device: every channel count on the block the target runtime computes in (measured there),
    and each step's model timed whole on the target until it meets that step's budget (compression/latency/)."""

    latency: Optional[float] = Field(
        None, gt=0, lt=1, description="fraction of the dense model's latency to reach, both timed alternately in "
        "one loop on the device (holds on a busy host)")
    latency_ms: Optional[float] = Field(
        None, gt=0, description="absolute p50 latency (ms) to reach on the device: for a dedicated device; on a "
        "shared host an absolute figure moves with the load")
    device: str = Field("host", description="where latency is measured: host, a device profile, or ssh://...")
    runtime: Runtime = Field(Runtime.onnxruntime, description="onnxruntime (CPU), tensorrt (trtexec on the "
                             "device: never run on real TensorRT yet) or torch (PyTorch on this machine's CUDA GPU)")
    precision: Precision = Field(Precision.fp32, description="precision the runtime runs (onnxruntime: fp32)")
    batch: int = Field(1, ge=1, le=256, description="batch the latency is measured at")
    threads: int = Field(1, ge=0, description="onnxruntime intra-op threads (0: its default, all cores); one "
                         "thread keeps a shared host's figures apart from the load")
    latency_iterations: int = Field(100, ge=10, description="alternating timed rounds per whole-model measurement "
                                    "(trtexec: one round per 20, each a trtexec run of 50 inferences per model)")
    tolerance: float = Field(0.05, gt=0, lt=0.5, description="a step is accepted once its measured latency (the "
                             "mean of two separate timing loops) is within [1 - tolerance, 1] of its budget; below "
                             "that it is re-planned to keep more channels")
    max_replans: int = Field(4, ge=0, le=20, description="re-plans per step after the first plan, each aimed by "
                             "interpolating between the measured plans")
    max_block: Optional[int] = Field(None, description="cap on the channel block counts are kept on: 4, 8, 16 or "
                                     "32 (none: the block measured on the device, at most 32); a block as wide as a "
                                     "narrow layer leaves that layer unprunable, so small networks may want 4 or 8; "
                                     "at 4 nothing is measured and counts are multiples of min(prune.round_to, 4)")

    @property
    def kind(self) -> str:
        return "latency"

    @field_validator("max_block")
    @classmethod
    def _a_block_the_probe_times(cls, value: Optional[int]) -> Optional[int]:
        if value is not None and value not in (4, 8, 16, 32):
            raise ValueError(f"{value} is not one of the blocks timed on the device: 4, 8, 16, 32")
        return value

    @model_validator(mode="after")
    def _one_budget(self) -> LatencyTarget:
        if (self.latency is None) == (self.latency_ms is None):
            raise ValueError("prune.target: give one of latency (a fraction of the dense latency) or latency_ms")
        if self.runtime == Runtime.onnxruntime and self.precision != Precision.fp32:
            raise ValueError("prune.target.precision: onnxruntime (CPU) prices fp32 only; use runtime tensorrt")
        if self.runtime == Runtime.torch and (self.device != "host" or self.precision == Precision.int8):
            raise ValueError("prune.target.runtime: torch measures on this machine's GPU, in fp32 or fp16 "
                             "(device host); for a device use onnxruntime or tensorrt")
        return self


def _target_kind(value: Any) -> Optional[str]:
    if isinstance(value, BaseModel):  # a target given as a model: one of the three kinds
        return TAG + cast("MacsTarget | ParamsTarget | LatencyTarget", value).kind
    kinds = {_kind_of(key) for key in TARGET_KINDS if isinstance(value, dict) and key in value}
    return TAG + kinds.pop() if len(kinds) == 1 else None  # none, or two kinds at once: one error line


def _kind_of(key: str) -> str:
    return "latency" if key.startswith("latency") else key


PruneTarget = Annotated[
    Union[Annotated[MacsTarget, Tag(TAG + "macs")], Annotated[ParamsTarget, Tag(TAG + "params")],
          Annotated[LatencyTarget, Tag(TAG + "latency")]],
    Discriminator(_target_kind, custom_error_type="prune_target",
                  custom_error_message="give one of macs, params, latency or latency_ms"),
]


class PruneSection(Section):
    steps: int = Field(3, ge=1, le=100, description="number of pruning steps, each followed by fine-tuning")
    target: PruneTarget = Field(
        default_factory=lambda: MacsTarget(macs=0.5), description="the final size: one of macs or params (a "
        "fraction of the dense model's), or latency / latency_ms on a device (LatencyTarget)"
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
    none = "none"


class ScheduleKind(str, Enum):
    constant = "constant"
    linear = "linear"
    steps = "steps"
    teacher = "teacher"


Magnitude = Annotated[float, Field(ge=0, le=MAX_MAGNITUDE)]


def _tag_by_kind(default: str):
    """The tag of a section with kinds: its `kind` key (absent: `default`, as recipes have always allowed)."""

    def kind(value: Any) -> Optional[str]:
        raw = value.get("kind", default) if isinstance(value, dict) else getattr(value, "kind", None)
        if isinstance(raw, Enum):
            return raw.value
        return raw if isinstance(raw, str) else None

    return kind


# Shared fields as annotated types, so that each kind class lists `kind` first (recipe.yaml reads in that order).
DenseMagnitude = Annotated[float, Field(ge=0, le=MAX_MAGNITUDE, description="magnitude for the dense model (0..30)")]


class ConstantSchedule(Section):
    kind: Literal[ScheduleKind.constant] = Field(
        ScheduleKind.constant,  # benchmarks/RESULTS.md table (a): M = 0 was best at every size, none followed it
        description="constant (the default): M = dense at every step",
    )
    dense: DenseMagnitude = 0.0


class LinearSchedule(Section):
    kind: Literal[ScheduleKind.linear] = Field(
        ScheduleKind.linear, description="linear in the MACs ratio s: M = min + (dense - min) * s")
    dense: DenseMagnitude = 0.0
    min: float = Field(0.0, ge=0, le=MAX_MAGNITUDE, description="magnitude a model of size 0 would get")


class StepsSchedule(Section):
    kind: Literal[ScheduleKind.steps] = Field(ScheduleKind.steps, description="steps: one value per pruning step")
    dense: DenseMagnitude = 0.0
    values: list[Magnitude] = Field(
        default_factory=list, description="magnitude (0..30) for pruning steps 1..N (length = prune.steps)"
    )


class TeacherSchedule(Section):
    kind: Literal[ScheduleKind.teacher] = Field(
        ScheduleKind.teacher,
        description="teacher: the largest M at which the teacher keeps teacher.calibration's accuracy target "
        "(dense stage: dense)",
    )
    dense: DenseMagnitude = 0.0


MagnitudeSchedule = Annotated[
    Union[Annotated[ConstantSchedule, Tag("constant")], Annotated[LinearSchedule, Tag("linear")],
          Annotated[StepsSchedule, Tag("steps")], Annotated[TeacherSchedule, Tag("teacher")]],
    Discriminator(_tag_by_kind("constant")),
]


class AugmentSection(Section):
    policy: Policy = Field(
        Policy.none,  # benchmarks/RESULTS.md: no RandAugment magnitude beat M = 0 at any size, so crop + flip
        description="randaugment (torchvision's RandAugment at magnitude M, op for op), trivialaugment (one op "
        "per image at a whole level drawn uniformly in 0..M) or none (default: crop + flip only, what "
        "benchmarks/RESULTS.md supports)",
    )
    num_ops: int = Field(2, ge=1, le=8, description="RandAugment: operations applied to each image")
    erasing: bool = Field(
        False, description="random erasing after the policy, independent of the magnitude (torchvision's "
        "RandomErasing with erasing_p, erasing_scale, erasing_ratio; the box is filled with uniform noise)",
    )
    erasing_p: float = Field(0.5, ge=0, le=1, description="erasing: probability that an image gets a box")
    erasing_scale: tuple[float, float] = Field(
        (0.02, 0.33), description="erasing: range of the box's area as a fraction of the image (low, high)"
    )
    erasing_ratio: tuple[float, float] = Field(
        (0.3, 3.3), description="erasing: range of the box's aspect ratio h/w, drawn log-uniformly (low, high)"
    )
    flip: bool = Field(True, description="random horizontal flip (always on, magnitude-independent)")
    crop_padding: int = Field(
        2, ge=0, description="random crop after zero padding by this many pixels (0: off)"
    )
    schedule: MagnitudeSchedule = Field(
        default_factory=ConstantSchedule,
        description="magnitude per step, one of four kinds chosen by `kind`: constant (default), linear, steps, "
        "teacher",
    )

    @field_validator("policy", mode="before")
    @classmethod
    def _removed_policy(cls, value: Any) -> Any:
        if value == "erasing":
            raise ValueError("augment.policy: 'erasing' was removed (erasing no longer follows the magnitude); "
                             "use policy: none with erasing: true")
        return value

    @model_validator(mode="after")
    def _erasing_ranges(self) -> AugmentSection:
        low, high = self.erasing_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"augment.erasing_scale: needs 0 < low <= high <= 1, got {list(self.erasing_scale)}")
        low, high = self.erasing_ratio
        if not 0 < low <= high:
            raise ValueError(f"augment.erasing_ratio: needs 0 < low <= high, got {list(self.erasing_ratio)}")
        return self


class AuxKind(str, Enum):
    none = "none"
    rep = "rep"  # parallel 1x1 / identity branches, folded into each k×k conv after training
    heads = "heads"  # auxiliary classifiers after intermediate stages, dropped after training


class NoAux(Section):
    kind: Literal[AuxKind.none] = Field(
        AuxKind.none,
        description="training-only branches trained on a strongly augmented view, removed before pruning and "
        "export: none (the default), rep (1x1 and identity branches beside every k×k conv+BN, folded exactly into "
        "the conv) or heads (auxiliary classifiers after every stage, the last included, dropped)",
    )


StrongMagnitude = Annotated[Optional[float], Field(
    ge=0, le=MAX_MAGNITUDE,
    description="augmentation magnitude of the strong view the branches train on (0..30); it may never be "
    "weaker than a step's weak view. null: per step, max(augment.schedule.dense, the step's magnitude)",
)]


class _BranchAux(Section):
    """What both branch kinds have; each subclass declares its fields (kind first)."""

    if TYPE_CHECKING:  # declared for the type checker only: pydantic must not see them as fields of this class
        kind: AuxKind
        strong_magnitude: Optional[float]
        weight: float
        head_kd: float

    # pipeline.py reads the weights through these two (the per-kind defaults used to live here)
    def loss_weight(self) -> float:
        return self.weight

    def kd_weight(self) -> float:
        return self.head_kd


class RepAux(_BranchAux):
    kind: Literal[AuxKind.rep] = Field(
        AuxKind.rep,
        description="rep: 1x1 and identity branches beside every k×k conv+BN, folded exactly into the conv")
    strong_magnitude: StrongMagnitude = None
    weight: float = Field(1.0, ge=0, description="weight of the strong-view loss added to the main loss")
    head_kd: float = Field(
        0.0, ge=0, le=1,
        description="weight of distillation from the main head's (detached) weak-view logits, added to the "
        "strong-view loss",
    )
    rep_trunk: bool = Field(
        False, description="the strong view trains the trunk as well as the branches (false: branches only, "
        "the trunk detached in the strong pass)"
    )
    identity: bool = Field(True, description="add the identity (BN-only) branch where in = out channels and stride 1")


class HeadsAux(_BranchAux):
    kind: Literal[AuxKind.heads] = Field(
        AuxKind.heads, description="heads: auxiliary classifiers after every stage, the last included, dropped")
    strong_magnitude: StrongMagnitude = None
    weight: float = Field(
        0.05, ge=0, description="weight of the strong-view loss added to the main loss (the small weight "
        "deep-supervision work uses)")
    head_kd: float = Field(
        0.5, ge=0, le=1,
        description="weight of distillation from the main head's (detached) weak-view logits, added to each "
        "auxiliary output's strong-view loss",
    )
    heads_at: list[str] = Field(
        default_factory=list,
        description="module names whose outputs get an auxiliary classifier (empty: found automatically for "
        "ResNet, MobileNet, EfficientNet, RegNet and the CIFAR ResNets: the end of every stage)",
    )


AuxSection = Annotated[
    Union[Annotated[NoAux, Tag("none")], Annotated[RepAux, Tag("rep")], Annotated[HeadsAux, Tag("heads")]],
    Discriminator(_tag_by_kind("none")),
]
AUX_KINDS = (NoAux, RepAux, HeadsAux)
_AUX_ADAPTER = TypeAdapter(AuxSection)


def aux_section(**fields: Any) -> NoAux | RepAux | HeadsAux:
    """The aux class of `fields["kind"]` (default none), built from the fields as a recipe's aux section is."""
    return _AUX_ADAPTER.validate_python(fields)


class DifficultyMode(str, Enum):
    none = "none"
    weight = "weight"
    filter = "filter"


class DifficultyCriterion(str, Enum):
    drop = "drop"  # what the augmentation did: p_teacher(y | clean) - p_teacher(y | augmented)
    wrong = "wrong"  # the earlier reading: 1 - p_teacher(y | augmented), high wherever the teacher errs


class TeacherWrong(str, Enum):
    keep = "keep"  # full weight, never filtered: difficulty says nothing about them
    exclude = "exclude"  # left out of the loss (weight 0)


class DifficultySection(Section):
    mode: DifficultyMode = Field(
        DifficultyMode.none,
        description="use the teacher's difficulty of each augmented sample: none, weight (down-weight samples "
        "harder than tau(s)) or filter (replace them by a weaker view of the same image)",
    )
    criterion: DifficultyCriterion = Field(
        DifficultyCriterion.drop,
        description="drop: d = p_teacher(y|clean view) - p_teacher(y|augmented view), clipped to 0..1 (what the "
        "augmentation did); wrong: d = 1 - p_teacher(y|augmented view) (also high where the teacher is simply wrong)",
    )
    teacher_wrong: TeacherWrong = Field(
        TeacherWrong.keep,
        description="samples the teacher misclassifies on the clean view (drop criterion): keep (full weight, "
        "never filtered) or exclude (weight 0); counted in the metrics either way",
    )
    tau_dense: float = Field(
        0.6, gt=0, le=1, description="tau(s) at the dense size: hardest difficulty the dense model is asked to learn"
    )
    tau_min: float = Field(
        0.3, gt=0, le=1, description="tau(s) as the size ratio s tends to 0; tau(s) = min + (dense - min) * s"
    )
    min_weight: float = Field(
        0.1, ge=0, le=1, description="weight mode: weight of a sample with d = 1 (falls linearly from 1 at tau(s))"
    )


class CalibrationSection(Section):
    samples: int = Field(512, ge=16, description="augmented validation samples per candidate magnitude")
    grid: list[float] = Field(
        default_factory=lambda: [float(m) for m in range(0, 31, 3)],
        description="candidate magnitudes (0..30) evaluated with the teacher (the dense magnitude is added)",
    )
    target_small: float = Field(
        0.95, gt=0, le=1,
        description="fraction of the teacher's clean accuracy to keep as the size ratio s tends to 0; at s = 1 "
        "the fraction is what the dense magnitude keeps (measured), so the dense size gets the dense magnitude",
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
        30, ge=0, description="timed batch-1 forward passes on the host after each step, alternating with the "
        "dense model: median, quartiles and speed-up over dense, a trend only (0: skip)"
    )
    latency_threads: int = Field(
        1, ge=1, description="PyTorch threads while the host latency above is timed; 1 by default because "
        "more threads than free cores (a shared or loaded machine) make the times and the speed-up meaningless"
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
    aux: AuxSection = Field(default_factory=NoAux, description="auxiliary branches (finding B), chosen by `kind`")
    teacher: TeacherSection = Field(default_factory=TeacherSection, description="the dense model as teacher")
    export: ExportSection = Field(default_factory=ExportSection, description="export settings")
    device: DeviceSection = Field(default_factory=DeviceSection, description="where latency is measured")

    @model_validator(mode="after")
    def _cross_checks(self) -> Recipe:
        sched = self.augment.schedule
        if sched.kind == ScheduleKind.steps and len(sched.values) != self.prune.steps:
            raise ValueError(
                f"augment.schedule.values: needs {self.prune.steps} values (prune.steps), got {len(sched.values)}"
            )
        self._strong_view_checks()
        grid = self.teacher.calibration.grid
        if not grid or any(not 0 <= v <= MAX_MAGNITUDE for v in grid):
            raise ValueError(f"teacher.calibration.grid: needs magnitudes in 0..{MAX_MAGNITUDE}")
        return self

    def _strong_view_checks(self) -> None:
        """Branches and the teacher schedule need a magnitude, and branches a strong view above the weak one."""
        sched, aux = self.augment.schedule, self.aux
        if self.augment.policy == Policy.none:  # the default since the benchmarks: crop + flip, no magnitude
            needs = [f"aux.kind {aux.kind.value} (its strong view)"] if isinstance(aux, _BranchAux) else []
            if sched.kind == ScheduleKind.teacher:
                needs.append("augment.schedule.kind teacher (it calibrates magnitudes)")
            if needs:
                raise ValueError(f"augment.policy: none applies no magnitude, but {' and '.join(needs)} needs one; "
                                 "set augment.policy: randaugment")
        if isinstance(aux, _BranchAux):
            _check_strong_view(aux, sched)

    def to_plain(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())


# ---------------------------------------------------------------- loading


def _check_strong_view(aux: _BranchAux, sched: MagnitudeSchedule) -> None:
    strong, weakest_bound = aux.strong_magnitude, _largest_weak_magnitude(sched)
    if strong is not None and strong < weakest_bound:
        raise ValueError(
            f"aux.strong_magnitude: {strong:g} is weaker than the weak view, which reaches {weakest_bound:g} "
            f"under augment.schedule {sched.kind.value}; the strong view must be at least as strong (raise it, "
            "or leave it null: per step the larger of the dense and the step's magnitude)"
        )
    if (strong if strong is not None else weakest_bound) == 0:
        raise ValueError(
            f"aux.strong_magnitude: {'null' if strong is None else '0'} gives magnitude 0 at every step (augment."
            f"schedule never goes above 0), so aux.kind {aux.kind.value} would train its branches on the weak "
            "view; set aux.strong_magnitude above 0 (the benchmarks used 10)"
        )


def _largest_weak_magnitude(sched: MagnitudeSchedule) -> float:
    """The largest magnitude a fine-tuning step's weak view can get under this schedule."""
    if sched.kind == ScheduleKind.steps:
        return max(sched.values, default=sched.dense)
    if sched.kind == ScheduleKind.linear:
        return max(sched.dense, sched.min)
    return sched.dense  # constant; teacher (anchored: never above the dense magnitude)


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


def copy_shipped_recipe(name: str, dest: Optional[Path] = None) -> Path:
    """Write a shipped recipe, comments and all, to `dest` (a file, or a folder; default NAME.yaml here).
    A weights file the recipe names beside itself is pointed at by its absolute path, so the copy still
    finds it. Never overwrites: an existing file is a RecipeError."""
    source = SHIPPED_RECIPES / (name if name.endswith(".yaml") else f"{name}.yaml")
    if "/" in name or not source.is_file():
        shipped = ", ".join(sorted(p.stem for p in SHIPPED_RECIPES.glob("*.yaml")))
        raise RecipeError(f"recipe init: no shipped recipe {name!r} (shipped: {shipped})")
    target = Path(source.name) if dest is None else dest / source.name if dest.is_dir() else dest
    if target.exists():
        raise RecipeError(f"recipe init: {target} already exists; give another DEST or remove it first")
    text = source.read_text()
    for section, key in WEIGHT_FIELDS:
        value = (read_yaml(source).get(section) or {}).get(key)
        if isinstance(value, str) and not Path(value).is_absolute() and (source.parent / value).is_file():
            pattern = rf"(^\s*{key}:\s*){re.escape(value)}(?=\s|$)"
            resolved = str((source.parent / value).resolve())

            def keep_key(m: re.Match[str], path: str = resolved) -> str:
                return m.group(1) + path

            text = re.sub(pattern, keep_key, text, flags=re.M)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "x") as stream:  # "x": a file that appeared meanwhile is not overwritten either
            stream.write(text)
    except OSError as exc:
        raise RecipeError(f"recipe init: cannot write {target}: {exc}") from None
    return target


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
            raise RecipeError(f"--set {item!r}: expected key.path=value (no '=' or no key)")
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
        if parts[:-1] == ["prune", "target"] and parts[-1] in TARGET_KINDS:
            _switch_target_kind(node, parts[-1])
        if parts[-1] == "kind" and tuple(parts[:-1]) in KIND_CLASSES:
            _switch_kind(node, KIND_CLASSES[tuple(parts[:-1])].get(str(value)))
    return data


def _switch_target_kind(target: dict[str, Any], key: str) -> None:
    """`--set prune.target.latency=0.5` on a recipe with a MACs target replaces it: the kinds are exclusive, and
    keys only the old kind has go with it."""
    kinds: dict[str, type[Section]] = {"macs": MacsTarget, "params": ParamsTarget, "latency": LatencyTarget}
    kind = kinds[_kind_of(key)]
    for other in list(target):
        if other not in kind.model_fields or (other in TARGET_KINDS and other != key):  # latency <-> latency_ms too
            del target[other]


def _without_tag(path: tuple) -> tuple[tuple, Optional[str]]:
    """pydantic puts the chosen kind into an error's path (aux.rep.weight); users write aux.weight."""
    for section, kinds in KIND_CLASSES.items():
        size = len(section)
        if path[:size] == section and len(path) > size and path[size] in kinds:
            return path[:size] + path[size + 1:], path[size]
    return path, None


def _switch_kind(section: dict[str, Any], kind: Optional[type[BaseModel]]) -> None:
    """`--set augment.schedule.kind=constant` on a linear schedule switches it: keys only the old kind has go
    (an unknown kind is left for the schema to name)."""
    if kind is None:
        return
    for key in list(section):
        if key not in kind.model_fields:
            del section[key]


def _describe(error: ErrorDetails) -> str:
    path, chosen = _without_tag(tuple(p for p in error["loc"] if not str(p).startswith(TAG)))
    loc = ".".join(str(p) for p in path).encode("unicode_escape").decode() or "recipe"
    kind, ctx, got = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "extra_forbidden":
        return f"{loc}: unknown key" + (f" for kind {chosen}" if chosen else "")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        kinds = list(KIND_CLASSES.get(path, {}))
        if not isinstance(got, dict):
            return f"{loc}: must be a section (a mapping with kind: {' | '.join(kinds)}), got {got!r}"
        return f"{loc}.kind: must be one of {', '.join(map(repr, kinds))} (got {ctx.get('tag')!r})"
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
        return message if message.startswith(("augment.", "prune.", "teacher.", "aux.")) else f"{loc}: {message}"
    return f"{loc}: {error['msg'].lower()} (got {got!r})"


# recipe.yaml in a run directory is the resolved recipe. Those written before the kinds were classes hold every
# kind's fields at these defaults; such fields are dropped so the runs still load and mean what they meant. A
# field of another kind with any other value is still refused.
LEGACY_FLAT_DEFAULTS: dict[tuple[str, ...], dict[str, Any]] = {
    ("augment", "schedule"): {"min": 0.0, "values": []},
    ("aux",): {"strong_magnitude": None, "weight": None, "heads_at": [], "head_kd": None, "rep_trunk": False,
               "identity": True},
}
# the class of each kind, the first one being the kind taken when none is written
KIND_CLASSES: dict[tuple[str, ...], dict[str, type[Section]]] = {
    ("augment", "schedule"): {"constant": ConstantSchedule, "linear": LinearSchedule, "steps": StepsSchedule,
                              "teacher": TeacherSchedule},
    ("aux",): {"none": NoAux, "rep": RepAux, "heads": HeadsAux},
}


def _drop_legacy_defaults(data: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    for path, defaults in LEGACY_FLAT_DEFAULTS.items():
        node: object = data
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        classes = KIND_CLASSES[path]
        chosen = classes.get(_tag_by_kind(next(iter(classes)))(node))
        for key, old in defaults.items():
            if chosen and key in node and node[key] == old and (key not in chosen.model_fields or old is None):
                del node[key]  # None meant "the kind's default", which is now the class default
    return data


# keys of prune.target that runs of earlier releases wrote at these values (the per-layer latency model's): their
# recipe.yaml still validates; any other value was a choice this release cannot honour, and is refused
LEGACY_LATENCY_KEYS = {"profiles": None, "profile_iterations": None, "calibration": 0, "planner": "model",
                       "max_step": None}


def _drop_legacy_latency_keys(data: dict[str, Any]) -> dict[str, Any]:
    target = (data.get("prune") or {}).get("target") if isinstance(data.get("prune"), dict) else None
    if not isinstance(target, dict) or not any(key in target for key in LEGACY_LATENCY_KEYS):
        return data
    data = copy.deepcopy(data)
    target = data["prune"]["target"]
    for key, old in LEGACY_LATENCY_KEYS.items():
        if key in target and (old is None and key in ("profiles", "profile_iterations") or target[key] == old):
            del target[key]
    if "max_step" in target:
        raise RecipeError(f"prune.target.max_step: replaced by prune.target.max_block (4, 8, 16 or 32), the cap on "
                          f"the channel block (got {target['max_step']!r})")
    return data


def validate(data: dict[str, Any], source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(_drop_legacy_defaults(_drop_legacy_latency_keys(data)))
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors(include_url=False)).replace("\n", "\\n")
        raise RecipeError(problems if source == "recipe" else f"{source}: {problems}") from None


REQUIRED_SECTIONS = ("model", "data")


def require_sections(data: dict[str, Any], path: Path) -> None:
    """A recipe must say what it runs: an empty file or one without model/data never runs on defaults."""
    if not data:
        raise RecipeError(f"{path}: the recipe is empty; it needs at least the sections {' and '.join(REQUIRED_SECTIONS)}")
    missing = [name for name in REQUIRED_SECTIONS if name not in data]
    if missing:
        raise RecipeError(f"{path}: missing section{'s' if len(missing) > 1 else ''} {' and '.join(missing)} "
                          f"(a recipe names at least its {' and '.join(REQUIRED_SECTIONS)})")


def load_recipe(path: str | Path, overrides: Optional[list[str]] = None) -> Recipe:
    """Read, override and validate a recipe. Raises RecipeError (exit 2)."""
    resolved = resolve_recipe_path(path)
    data = read_yaml(resolved)
    require_sections(data, resolved)
    return validate(apply_overrides(_paths_beside(data, resolved.parent), overrides or []))


WEIGHT_FIELDS = (("model", "weights"), ("dense", "weights"), ("teacher", "weights"))


def _paths_beside(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A relative weights path written in a recipe file that names a file beside the recipe (and none in
    the working directory) means that file: shipped recipes carry their weights this way. `--set` values
    are the user's own and stay relative to the working directory."""
    data = copy.deepcopy(data)
    for section, key in WEIGHT_FIELDS:
        node = data.get(section)
        value = node.get(key) if isinstance(node, dict) else None
        if isinstance(value, str) and value and not Path(value).is_absolute() and not Path(value).exists():
            beside = folder / value
            if beside.is_file():
                assert isinstance(node, dict)  # value is a str only when node is a mapping
                node[key] = str(beside.resolve())
    return data


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_plain(), sort_keys=False)


def recipe_schema() -> dict[str, Any]:
    return Recipe.model_json_schema()
