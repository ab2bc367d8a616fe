"""Keep strided 1x1 convolutions with few input channels away from oneDNN's broken kernel on CPU.

oneDNN's strided 1x1 backward-weights kernel reduces the stride to 1 through a scratch copy (its
"rtus" workspace) and, in NHWC, writes past that workspace when a layer has fewer input channels than
the kernel's block (8 on AVX2, 16 on AVX-512): training then hangs or dies with "double free or
corruption" (upstream: uxlfoundation/oneDNN, "1x1 convolution backward_weights writes past the rtus
workspace (nhwc, IC < ic_block)"). Pruning creates exactly such layers (ResNet shortcuts of 4 or 12
channels). `data.as_nchw` keeps edgecomp's own batches in NCHW, where the kernel is sound; this guard
covers what layout cannot: channels-last weights or inputs a user or a future path brings.

While the guard is on, such a convolution computes the same function differently: subsample the input
by the stride first, then convolve at stride 1 (exact for a 1x1 kernel), so the rtus path is never
taken. Nothing about the module changes (parameters, names, export); the patch is removed on exit.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

ONEDNN_IC_BLOCK = 16  # AVX-512's block; AVX2's is 8, so the larger covers both


def risky_convs(model: nn.Module) -> list[nn.Conv2d]:
    """Strided 1x1 convolutions whose per-group input channels fall below oneDNN's block."""
    return [
        module for module in model.modules()
        if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1) and module.stride != (1, 1)
        and module.padding_mode == "zeros" and isinstance(module.padding, tuple)
        and module.in_channels // module.groups < ONEDNN_IC_BLOCK
    ]


def _unit_stride_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    assert isinstance(self.padding, tuple)  # risky_convs picks only convolutions with numeric padding
    pad_h, pad_w = self.padding
    if pad_h or pad_w:
        x = F.pad(x, (pad_w, pad_w, pad_h, pad_h))
    stride_h, stride_w = self.stride
    return F.conv2d(x[..., ::stride_h, ::stride_w], self.weight, self.bias, 1, 0, 1, self.groups)


@contextmanager
def unit_stride_1x1(model: nn.Module, device: Optional[torch.device] = None) -> Iterator[list[nn.Conv2d]]:
    """On CPU, run every risky strided 1x1 convolution as subsample + stride-1 conv for the duration.

    `device`: where the model runs (default: where its first parameter lives). Yields the patched layers."""
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    patched = risky_convs(model) if device.type == "cpu" else []
    for conv in patched:  # an instance attribute shadows the class's forward (what nn.Module's setattr does too)
        conv.__dict__["forward"] = types.MethodType(_unit_stride_forward, conv)
    try:
        yield patched
    finally:
        for conv in patched:
            conv.__dict__.pop("forward", None)
