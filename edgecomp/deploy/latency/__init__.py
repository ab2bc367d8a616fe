"""Latency on the target runtime, layer by layer.

    layers.py    the Conv / Linear layers a network's latency is priced on, and their channel counts
    table.py     the latency model: per-layer lines on each family's channel steps, fitted from profiles
    profiles.py  profiles and alternating whole-model timings on the target, through a runner
    cuda.py      per-layer CUDA-event profiles under PyTorch, where a CUDA GPU is present

The pruner (compression/latency_prune.py) prices channel counts with a
LatencyTable and never imports the runners: the pipeline hands it plain
functions built from a Profiler.
"""

from .layers import Counts, Layer, channel_counts, read_layers
from .table import LatencyTable, Observation, calibrate, fit_table, relative_error

__all__ = ["Counts", "Layer", "channel_counts", "read_layers", "LatencyTable", "Observation", "calibrate",
           "fit_table", "relative_error"]
