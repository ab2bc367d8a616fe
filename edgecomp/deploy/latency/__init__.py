"""Latency on the target runtime, measured whole.

    timing.py  alternating whole-model timings on the target (onnxruntime, trtexec), through a runner
    cuda.py    the same under PyTorch on this machine's CUDA GPU

The latency pruner's plan, block probe and closed loop (compression/latency/{plan,block,loop}.py) never import
the runners: compression/latency/run.py builds plain functions from a Timer and hands them over.
"""

from .cuda import TorchTimer
from .timing import Timer, TimingSettings

__all__ = ["Timer", "TimingSettings", "TorchTimer"]
