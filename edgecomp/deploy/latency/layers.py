"""The layers a latency model prices: every Conv2d and Linear, with the facts that do not change under pruning.

Channel counts change as a network is pruned; kernel, groups (depthwise or not)
and the output's spatial size do not. They are read once, from one forward
pass with hooks, and keyed by the module's name in `model.named_modules()`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

Counts = dict[str, tuple[int, int]]  # layer name -> (in channels, out channels)


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str  # "conv", "depthwise" or "linear"
    kernel: int  # kh * kw (1 for linear)
    groups: int  # of a grouped, not depthwise, conv (1 otherwise)
    out_hw: int  # output height * width (1 for linear)

    @property
    def family(self) -> str:
        """Layers whose kernels block channels alike share one latency step: the kind and kernel size."""
        return self.kind if self.kind == "linear" else f"{self.kind}{self.kernel}"

    def as_dict(self) -> dict:
        return asdict(self)


def _is_depthwise(module: nn.Conv2d) -> bool:
    return module.groups > 1 and module.groups == module.in_channels == module.out_channels


def read_layers(model: nn.Module, example: torch.Tensor) -> dict[str, Layer]:
    """Every Conv2d / Linear the forward pass calls, in call order."""
    found: dict[str, Layer] = {}
    hooks = []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(_recorder(name, found)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return found


def _recorder(name: str, found: dict[str, Layer]):
    def record(module: nn.Module, inputs, output) -> None:
        if isinstance(module, nn.Linear):
            found[name] = Layer(name, "linear", 1, 1, 1)
            return
        kernel = module.kernel_size[0] * module.kernel_size[1]
        depthwise = _is_depthwise(module)
        found[name] = Layer(name, "depthwise" if depthwise else "conv", kernel,
                            1 if depthwise else module.groups, int(output.shape[-1] * output.shape[-2]))

    return record


def channel_counts(model: nn.Module) -> Counts:
    """(in, out) channels of every Conv2d / Linear, as they are now."""
    counts = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            counts[name] = (module.in_channels, module.out_channels)
        elif isinstance(module, nn.Linear):
            counts[name] = (module.in_features, module.out_features)
    return counts
