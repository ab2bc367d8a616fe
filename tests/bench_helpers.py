"""Helpers of the devices/bench tests: tiny ONNX models, fake Jetson tools, the CLI with an environment."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def export_onnx(path: Path, arch: str = "cifar_resnet8", width: int = 8, in_channels: int = 1,
                size: int = 28) -> Path:
    """A small CIFAR-ResNet with random weights, exported as the brief says (opset 17, dynamic batch)."""
    import torch

    from edgecomp.core.models import TINY_MODELS

    torch.manual_seed(0)
    model = TINY_MODELS[arch](num_classes=10, in_channels=in_channels, width=width).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notice: this path is wanted
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, torch.zeros(1, in_channels, size, size), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def broken_onnx(path: Path) -> Path:
    """A model onnx reads (the host accepts it) but onnxruntime cannot run: an unknown operator."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("NoSuchOp", ["input"], ["logits"], domain="edgecomp.test")
    graph = helper.make_graph([node], "broken",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("edgecomp.test", 1)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def fake_tool(folder: Path, name: str, script: str) -> Path:
    """An executable shell script standing in for a Jetson tool (trtexec, tegrastats, nvpmodel)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300):
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgecomp", *args], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)


def assert_one_line_error(result, code: int, *fragments: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def key_tree(value):
    """The nested key structure of a JSON value (lists by their first element)."""
    if isinstance(value, dict):
        return {key: key_tree(item) for key, item in value.items()}
    return None
