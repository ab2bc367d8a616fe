"""Latency on the target runtime, measured whole.

    timing.py  alternating whole-model timings on the target (onnxruntime, trtexec), through a runner
    cuda.py    the same under PyTorch on this machine's CUDA GPU

The pruner (compression/latency/) never imports the runners: the pipeline hands it plain functions built
from a Timer.
"""

from .cuda import TorchTimer
from .timing import Timer, TimingSettings

__all__ = ["Timer", "TimingSettings", "TorchTimer"]
