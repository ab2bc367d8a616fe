"""Magnitude-parameterised augmentation on batched tensors (finding A).

Every image of a batch gets its own random operations and parameters, but the
work is done per operation on the sub-batch that drew it, never per image.
Random parameters are drawn (`make_params`) separately from applying them
(`apply`), as torchvision's transforms v2 do, so a test can fix them.

Magnitude M runs over 0..30 and means exactly what it means to torchvision's
`RandAugment(num_ops, magnitude=M)`: the same op table (31 bins), the same
per-op magnitudes and sign rule, and torchvision's own functional kernels
(NEAREST interpolation, fill 0) applied to uint8 pixels. A fractional M
interpolates linearly between the two neighbouring bins.

Random erasing is not part of M: it is its own switch (`augment.erasing`).

Images go in as uint8 (N, C, H, W) and come out as float32 in 0..255.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..core.data import as_nchw
from ..core.recipe import MAX_MAGNITUDE, AugmentSection, Policy

BINS = MAX_MAGNITUDE + 1
NEAREST = InterpolationMode.NEAREST  # torchvision RandAugment's default; fill None = 0 outside the image


def _linspace(low: float, high: float) -> Callable[[int, int], torch.Tensor]:
    return lambda height, width: torch.linspace(low, high, BINS)


# (name, signed, magnitudes per bin for an image of (height, width) or None): torchvision's
# RandAugment._AUGMENTATION_SPACE with num_bins = 31, built the same way so the float32 values match bit for bit.
OPS: list[tuple[str, bool, Optional[Callable[[int, int], torch.Tensor]]]] = [
    ("identity", False, None),
    ("shear_x", True, _linspace(0.0, 0.3)),
    ("shear_y", True, _linspace(0.0, 0.3)),
    ("translate_x", True, lambda height, width: torch.linspace(0.0, 150.0 / 331.0 * width, BINS)),
    ("translate_y", True, lambda height, width: torch.linspace(0.0, 150.0 / 331.0 * height, BINS)),
    ("rotate", True, _linspace(0.0, 30.0)),
    ("brightness", True, _linspace(0.0, 0.9)),
    ("color", True, _linspace(0.0, 0.9)),
    ("contrast", True, _linspace(0.0, 0.9)),
    ("sharpness", True, _linspace(0.0, 0.9)),
    ("posterize", False, lambda height, width: (8 - (torch.arange(BINS) / ((BINS - 1) / 4))).round().int()),
    ("solarize", False, _linspace(1.0, 0.0)),
    ("autocontrast", False, None),
    ("equalize", False, None),
]
NAMES = [name for name, _, _ in OPS]
# saturation is the identity on a 1-channel image (torchvision returns it unchanged), so it gets no draw there
COLOR_ONLY = {"color"}


def ops_for(channels: int) -> list[int]:
    """Indices into OPS that can change an image with this many channels."""
    return [i for i, name in enumerate(NAMES) if channels == 3 or name not in COLOR_ONLY]


def magnitude_table(height: int, width: int) -> torch.Tensor:
    """(len(OPS), 31) unsigned magnitude of every op at every bin, in float64 holding torchvision's float32 values."""
    table = torch.zeros(len(OPS), BINS, dtype=torch.float64)
    for index, (_, _, values) in enumerate(OPS):
        if values is not None:
            table[index] = values(height, width).double()
    return table


def op_magnitudes(op: torch.Tensor, level: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Unsigned magnitude per image of op at level (0..30): torchvision's bin value at a whole level,
    linear between the two neighbouring bins otherwise (posterize then rounds to whole bits)."""
    table = magnitude_table(height, width)
    low = level.floor().long().clamp(0, BINS - 1)
    high = (low + 1).clamp(max=BINS - 1)
    value = table[op, low] + (table[op, high] - table[op, low]) * (level.double() - low)
    return torch.where(op == NAMES.index("posterize"), value.round(), value)


@dataclass
class OpParams:
    """One round of operations: op index and signed magnitude per image, in torchvision's units (the
    `magnitude` its RandAugment passes to `_apply_image_or_video_transform`)."""

    op: torch.Tensor  # (B,) int64 into OPS
    magnitude: torch.Tensor  # (B,) float64: shear tangent, pixels, degrees, factor - 1, bits kept, threshold/255


@dataclass
class AugmentParams:
    crop_offsets: Optional[torch.Tensor]  # (B, 2) ints in 0..2*pad
    flip: Optional[torch.Tensor]  # (B,) bool
    rounds: list[OpParams]
    erase_boxes: Optional[torch.Tensor]  # (B, 4) y0, y1, x0, x1; empty box = no erase
    erase_noise_seed: int


class Augmenter:
    """Crop+flip, then the policy at magnitude M, then (when switched on) random erasing, independent of M."""

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
        batch, channels, height, width = shape
        if not 0 <= magnitude <= MAX_MAGNITUDE:
            raise ValueError(f"magnitude must be in 0..{MAX_MAGNITUDE}, got {magnitude}")
        pad = self.cfg.crop_padding
        crop = torch.randint(0, 2 * pad + 1, (batch, 2), generator=generator) if pad else None
        flip = torch.rand(batch, generator=generator) < 0.5 if self.cfg.flip else None
        rounds = self._policy_rounds(shape, magnitude, generator)
        erase = self._erase_boxes(batch, height, width, generator) if self.cfg.erasing else None
        noise_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        return AugmentParams(crop, flip, rounds, erase, noise_seed)

    def _policy_rounds(self, shape: torch.Size, magnitude: float, generator: torch.Generator) -> list[OpParams]:
        batch, channels, height, width = shape
        policy = self.cfg.policy
        if policy == Policy.none:
            return []
        if channels not in (1, 3):  # torchvision's colour kernels take 1 or 3 channels only
            raise ValueError(f"augment.policy {policy.value}: needs 1- or 3-channel images, got {channels}")
        allowed = torch.tensor(ops_for(channels))
        count = self.cfg.num_ops if policy == Policy.randaugment else 1
        rounds = []
        for _ in range(count):
            op = allowed[torch.randint(0, len(allowed), (batch,), generator=generator)]
            level = torch.full((batch,), float(magnitude))
            if policy == Policy.trivialaugment:  # a whole bin drawn uniformly in 0..floor(M)
                level = torch.randint(0, int(magnitude) + 1, (batch,), generator=generator).double()
            value = op_magnitudes(op, level, height, width)
            negative = torch.rand(batch, generator=generator) <= 0.5  # torchvision's sign rule
            signed = torch.tensor([s for _, s, _ in OPS])[op]
            rounds.append(OpParams(op, torch.where(signed & negative, -value, value)))
        return rounds

    def _erase_boxes(self, batch: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
        """torchvision's RandomErasing.make_params, batched: up to 10 tries per image for a box that fits."""
        cfg, tries = self.cfg, 10
        area = height * width * _uniform((batch, tries), *cfg.erasing_scale, generator)
        aspect = _uniform((batch, tries), math.log(cfg.erasing_ratio[0]), math.log(cfg.erasing_ratio[1]),
                          generator).exp()
        box_h = (area * aspect).sqrt().round().long()
        box_w = (area / aspect).sqrt().round().long()
        fits = (box_h < height) & (box_w < width)
        first = fits.long().argmax(dim=1, keepdim=True)  # the first try that fits
        box_h, box_w = box_h.gather(1, first).squeeze(1), box_w.gather(1, first).squeeze(1)
        y0 = (torch.rand(batch, generator=generator) * (height - box_h + 1)).long()
        x0 = (torch.rand(batch, generator=generator) * (width - box_w + 1)).long()
        on = (torch.rand(batch, generator=generator) < cfg.erasing_p) & fits.any(dim=1)
        return torch.stack([y0, torch.where(on, y0 + box_h, y0), x0, torch.where(on, x0 + box_w, x0)], dim=1)

    # -------------------------------------------------- applying them

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"augmentation takes uint8 images, got {images.dtype}")
        out = images
        if params.crop_offsets is not None:
            out = random_crop(out, params.crop_offsets, self.cfg.crop_padding)
        if params.flip is not None:
            out = torch.where(params.flip.view(-1, 1, 1, 1), out.flip(-1), out)
        for round_params in params.rounds:
            out = apply_round(out, round_params)
        out = out.float()
        if params.erase_boxes is not None:
            out = erase(out, params.erase_boxes, params.erase_noise_seed)
        return out


def _uniform(shape: tuple[int, int], low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


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
    """One operation per image (uint8 in, uint8 out): torchvision's own kernel, called once per
    (op, magnitude) on the sub-batch that drew it. RandAugment has one magnitude per op up to its
    sign, so that is at most two calls per op."""
    out = images.clone()
    for index in params.op.unique().tolist():
        if NAMES[index] == "identity":
            continue
        chosen = params.op == index
        for value in params.magnitude[chosen].unique().tolist():
            rows = (chosen & (params.magnitude == value)).nonzero().flatten()
            out[rows] = KERNELS[NAMES[index]](images[rows], value)
    return out


def _affine(images: torch.Tensor, translate: list[int], shear: list[float], center=None) -> torch.Tensor:
    return TF.affine(images, angle=0.0, translate=translate, scale=1.0, shear=shear, interpolation=NEAREST,
                     fill=None, center=center)


def _shear_degrees(magnitude: float) -> float:
    # torchvision's RandAugment: the magnitude is the shear's tangent, sheared about the top-left corner
    return math.degrees(math.atan(magnitude))


# What torchvision's RandAugment does with (op, signed magnitude) on a uint8 image
# (`_AutoAugmentBase._apply_image_or_video_transform`), one call for a whole sub-batch.
KERNELS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "shear_x": lambda x, m: _affine(x, [0, 0], [_shear_degrees(m), 0.0], center=[0, 0]),
    "shear_y": lambda x, m: _affine(x, [0, 0], [0.0, _shear_degrees(m)], center=[0, 0]),
    "translate_x": lambda x, m: _affine(x, [int(m), 0], [0.0, 0.0]),  # whole pixels, truncated toward 0
    "translate_y": lambda x, m: _affine(x, [0, int(m)], [0.0, 0.0]),
    "rotate": lambda x, m: TF.rotate(x, angle=m, interpolation=NEAREST, fill=None),
    "brightness": lambda x, m: TF.adjust_brightness(x, brightness_factor=1.0 + m),
    "color": lambda x, m: TF.adjust_saturation(x, saturation_factor=1.0 + m),
    "contrast": lambda x, m: TF.adjust_contrast(x, contrast_factor=1.0 + m),
    "sharpness": lambda x, m: TF.adjust_sharpness(x, sharpness_factor=1.0 + m),
    "posterize": lambda x, m: TF.posterize(x, bits=int(m)),  # bits kept: 8 at M=0, 4 at M=30
    "solarize": lambda x, m: TF.solarize(x, threshold=255 * m),  # inverts pixels >= threshold
    "autocontrast": lambda x, m: TF.autocontrast(x),
    "equalize": lambda x, m: TF.equalize(x),
}


def erase(images: torch.Tensor, boxes: torch.Tensor, noise_seed: int) -> torch.Tensor:
    """Fill each image's box with uniform noise in 0..255 (empty boxes leave it alone)."""
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
