"""The precision of a TensorRT engine: one type, one default, and the rules about who can run which.

The recipe (`export.precision`), `edgecomp export`, `edgecomp bench` and the
runners all use `Precision`; the target-side `build.py` takes the same words
on its command line (it may import nothing from edgecomp) and has no default
of its own, so the default is decided here only.

What a precision means for the files: the ONNX model is always fp32; fp16 is a
TensorRT build setting; int8 means the Q/DQ model (`model.int8.onnx`, scales
from training images) built with INT8 and FP16 enabled.
"""

from __future__ import annotations

from enum import Enum
from typing import Optional

from .errors import UserInputError


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


# fp16: every Jetson GPU since the Nano runs it fast, the DLA accepts it, and accuracy matches fp32 for CNNs.
DEFAULT_PRECISION = Precision.fp16
CHOICES = "fp32, fp16 or int8"


def parse_precision(value: Precision | str | None, flag: str = "--precision") -> Optional[Precision]:
    """A precision from user input (None stays None: not given); anything else is one-line exit 2."""
    if value is None or isinstance(value, Precision):
        return value
    try:
        return Precision(value)
    except ValueError:
        raise UserInputError(f"{flag}: must be {CHOICES} (got {value!r})") from None


def check_dla(precision: Precision, dla_core: Optional[int], flag: str = "--dla-core") -> None:
    """The DLA runs fp16 and int8 only: the one place this rule is written."""
    if dla_core is not None and Precision(precision) == Precision.fp32:
        raise UserInputError(f"{flag}: the DLA runs fp16 or int8 only; add --precision fp16")


def check_int8_support(precision: Precision, profile) -> None:
    """A profile without fast INT8 (the Nano's Maxwell GPU) is refused an int8 engine."""
    if profile is not None and Precision(precision) == Precision.int8 and not profile.int8:
        raise UserInputError(f"--precision int8: {profile.name} has no fast INT8; use fp16")
