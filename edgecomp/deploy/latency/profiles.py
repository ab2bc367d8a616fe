"""Profiles on the target runtime: a PyTorch model in, per-layer milliseconds out (keyed by module name).

The model is exported as `edgecomp export` writes it (BN folded), the target-side
program `profile.py` runs it under the runtime's own profiler through a runner
(this machine or ssh), and each profiled entry is traced back to the Conv /
Gemm node it ran and from there to the PyTorch module:

- onnxruntime names a fused node after the original node or after an output
  tensor (`<tensor>_nchwc` after its layout pass); a tensor leads to its
  producer, and from there back through element-wise nodes (Relu, Add, Clip,
  ...) to the Conv it was fused into; a Conv+Add fusion that could be either
  of two convolutions is told apart by the weight shape the profiler records.
- TensorRT names an engine layer by the ONNX nodes it fused, joined by " + ".
- ONNX node names carry the module scope the exporter walked
  ("/layer1/layer1.0/conv1/Conv" is module "layer1.0.conv1"); the weight shape
  checks each match.

`compare` times several models alternately in one loop (`compare.py`), so a
budget given as a fraction of the dense latency is measured against the dense
model on the same, possibly busy, device.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import onnx
import torch
import torch.nn as nn

from ...core.errors import DeviceError, RemoteError
from ..export import export_onnx
from ..runners import Runner
from .layers import Layer, channel_counts
from .table import Observation

PASS_THROUGH = {"Relu", "Clip", "Add", "Sum", "Sigmoid", "HardSigmoid", "HardSwish", "Mul", "LeakyRelu",
                "BatchNormalization", "Identity", "Transpose", "Reshape", "Flatten"}
PRICED_OPS = {"Conv", "Gemm", "MatMul"}


@dataclass(frozen=True)
class ProfileSettings:
    """Where and how a latency model is measured: its key is what makes two tables interchangeable."""

    device: str  # the device label
    runtime: str  # "onnxruntime" or "trtexec" (TensorRT)
    precision: str = "fp32"
    batch: int = 1
    threads: int = 1
    iterations: int = 30
    warmup: int = 5
    provider: str = "cpu"

    def key(self, input_shape: tuple[int, ...], arch: str) -> dict[str, Any]:
        return {"device": self.device, "runtime": self.runtime, "precision": self.precision, "batch": self.batch,
                "threads": self.threads, "input": list(input_shape), "arch": arch, "provider": self.provider}

    def program_args(self, model: str, shape: tuple[int, ...]) -> list[str]:
        args = ["--model", model, "--iterations", str(self.iterations), "--warmup", str(self.warmup),
                "--batch", str(self.batch), "--threads", str(self.threads)]
        if self.runtime == "trtexec":
            dims = "x".join(str(d) for d in (self.batch, *shape))
            return args + ["--backend", "trtexec", "--precision", self.precision, "--shape", f"input:{dims}"]
        return args + ["--backend", "onnxruntime", "--provider", self.provider]


def module_of(node: onnx.NodeProto) -> Optional[str]:
    """The module scope the TorchScript exporter wrote into a node name: '/a/a.0/conv1/Conv' -> 'a.0.conv1',
    '/layer2/layer2.0/shortcut/shortcut.0/Conv' -> 'layer2.0.shortcut.0'."""
    parts = [p for p in node.name.split("/") if p][:-1]
    if not parts:
        return None
    # each scope is the module's name in its parent, prefixed with the parent's own when the parent is a
    # container ('layer2.0' under 'layer2', 'shortcut.0' under 'shortcut')
    name = local = parts[0]
    for part in parts[1:]:
        tail = part[len(local) + 1:] if part.startswith(local + ".") else part
        name, local = f"{name}.{tail}", part
    return name


def weight_shape(node: onnx.NodeProto, initializers: dict[str, list[int]]) -> Optional[list[int]]:
    return initializers.get(node.input[1]) if len(node.input) > 1 else None


def node_modules(proto: onnx.ModelProto, modules: dict[str, nn.Module]) -> dict[str, str]:
    """ONNX node name -> module name for every Conv / Gemm node, checked against the module's weight shape."""
    initializers = {t.name: list(t.dims) for t in proto.graph.initializer}
    found = {}
    for node in proto.graph.node:
        if node.op_type not in PRICED_OPS:
            continue
        name = module_of(node)
        module = modules.get(name) if name else None
        shape = weight_shape(node, initializers)
        if module is None or not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        expected = list(module.weight.shape)
        if shape is not None and sorted(shape) != sorted(expected):  # Gemm may hold the weight transposed
            raise RemoteError(f"latency profile: ONNX node {node.name} has weights {shape}, module {name} "
                              f"{expected}; the exporter's names no longer match the model")
        found[node.name] = name
    return found


class NodeResolver:
    """Profiled entry name -> the priced modules it ran (several for a TensorRT layer that fused them)."""

    def __init__(self, proto: onnx.ModelProto, modules: dict[str, nn.Module]):
        self.priced = node_modules(proto, modules)
        self.nodes = {node.name: node for node in proto.graph.node}
        self.producer = {out: node for node in proto.graph.node for out in node.output}
        self.modules = modules

    def resolve(self, entry: dict[str, Any]) -> list[str]:
        name = entry["name"]
        if " + " in name or name in self.nodes:  # TensorRT's fused layers; onnxruntime's own node names
            hits = [self.priced[part.strip()] for part in name.split(" + ") if part.strip() in self.priced]
            if hits or name in self.nodes:
                return hits or self._upstream(self.nodes[name], entry.get("weight_shape"))
        tensor = name[: -len("_nchwc")] if name.endswith("_nchwc") else name
        node = self.producer.get(tensor)
        return self._upstream(node, entry.get("weight_shape")) if node is not None else []

    def _upstream(self, node: onnx.NodeProto, shape: Optional[list[int]]) -> list[str]:
        """The priced node this one closes (walking back through element-wise nodes), told apart by shape."""
        candidates, frontier, seen = [], [node], set()
        while frontier:
            current = frontier.pop()
            if current.name in seen:
                continue
            seen.add(current.name)
            if current.name in self.priced:
                candidates.append(self.priced[current.name])
            elif current.op_type in PASS_THROUGH:
                frontier += [self.producer[i] for i in current.input if i in self.producer]
        if shape is not None and len(candidates) > 1:
            matching = [c for c in candidates if list(self.modules[c].weight.shape) == list(shape)]
            candidates = matching or candidates
        return candidates[:1]


def attribute(entries: list[dict[str, Any]], resolver: NodeResolver) -> tuple[dict[str, float], float]:
    """Per-module ms (a fused layer's time split by its modules' weight sizes) and the time no module claims."""
    per_module: dict[str, float] = {}
    rest = 0.0
    for entry in entries:
        hits = resolver.resolve(entry)
        if not hits:
            rest += entry["ms"]
            continue
        sizes = [resolver.modules[h].weight.numel() for h in hits]
        for hit, size in zip(hits, sizes):
            per_module[hit] = per_module.get(hit, 0.0) + entry["ms"] * size / sum(sizes)
    return per_module, rest


class Profiler:
    """Profiles and whole-model timings of PyTorch models on one target, through one runner."""

    def __init__(self, runner: Runner, settings: ProfileSettings, input_shape: tuple[int, ...]):
        self.runner, self.settings, self.input_shape = runner, settings, input_shape
        self.runtime_version: Optional[str] = None
        self.calls = 0

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

    def _export(self, model: nn.Module, folder: Path, name: str) -> tuple[Path, onnx.ModelProto]:
        proto, _ = export_onnx(model.cpu().eval(), torch.zeros(2, *self.input_shape))
        path = folder / f"{name}.onnx"
        onnx.save(proto, str(path))
        return path, proto

    def observe(self, model: nn.Module, layers: dict[str, Layer]) -> Observation:
        """One profile of `model` as it is now."""
        device = next(model.parameters()).device
        with tempfile.TemporaryDirectory(prefix="edgecomp-profile-") as scratch:
            path, proto = self._export(model, Path(scratch), f"profile{self.calls}")
            staged = self.runner.stage(path, path.name)
            result = self.runner.run("profile", self.settings.program_args(staged, self.input_shape))
        model.to(device)
        self.calls += 1
        self.runtime_version = result.get("runtime_version")
        modules = dict(model.named_modules())
        per_module, rest = attribute(result["layers"], NodeResolver(proto, modules))
        missing = sorted(set(layers) - set(per_module))
        if len(missing) > len(layers) // 2:
            raise RemoteError(f"latency profile: the {self.settings.runtime} profile names no time for "
                              f"{len(missing)} of {len(layers)} layers (e.g. {missing[0]}); cannot price them")
        counts = channel_counts(model)
        return Observation({n: counts[n] for n in layers}, {n: per_module.get(n, 0.0) for n in layers}, rest,
                           float(result["run_ms"]), float(result["wall_ms"]), missing)

    def compare(self, models: list[nn.Module], iterations: int = 50) -> dict[str, Any]:
        """Alternating timing of `models` in one loop; ratios are to the first."""
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="edgecomp-compare-") as scratch:
            args = []
            for index, model in enumerate(models):
                device = next(model.parameters()).device
                path, _ = self._export(model, Path(scratch), f"model{index}")
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
