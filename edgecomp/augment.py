"""Magnitude-parameterised augmentation on batched tensors (finding A).

Every image of a batch gets its own random operations and parameters, but the
work is done per operation on the sub-batch that drew it, never per image.
Random parameters are drawn (`make_params`) separately from applying them
(`apply`), as torchvision's transforms v2 do, so a test can fix them.

Magnitude M runs over 0..30 with torchvision's RandAugment meaning (31 bins):
at M the signed strength of an operation is M/30 of its range.

Images go in as uint8 (N, C, H, W) and come out as float32 in 0..255.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from .data import as_nchw
from .recipe import MAX_MAGNITUDE, AugmentSection, Policy

# (name, signed, range at M=30) — torchvision's RandAugment table.
OPS: list[tuple[str, bool, float]] = [
    ("identity", False, 0.0),
    ("shear_x", True, 0.3),
    ("shear_y", True, 0.3),
    ("translate_x", True, 150.0 / 331.0),  # fraction of the width
    ("translate_y", True, 150.0 / 331.0),
    ("rotate", True, 30.0),  # degrees
    ("brightness", True, 0.9),
    ("color", True, 0.9),
    ("contrast", True, 0.9),
    ("sharpness", True, 0.9),
    ("posterize", False, 4.0),  # bits removed
    ("solarize", False, 255.0),  # threshold lowered by
    ("autocontrast", False, 0.0),
    ("equalize", False, 0.0),
]
SCALE = {name: scale for name, _, scale in OPS}
GEOMETRIC = {"shear_x", "shear_y", "translate_x", "translate_y", "rotate"}
ERASE_MAX_PROB = 0.5
ERASE_MAX_AREA = 0.4
ERASE_MIN_AREA = 0.02


@dataclass
class OpParams:
    """One round of operations: op index, signed strength per image."""

    op: torch.Tensor  # (B,) int64 into OPS
    strength: torch.Tensor  # (B,) float: signed fraction of the op's range (-1..1)


@dataclass
class AugmentParams:
    crop_offsets: Optional[torch.Tensor]  # (B, 2) ints in 0..2*pad
    flip: Optional[torch.Tensor]  # (B,) bool
    rounds: list[OpParams]
    erase_boxes: Optional[torch.Tensor]  # (B, 4) y0, y1, x0, x1; empty box = no erase
    erase_noise_seed: int


class Augmenter:
    """Crop+flip, then the policy at magnitude M, then random erasing at M."""

    def __init__(self, cfg: AugmentSection):
        self.cfg = cfg

    def __call__(self, images: torch.Tensor, magnitude: float, generator: torch.Generator) -> torch.Tensor:
        params = self.make_params(images.shape, magnitude, generator)
        return self.apply(images, params)

    def base(self, images: torch.Tensor, _magnitude: float, generator: torch.Generator) -> torch.Tensor:
        """Crop and flip only, no policy operation and no erasing: the weakest view of an image."""
        params = self.make_params(images.shape, 0.0, generator)
        params.rounds, params.erase_boxes = [], None
        return self.apply(images, params)

    # -------------------------------------------------- drawing parameters

    def make_params(self, shape: torch.Size, magnitude: float, generator: torch.Generator) -> AugmentParams:
        batch, _, height, width = shape
        if not 0 <= magnitude <= MAX_MAGNITUDE:
            raise ValueError(f"magnitude must be in 0..{MAX_MAGNITUDE}, got {magnitude}")
        pad = self.cfg.crop_padding
        crop = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator) if pad else None
        flip = torch.rand(batch, generator=generator) < 0.5 if self.cfg.flip else None
        rounds = self._policy_rounds(batch, magnitude, generator)
        erase = self._erase_boxes(batch, height, width, magnitude, generator) if self._erases() else None
        noise_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        return AugmentParams(crop, flip, rounds, erase, noise_seed)

    def _erases(self) -> bool:
        return self.cfg.erasing or self.cfg.policy == Policy.erasing

    def _policy_rounds(self, batch: int, magnitude: float, generator: torch.Generator) -> list[OpParams]:
        policy = self.cfg.policy
        if policy in (Policy.none, Policy.erasing):
            return []
        count = self.cfg.num_ops if policy == Policy.randaugment else 1
        rounds = []
        for _ in range(count):
            op = torch.randint(0, len(OPS), (batch,), generator=generator)
            level = torch.full((batch,), magnitude / MAX_MAGNITUDE)
            if policy == Policy.trivialaugment:  # strength uniform in 0..M
                level = level * torch.rand(batch, generator=generator)
            sign = torch.where(torch.rand(batch, generator=generator) < 0.5, -1.0, 1.0)
            signed = torch.tensor([s for _, s, _ in OPS])[op]
            rounds.append(OpParams(op, torch.where(signed, level * sign, level)))
        return rounds

    def _erase_boxes(self, batch: int, height: int, width: int, magnitude: float, generator) -> torch.Tensor:
        level = magnitude / MAX_MAGNITUDE
        prob = ERASE_MAX_PROB * level
        max_area = ERASE_MIN_AREA + (ERASE_MAX_AREA - ERASE_MIN_AREA) * level
        area = (ERASE_MIN_AREA + (max_area - ERASE_MIN_AREA) * torch.rand(batch, generator=generator)) * height * width
        log_ratio = (math.log(0.3) + (math.log(3.3) - math.log(0.3)) * torch.rand(batch, generator=generator)).exp()
        box_h = (area * log_ratio).sqrt().round().clamp(1, height).long()
        box_w = (area / log_ratio).sqrt().round().clamp(1, width).long()
        y0 = (torch.rand(batch, generator=generator) * (height - box_h + 1)).long()
        x0 = (torch.rand(batch, generator=generator) * (width - box_w + 1)).long()
        on = torch.rand(batch, generator=generator) < prob
        return torch.stack([y0, torch.where(on, y0 + box_h, y0), x0, torch.where(on, x0 + box_w, x0)], dim=1)

    # -------------------------------------------------- applying them

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        out = images.float()
        if params.crop_offsets is not None:
            out = random_crop(out, params.crop_offsets, self.cfg.crop_padding)
        if params.flip is not None:
            out = torch.where(params.flip.view(-1, 1, 1, 1), out.flip(-1), out)
        for round_params in params.rounds:
            out = apply_round(out, round_params)
        if params.erase_boxes is not None:
            out = erase(out, params.erase_boxes, params.erase_noise_seed)
        return out


def random_crop(images: torch.Tensor, offsets: torch.Tensor, pad: int) -> torch.Tensor:
    batch, _, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = offsets[:, 0, None] + torch.arange(height)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(width)  # (B, W)
    picked = padded[torch.arange(batch)[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # B,H,W,C
    # not .contiguous(): a 1-channel B,C,H,W view of B,H,W,C already counts as contiguous and keeps
    # channels-last strides, which sends the whole network down oneDNN's NHWC kernels (see data.as_nchw)
    return as_nchw(picked.permute(0, 3, 1, 2))


def apply_round(images: torch.Tensor, params: OpParams) -> torch.Tensor:
    """One operation per image; geometric ones share a single grid_sample."""
    out = _apply_geometric(images, params)
    for index, (name, _, scale) in enumerate(OPS):
        if name not in COLOR_OPS:
            continue
        chosen = (params.op == index).nonzero().flatten()
        if len(chosen):
            out[chosen] = COLOR_OPS[name](out[chosen], params.strength[chosen] * scale).clamp(0, 255)
    return out


def _apply_geometric(images: torch.Tensor, params: OpParams) -> torch.Tensor:
    names = [OPS[i][0] for i in params.op.tolist()]
    chosen = [i for i, n in enumerate(names) if n in GEOMETRIC]
    if not chosen:
        return images.clone()
    theta = torch.eye(2, 3).repeat(len(chosen), 1, 1)
    for row, index in enumerate(chosen):
        theta[row] = _affine(names[index], float(params.strength[index]) * SCALE[names[index]])
    sub = images[chosen]
    grid = F.affine_grid(theta, list(sub.shape), align_corners=False)
    out = images.clone()
    out[chosen] = F.grid_sample(sub, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out


def _affine(name: str, value: float) -> torch.Tensor:
    """Inverse map (output → input) in normalised coordinates for grid_sample."""
    matrix = torch.eye(2, 3)
    if name == "shear_x":
        matrix[0, 1] = value
    elif name == "shear_y":
        matrix[1, 0] = value
    elif name == "translate_x":
        matrix[0, 2] = 2 * value
    elif name == "translate_y":
        matrix[1, 2] = 2 * value
    elif name == "rotate":
        angle = math.radians(value)
        matrix[:, :2] = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return matrix


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def _gray(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images[:, :3] * weights).sum(1, keepdim=True)


def _blend(images: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return other + _per_image(factor) * (images - other)


def _sharpness(images: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    kernel = torch.ones(3, 3)
    kernel[1, 1] = 5.0
    kernel = (kernel / kernel.sum()).expand(images.shape[1], 1, 3, 3)
    blurred = images.clone()
    blurred[..., 1:-1, 1:-1] = F.conv2d(images, kernel, groups=images.shape[1])
    return _blend(images, blurred, 1 + strength)


def _posterize(images: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    shift = _per_image(strength.round()).clamp(0, 4)  # bits removed: 0..4
    step = 2.0**shift
    return torch.floor(images.floor() / step) * step


def _solarize(images: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    # strictly above: at M=0 (threshold 255) nothing changes; torchvision's >= would invert white
    threshold = _per_image(255.0 - strength)
    return torch.where(images > threshold, 255.0 - images, images)


def _autocontrast(images: torch.Tensor, _strength: torch.Tensor) -> torch.Tensor:
    low = images.amin(dim=(2, 3), keepdim=True)
    high = images.amax(dim=(2, 3), keepdim=True)
    scale = torch.where(high > low, 255.0 / (high - low).clamp_min(1e-6), torch.ones_like(high))
    return torch.where(high > low, (images - low) * scale, images)


def _equalize(images: torch.Tensor, _strength: torch.Tensor) -> torch.Tensor:
    return TF.equalize(images.round().clamp(0, 255).to(torch.uint8)).float()


def _contrast(images: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    mean = _gray(images).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(images, mean.expand_as(images), 1 + strength)


COLOR_OPS = {
    "brightness": lambda x, s: _blend(x, torch.zeros_like(x), 1 + s),
    "color": lambda x, s: _blend(x, _gray(x).expand_as(x), 1 + s),
    "contrast": _contrast,
    "sharpness": _sharpness,
    "posterize": _posterize,
    "solarize": _solarize,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
}


def erase(images: torch.Tensor, boxes: torch.Tensor, noise_seed: int) -> torch.Tensor:
    """Fill each image's box with uniform noise (empty boxes leave it alone)."""
    height, width = images.shape[-2:]
    ys = torch.arange(height).view(1, height, 1)
    xs = torch.arange(width).view(1, 1, width)
    inside = (
        (ys >= boxes[:, 0, None, None]) & (ys < boxes[:, 1, None, None])
        & (xs >= boxes[:, 2, None, None]) & (xs < boxes[:, 3, None, None])
    ).unsqueeze(1)
    if not inside.any():
        return images
    noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(noise_seed)) * 255.0
    return torch.where(inside, noise, images)
