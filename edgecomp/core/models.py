"""Model factory, tiny registered models, and structure-preserving save/load.

A pruned model is saved as plain data: its state_dict plus, for every module
whose shape pruning can change, the shape attributes it ended with. Loading
builds the dense model from the recipe's factory again, re-shapes those
modules, and loads the tensors — no pickled classes (weights_only=True).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch_pruning as tp

from .errors import ModelError
from .recipe import ModelSection

MODEL_FORMAT = "edgecomp-model/1"


# ---------------------------------------------------------------- tiny models


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet family (He et al. 2016): 3 stages of 6n+2 layers."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_channels: int = 3, width: int = 16):
        super().__init__()
        if (depth - 2) % 6:
            raise ModelError(f"model.arch: CIFAR ResNet depth must be 6n+2, got {depth}")
        blocks = (depth - 2) // 6
        widths = [width, width * 2, width * 4]
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages, cin = [], width
        for index, cout in enumerate(widths):
            layers = [BasicBlock(cin if b == 0 else cout, cout, 2 if (b == 0 and index) else 1) for b in range(blocks)]
            stages.append(nn.Sequential(*layers))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ToyGrouped(nn.Module):
    """A small net with grouped and depthwise convolutions, for tests."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 32):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.grouped = nn.Sequential(
            nn.Conv2d(width, width * 2, 3, 2, 1, groups=4, bias=False), nn.BatchNorm2d(width * 2), nn.ReLU()
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(width * 2, width * 2, 3, 1, 2, dilation=2, groups=width * 2, bias=False),
            nn.BatchNorm2d(width * 2), nn.ReLU(),
            nn.Conv2d(width * 2, width * 2, 1, bias=False), nn.BatchNorm2d(width * 2), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.grouped(self.stem(x))
        x = x + self.depthwise(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def _cifar_resnet(depth: int) -> Callable[..., nn.Module]:
    return lambda num_classes, in_channels, **kw: CifarResNet(depth, num_classes, in_channels, **kw)


TINY_MODELS: dict[str, Callable[..., nn.Module]] = {
    "cifar_resnet8": _cifar_resnet(8),
    "cifar_resnet14": _cifar_resnet(14),
    "cifar_resnet20": _cifar_resnet(20),
    "toy_grouped": lambda num_classes, in_channels, **kw: ToyGrouped(num_classes, in_channels, **kw),
}


# ---------------------------------------------------------------- factory


def build_model(cfg: ModelSection) -> nn.Module:
    """The dense model the recipe names, adapted to its channels, classes and input size."""
    if cfg.arch in TINY_MODELS:
        model = _call(TINY_MODELS[cfg.arch], cfg, num_classes=cfg.num_classes, in_channels=cfg.in_channels)
        if cfg.pretrained:
            raise ModelError(f"model.pretrained: {cfg.arch} has no pretrained weights")
    elif ":" in cfg.arch and not cfg.arch.startswith("timm:"):
        model = _call(_entry_point(cfg.arch), cfg, num_classes=cfg.num_classes)
    elif cfg.arch.startswith("timm:"):
        model = _timm_model(cfg)
    else:
        model = _torchvision_model(cfg)
    if cfg.small_input and cfg.arch not in TINY_MODELS:
        shrink_stem(model)
    if cfg.weights:
        load_state_file(model, cfg.weights, "model.weights", cfg)
    return model


def _call(factory: Callable[..., nn.Module], cfg: ModelSection, **kwargs: Any) -> nn.Module:
    """Call a model factory with what edgecomp passes (`kwargs`) plus the user's model.kwargs; a factory that
    cannot take them is named with the argument it lacks, not blamed on a field the user never set."""
    try:
        accepts = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: find out by calling
        accepts = None
    if accepts is not None:
        for name in kwargs:
            if not _accepts(accepts, name):
                raise ModelError(f"model.arch: {cfg.arch} must accept {name}= (edgecomp passes model.{name} to "
                                 f"the callable); its signature is {accepts}")
        unknown = [name for name in cfg.kwargs if not _accepts(accepts, name)]
        if unknown:
            raise ModelError(f"model.kwargs: {cfg.arch} does not accept {', '.join(unknown)} (signature {accepts})")
    try:
        return factory(**kwargs, **cfg.kwargs)
    except TypeError as exc:  # behind a factory that takes **kwargs: the model itself refused an argument
        if cfg.kwargs:
            raise ModelError(f"model.kwargs: {cfg.arch} does not accept them: {exc}") from None
        raise ModelError(f"model.arch: building {cfg.arch} failed: {exc}") from None


def _accepts(signature: inspect.Signature, name: str) -> bool:
    parameters = signature.parameters
    return name in parameters or any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _entry_point(spec: str) -> Callable[..., nn.Module]:
    """`pkg.module:callable`, imported from the Python path or, as `python -m` would, the working directory."""
    module_name, _, attr = spec.partition(":")
    try:
        module = _import_here(module_name)
        return getattr(module, attr)
    except ModuleNotFoundError as exc:
        if not f"{module_name}.".startswith(f"{exc.name}."):  # the module was found; something it imports was not
            raise ModelError(f"model.arch: importing {module_name!r} for {spec!r} failed: {exc}") from None
        raise ModelError(
            f"model.arch: cannot import {module_name!r} for {spec!r} ({exc}): neither on the Python path nor in the "
            f"working directory {Path.cwd()}; run from the folder that holds it or set PYTHONPATH to that folder"
        ) from None
    except (ImportError, AttributeError) as exc:
        raise ModelError(f"model.arch: cannot load entry point {spec!r}: {exc}") from None


def _import_here(module_name: str):
    """Import a module; when it is not found, look in the working directory too (what `python -m` puts first on
    sys.path and the `edgecomp` script does not)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        here = str(Path.cwd())
        if exc.name != module_name.split(".")[0] or here in sys.path:
            raise
    sys.path.append(here)  # after everything installed: a file here never shadows a library
    importlib.invalidate_caches()
    return importlib.import_module(module_name)


def _timm_model(cfg: ModelSection) -> nn.Module:
    try:
        import timm
    except ImportError:
        raise ModelError(f"model.arch: {cfg.arch} needs timm (pip install timm)") from None
    name = cfg.arch.removeprefix("timm:")
    if name not in timm.list_models():
        raise ModelError(f"model.arch: timm has no model {name!r}")
    try:
        return timm.create_model(
            name, pretrained=cfg.pretrained, num_classes=cfg.num_classes, in_chans=cfg.in_channels, **cfg.kwargs
        )
    except OSError as exc:
        raise ModelError(f"model.pretrained: cannot fetch timm weights for {name} (offline?): {exc}") from None


def _torchvision_model(cfg: ModelSection) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if cfg.arch not in available:
        import difflib

        close = difflib.get_close_matches(cfg.arch, available + list(TINY_MODELS), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelError(f"model.arch: unknown model {cfg.arch!r}{hint}")
    if not cfg.pretrained:
        model = _call(lambda **kw: torchvision.models.get_model(cfg.arch, **kw), cfg, num_classes=cfg.num_classes)
    else:
        model = _pretrained_torchvision(cfg)
    if cfg.in_channels != 3:
        replace_first_conv(model, cfg.in_channels)
    return model


def _pretrained_torchvision(cfg: ModelSection) -> nn.Module:
    import torchvision

    try:
        model = torchvision.models.get_model(cfg.arch, weights="DEFAULT", **cfg.kwargs)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        raise ModelError(
            f"model.pretrained: cannot get the pretrained weights of {cfg.arch} (offline and not in the torch "
            f"hub cache {torch.hub.get_dir()}): {exc}; set model.pretrained=false or model.weights=FILE"
        ) from None
    replace_classifier(model, cfg.num_classes)
    return model


def last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError("model.arch: the model has no Linear classifier")
    return linears[-1]


def replace_classifier(model: nn.Module, num_classes: int) -> None:
    name, old = last_linear(model)
    if old.out_features != num_classes:
        set_submodule(model, name, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    raise ModelError("model.arch: the model has no Conv2d")


def replace_first_conv(model: nn.Module, in_channels: int, kernel: int | None = None, stride: int | None = None):
    name, old = first_conv(model)
    kernel = kernel or old.kernel_size[0]
    stride = stride or old.stride[0]
    new = nn.Conv2d(in_channels, old.out_channels, kernel, stride, kernel // 2, bias=old.bias is not None)
    if kernel == old.kernel_size[0] and in_channels != old.in_channels:
        with torch.no_grad():  # keep pretrained filters: average over the old input channels
            new.weight.copy_(old.weight.mean(dim=1, keepdim=True).expand_as(new.weight))
    set_submodule(model, name, new)


def shrink_stem(model: nn.Module) -> None:
    """For 28-64 px inputs: a 3x3 stride-1 first conv and no stem max-pool."""
    _, old = first_conv(model)
    replace_first_conv(model, old.in_channels, kernel=3, stride=1)
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.MaxPool2d) and name.count(".") <= 1:
            set_submodule(model, name, nn.Identity())
            break


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


# ---------------------------------------------------------------- weights and structure


def read_checkpoint(path: str | Path, field: str) -> dict[str, Any]:
    """torch.load with weights_only=True: a malicious pickle is refused, never run."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"{field}: {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{field}: {path} is not a safe tensor checkpoint ({first_line})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{field}: {path} holds a {type(data).__name__}, not a state_dict")
    return data


def load_state_file(model: nn.Module, path: str | Path, field: str, cfg: ModelSection | None = None) -> None:
    """Load a plain state_dict, an edgecomp model file, or a run's step checkpoint into `model` (built from
    `cfg`, which names it when the weights do not fit)."""
    data = read_checkpoint(path, field)
    if isinstance(data.get("model"), dict) and data["model"].get("format") == MODEL_FORMAT:
        data = data["model"]  # a step checkpoint wraps the model payload
    try:
        if data.get("format") == MODEL_FORMAT:
            apply_structure(model, data["structure"])
            resize_like(model, data["state_dict"])
            state = data["state_dict"]
        else:
            state = data.get("state_dict", data)
        model.load_state_dict(state)
    except (ModelError, RuntimeError, AttributeError, KeyError, TypeError) as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        detail = " ".join(line.strip() for line in lines[:2])[:200].removeprefix("model error: ")
        raise ModelError(
            f"{field}: {path} does not fit the model: saved from {_saved_from(data)}, the recipe builds "
            f"{_describe_model(cfg) if cfg else 'another model'} ({detail}); use weights of the same architecture, "
            f"or --set {field}=null"
        ) from None


def _describe_model(cfg: ModelSection) -> str:
    return f"{cfg.arch} ({cfg.num_classes} classes, {cfg.in_channels} input channel(s))"


def _saved_from(data: dict[str, Any]) -> str:
    """The architecture a weights file records (edgecomp model files do; a plain state_dict does not)."""
    try:
        return _describe_model(ModelSection.model_validate(data.get("model")))
    except ValueError:  # pydantic's ValidationError is a ValueError
        return "an architecture the file does not record"


SHAPE_ATTRS = {
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.Linear: ("in_features", "out_features"),
    nn.BatchNorm2d: ("num_features",),
}


def model_structure(model: nn.Module) -> dict[str, dict[str, int]]:
    structure = {}
    for name, module in model.named_modules():
        for kind, attrs in SHAPE_ATTRS.items():
            if isinstance(module, kind):
                structure[name] = {attr: int(getattr(module, attr)) for attr in attrs}
    return structure


def apply_structure(model: nn.Module, structure: dict[str, dict[str, int]]) -> None:
    """Re-shape modules to a recorded structure; tensors come from load_state_dict after."""
    modules = dict(model.named_modules())
    for name, attrs in structure.items():
        if name not in modules:
            raise ModelError(f"saved structure names module {name!r} that the model factory does not build")
        for attr, value in attrs.items():
            setattr(modules[name], attr, value)


def resize_like(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every parameter and buffer the shape it has in `state` (values follow)."""
    for key, tensor in state.items():
        module_name, _, attr = key.rpartition(".")
        module = model.get_submodule(module_name) if module_name else model
        current = getattr(module, attr, None)
        if isinstance(current, torch.Tensor) and current.shape != tensor.shape:
            replacement = torch.empty(tensor.shape, dtype=current.dtype)
            if isinstance(current, nn.Parameter):
                setattr(module, attr, nn.Parameter(replacement, requires_grad=current.requires_grad))
            else:
                module.register_buffer(attr, replacement)


def model_payload(model: nn.Module, cfg: ModelSection) -> dict[str, Any]:
    """Plain data from which `model_from_payload` rebuilds the (pruned) model."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {"format": MODEL_FORMAT, "model": cfg.model_dump(mode="json"), "structure": model_structure(model),
            "state_dict": state}


def model_from_payload(payload: dict[str, Any], cfg: ModelSection | None = None) -> nn.Module:
    """Rebuild a saved model. Without `cfg` the file's own model section is used, but only for built-in
    architectures: a file must never make edgecomp import and call code it names (`pkg.module:fn`, timm)."""
    if payload.get("format") != MODEL_FORMAT:
        raise ModelError(f"not an edgecomp model file (format {payload.get('format')!r}, expected {MODEL_FORMAT})")
    if cfg is None:
        cfg = _section_from_file(payload.get("model"))
    model = build_model(cfg.model_copy(update={"weights": None, "pretrained": False}))
    try:
        apply_structure(model, payload["structure"])
        resize_like(model, payload["state_dict"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise ModelError(f"model file does not fit {cfg.arch}: {str(exc).splitlines()[0][:200]}") from None
    return model


def _section_from_file(section: Any) -> ModelSection:
    from pydantic import ValidationError

    try:
        cfg = ModelSection.model_validate(section)
    except ValidationError as exc:
        raise ModelError(f"model file has a malformed model section ({exc.error_count()} problems)") from None
    if ":" in cfg.arch or cfg.kwargs:
        raise ModelError(f"model file names {cfg.arch!r} with kwargs {sorted(cfg.kwargs)}: only built-in "
                         "architectures are rebuilt from a file's own description; load it with its run's recipe")
    return cfg


def load_model_file(path: str | Path, cfg: ModelSection | None = None) -> nn.Module:
    return model_from_payload(read_checkpoint(path, "model file"), cfg)


@dataclass
class Size:
    """MACs and parameters, as Torch-Pruning counts them."""

    macs: int
    params: int


def measure_size(model: nn.Module, example: torch.Tensor) -> Size:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example)
    model.train(was_training)
    return Size(int(macs), int(params))


def channel_counts(model: nn.Module) -> dict[str, tuple[int, int]]:
    """(in, out) channels of every Conv2d / Linear, as they are now: what identifies a pruned architecture."""
    counts = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            counts[name] = (module.in_channels, module.out_channels)
        elif isinstance(module, nn.Linear):
            counts[name] = (module.in_features, module.out_features)
    return counts
