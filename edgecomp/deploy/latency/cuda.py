"""Alternating whole-model timings under PyTorch on a CUDA GPU (prune.target.runtime: torch).

The same call as timing.Timer (`compare`), measured in this process with CUDA events around each forward
pass. The clock is injectable so that the loop is tested on a CPU (`CpuClock`); on a GPU it is `CudaClock`.
This path has run only where benchmarks/gpu_check.sh has run (see its results).
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ...core.errors import DeviceError


class CudaClock:
    """Marks are CUDA events; an interval is read once the device has finished."""

    def __init__(self, device: torch.device):
        self.device = device

    def mark(self) -> Any:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def settle(self) -> None:
        torch.cuda.synchronize(self.device)

    @staticmethod
    def ms(start: Any, end: Any) -> float:
        return start.elapsed_time(end)


class CpuClock:
    """perf_counter marks: the same bookkeeping on a CPU (tests, or a profile of PyTorch on the CPU)."""

    def mark(self) -> float:
        return time.perf_counter()

    def settle(self) -> None:
        return None

    @staticmethod
    def ms(start: float, end: float) -> float:
        return (end - start) * 1e3


class TorchTimer:
    """Alternating timings of PyTorch models on this machine's GPU (in fp32 or fp16)."""

    def __init__(self, input_shape: tuple[int, ...], batch: int = 1, warmup: int = 5, precision: str = "fp32",
                 device: str = "cuda", clock: Any = None):
        self.input_shape, self.batch, self.warmup = input_shape, batch, warmup
        self.device = torch.device(device)
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.clock = clock if clock is not None else CudaClock(self.device)

    def check_runtime(self) -> dict[str, Any]:
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise DeviceError("prune.target.runtime: torch asked for, but this PyTorch sees no CUDA GPU "
                              f"(torch {torch.__version__}, cuda {torch.version.cuda}); use runtime onnxruntime")
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        return {"torch": torch.__version__, "cuda": torch.version.cuda, "device": name}

    def _ready(self, model: nn.Module) -> tuple[nn.Module, torch.Tensor]:
        ready = copy.deepcopy(model).eval().to(self.device, self.dtype)
        return ready, torch.randn(self.batch, *self.input_shape, device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def compare(self, models: list[nn.Module], iterations: int = 50) -> dict[str, Any]:
        """Each round runs every model once; the same keys as the target-side compare.py."""
        started = time.perf_counter()
        ready = [self._ready(m) for m in models]
        for model, x in ready:
            for _ in range(self.warmup):
                model(x)
        rounds, order = np.zeros((iterations, len(ready))), np.random.default_rng(0)
        for r in range(iterations):
            for i in order.permutation(len(ready)):  # a new order each round, as compare.py
                model, x = ready[i]
                rounds[r, i] = self._time_one(functools.partial(model, x))
        names = [f"model{i}" for i in range(len(models))]
        ratios = rounds / rounds[:, :1]
        return {"backend": "torch", "batch": self.batch, "rounds": iterations,
                "models": [{"model": n, **{f"p{q}": float(np.percentile(rounds[:, i], q)) for q in (25, 50, 75)}}
                           for i, n in enumerate(names)],
                "ratios": [{"model": n, "p50": float(np.median(ratios[:, i])),
                            "low": float(np.percentile(ratios[:, i], 2.5)),
                            "high": float(np.percentile(ratios[:, i], 97.5))} for i, n in enumerate(names)],
                "seconds": time.perf_counter() - started}

    def _time_one(self, call: Callable[[], Any]) -> float:
        begin = self.clock.mark()
        call()
        end = self.clock.mark()
        self.clock.settle()
        return self.clock.ms(begin, end)
