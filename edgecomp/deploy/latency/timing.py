"""Whole-model timings on the target runtime, through a runner (this machine, or a device over SSH).

`compare` exports each PyTorch model as `edgecomp export` writes it (BN folded) and has the target-side program
`compare.py` time them all in one loop, every model once per round in a shuffled order, so that a budget given as
a fraction of the dense latency is measured against the dense model on the same, possibly busy, device.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch
import torch.nn as nn

from ...core.errors import DeviceError
from ..export import export_onnx
from ..runners import Runner


@dataclass(frozen=True)
class TimingSettings:
    """Where and how models are timed: the key of anything measured there."""

    device: str  # the device label
    runtime: str  # "onnxruntime", "trtexec" (TensorRT) or "torch"
    precision: str = "fp32"
    batch: int = 1
    threads: int = 1
    warmup: int = 5
    provider: str = "cpu"

    def key(self, input_shape: tuple[int, ...], arch: str) -> dict[str, Any]:
        return {"device": self.device, "runtime": self.runtime, "precision": self.precision, "batch": self.batch,
                "threads": self.threads, "input": list(input_shape), "arch": arch, "provider": self.provider}


class Timer:
    """Alternating whole-model timings of PyTorch models on one target, through one runner."""

    def __init__(self, runner: Runner, settings: TimingSettings, input_shape: tuple[int, ...]):
        self.runner, self.settings, self.input_shape = runner, settings, input_shape

    def check_runtime(self) -> dict[str, Any]:
        """The device's facts (info.py), refusing a device that lacks the runtime the latency is asked for."""
        info = self.runner.run("info", [])
        if self.settings.runtime == "trtexec" and not info.get("trtexec"):
            raise DeviceError(f"prune.target.runtime: tensorrt asked for, but {self.runner.label} has no trtexec "
                              "(on a Jetson it is /usr/src/tensorrt/bin/trtexec, from JetPack)")
        if self.settings.runtime == "onnxruntime" and not info.get("onnxruntime"):
            raise DeviceError(f"prune.target.runtime: onnxruntime asked for, but {self.runner.label} has no "
                              "onnxruntime for its python3 (pip install onnxruntime there, or use runtime tensorrt)")
        return info

    def _export(self, model: nn.Module, folder: Path, name: str) -> Path:
        proto, _ = export_onnx(model.cpu().eval(), torch.zeros(2, *self.input_shape))
        path = folder / f"{name}.onnx"
        onnx.save(proto, str(path))
        return path

    def compare(self, models: list[nn.Module], iterations: int = 50) -> dict[str, Any]:
        """Alternating timing of `models` in one loop; ratios are to the first."""
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="edgecomp-compare-") as scratch:
            args = []
            for index, model in enumerate(models):
                device = next(model.parameters()).device
                path = self._export(model, Path(scratch), f"model{index}")
                model.to(device)
                args += ["--model", self.runner.stage(path, path.name)]
            settings = self.settings
            backend = "trtexec" if settings.runtime == "trtexec" else "onnxruntime"
            timed = ["--iterations", str(iterations)] if backend == "onnxruntime" else \
                ["--iterations", "50", "--rounds", str(max(3, iterations // 20))]  # trtexec: a run per round
            args += ["--backend", backend, *timed, "--warmup", str(settings.warmup),
                     "--batch", str(settings.batch), "--threads", str(settings.threads),
                     "--provider", settings.provider]
            if backend == "trtexec":
                dims = "x".join(str(d) for d in (settings.batch, *self.input_shape))
                args += ["--precision", settings.precision, "--shape", f"input:{dims}"]
            result = self.runner.run("compare", args)
        result["seconds"] = time.perf_counter() - started
        return result
