"""The public API (docs/api.md): typed keyword arguments, result types, a model in memory, the CLI over it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import REPO
from typer.testing import CliRunner

import edgecomp
from edgecomp.compression.prune import prune_to
from edgecomp.core.errors import RecipeError, UserInputError
from edgecomp.core.models import Size, build_model, measure_size
from edgecomp.core.recipe import ModelSection, PruneSection
from edgecomp.deploy.export import ort_logits, ort_session

DOC = REPO / "docs" / "api.md"
EXAMPLE_MARK = "<!-- example: prune-finetune-export"


def doc_example() -> str:
    """The python block right after the example mark in docs/api.md: the test runs what the doc shows."""
    text = DOC.read_text()
    after = text[text.index(EXAMPLE_MARK):]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


def tiny_model() -> tuple[nn.Module, torch.Tensor]:
    model = build_model(ModelSection(arch="cifar_resnet8", num_classes=10, in_channels=1, input_size=28))
    return model, torch.randn(1, 1, 28, 28)


def widths(model: nn.Module) -> dict[str, int]:
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


# ---------------------------------------------------------------- the face


def test_public_names_and_typed_signatures():
    for name in ("Recipe", "load_recipe", "CompressResult", "ExportResult", "BenchResult", "PruneResult",
                 "LayerPlan", "Size", "UserInputError"):
        assert getattr(edgecomp, name) is not None and name in edgecomp.__all__
    assert edgecomp.Recipe is __import__("edgecomp.core.recipe", fromlist=["Recipe"]).Recipe
    for function in (edgecomp.compress, edgecomp.export, edgecomp.bench, edgecomp.prune):
        kinds = {p.kind for p in inspect.signature(function).parameters.values()}
        assert inspect.Parameter.VAR_KEYWORD not in kinds and inspect.Parameter.VAR_POSITIONAL not in kinds
    assert "format" in inspect.signature(edgecomp.export).parameters
    with pytest.raises(AttributeError):
        edgecomp.no_such_name  # noqa: B018


def test_api_doc_lists_every_public_function():
    functions = {name for name in edgecomp.__all__ if name[0].islower() and callable(getattr(edgecomp, name))
                 and name != "load_recipe"}  # listed with the types, below the table
    table = set(re.findall(r"^\| `(\w+)\(", DOC.read_text(), re.M))
    assert functions == table, f"docs/api.md's table and edgecomp.__all__ differ: {functions ^ table}"


# ---------------------------------------------------------------- prune: a model in memory


def test_prune_uses_the_compress_planner_and_leaves_the_model_alone():
    model, example = tiny_model()
    dense_widths = widths(model)
    result = edgecomp.prune(model, example, target_macs=0.5, round_to=4)
    assert widths(model) == dense_widths  # the caller's model is unchanged
    reference = build_model(ModelSection(arch="cifar_resnet8", num_classes=10, in_channels=1, input_size=28))
    reference.load_state_dict(model.state_dict())
    dense = measure_size(reference, example)
    prune_to(reference, example, PruneSection(target={"macs": 0.5}, round_to=4), Size(int(dense.macs * 0.5), 0), 10)
    assert widths(result.model) == widths(reference)  # the same plan compress would make
    assert result.before == dense and result.after == measure_size(result.model, example)
    assert result.after.macs <= 0.5 * dense.macs and result.macs_ratio == result.after.macs / dense.macs


def test_prune_plan_lists_every_layer_before_and_after():
    model, example = tiny_model()
    result = edgecomp.prune(model, example, target_params=0.6, round_to=4, ignored_layers=["conv1"])
    by_name = {layer.name: layer for layer in result.layers}
    pruned_widths = widths(result.model)
    for name, width in widths(model).items():
        assert (by_name[name].out_before, by_name[name].out_after) == (width, pruned_widths[name])
    assert by_name["conv1"].out_after == by_name["conv1"].out_before  # ignored
    assert result.changed_layers and all(layer.out_after % 4 == 0 for layer in result.changed_layers
                                         if layer.kind == "Conv2d" and layer.out_after != layer.out_before)
    plan = result.plan()
    assert plan["params"] == {"before": result.before.params, "after": result.after.params}
    assert result.after.params <= 0.6 * result.before.params
    assert len(plan["layers"]) == len(result.changed_layers)


@pytest.mark.parametrize("arguments, message", [
    ({}, "give exactly one of target_macs, target_params or target_latency"),
    ({"target_macs": 0.5, "target_params": 0.5}, "give exactly one of target_macs, target_params or target_latency"),
    ({"target_macs": 1.5}, "target_macs: input should be less than 1"),
    ({"target_macs": 0.5, "importance": "magnitude"}, "importance: input should be"),
    ({"target_macs": 0.5, "round_to": 0}, "round_to: input should be greater than or equal to 1"),
    ({"target_macs": 0.5, "ignored_layers": ["layer9"]}, "ignored_layers: the model has no module named 'layer9'"),
])
def test_prune_refuses_bad_arguments_in_one_line(arguments, message):
    model, example = tiny_model()
    with pytest.raises(UserInputError, match=message) as info:
        edgecomp.prune(model, example, **arguments)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- export: format rows


def test_export_of_a_model_in_memory_is_verified(tmp_path):
    model, example = tiny_model()
    images = torch.randn(16, 1, 28, 28)
    result = edgecomp.export(model=model.eval(), example_inputs=example, verify_inputs=images,
                             out=tmp_path / "m.onnx", format="onnx")
    assert result.onnx_path.is_file() and result.info_path == tmp_path / "m.export.json"
    assert result.fidelity["passed"] and result.fidelity["images"] == 16
    with torch.no_grad():
        expected = model(images).numpy()
    np.testing.assert_allclose(ort_logits(ort_session(result.onnx_path), images.numpy()), expected, atol=1e-4)


@pytest.mark.parametrize("arguments, message", [
    ({"format": "tflite"}, "format: must be one of 'onnx', 'onnx_int8', 'engine'"),
    ({"format": "engine"}, "format: 'engine' needs a target device with TensorRT"),
    ({"format": "onnx_int8"}, "format: 'onnx_int8' needs calibration images"),
    ({"dla_core": 0}, "dla_core: only a run's onnx_int8 / engine export takes this"),
    ({"out": "m.txt"}, "out: m.txt must end in .onnx"),
    ({"run": "runs/x"}, "give run= .* or model= .*, not both"),
])
def test_export_refuses_what_its_row_does_not_take(tmp_path, monkeypatch, arguments, message):
    monkeypatch.chdir(tmp_path)
    model, example = tiny_model()
    with pytest.raises(UserInputError, match=message):
        edgecomp.export(**{"model": model, "example_inputs": example, "out": "m.onnx", **arguments})
    assert not list(tmp_path.iterdir())  # nothing written


def test_export_of_a_run_checks_its_row_before_reading_the_run(tmp_path):
    with pytest.raises(UserInputError, match="precision: the onnx_int8 row is int8"):
        edgecomp.export(run=tmp_path / "missing", format="onnx_int8", precision="fp16")
    with pytest.raises(UserInputError, match="out=, example_inputs= and verify_inputs= are for model="):
        edgecomp.export(run=tmp_path / "missing", out=tmp_path / "m.onnx")
    with pytest.raises(UserInputError, match=r"--run: .*missing/recipe.yaml does not exist"):
        edgecomp.export(run=tmp_path / "missing", format="engine")


# ---------------------------------------------------------------- compress: overrides are --set


@pytest.mark.parametrize("as_recipe", [False, True], ids=["name", "Recipe"])
def test_compress_overrides_are_what_set_takes(tmp_path, as_recipe):
    recipe = edgecomp.load_recipe("quickstart.yaml") if as_recipe else "quickstart.yaml"
    with pytest.raises(RecipeError, match=r"prune.steps: must be >= 1 \(got 0\)"):
        edgecomp.compress(recipe, overrides=["prune.steps=0"], out=tmp_path / "run")
    with pytest.raises(RecipeError, match="augment.schedule.min: unknown key for kind constant"):
        edgecomp.compress(recipe, overrides=["augment.schedule.min=3"], out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- the CLI is a layer over the API


def test_cli_commands_call_the_api(monkeypatch, tmp_path):
    from edgecomp.cli import app

    calls = {}

    def record(name):
        def call(*args, **kwargs):
            calls[name] = (args, kwargs)
            raise UserInputError(f"{name} reached")  # stop here: the CLI prints it and exits 2
        return call

    for name in ("compress", "export", "bench"):
        monkeypatch.setattr(edgecomp, name, record(name))
    runner = CliRunner()
    assert runner.invoke(app, ["compress", "--recipe", "r.yaml", "--set", "prune.steps=3"]).exit_code == 2
    assert calls["compress"] == (("r.yaml",), {"overrides": ["prune.steps=3"], "out": None, "resume": False})
    assert runner.invoke(app, ["export", "--run", str(tmp_path), "--trt", "--precision", "fp16"]).exit_code == 2
    assert calls["export"][1]["format"] == "engine" and calls["export"][1]["precision"] == "fp16"
    runner.invoke(app, ["export", "--run", str(tmp_path), "--onnx"])
    assert calls["export"][1]["format"] == "onnx"
    assert runner.invoke(app, ["bench", "--model", "m.onnx", "--device", "host"]).exit_code == 2
    assert calls["bench"][1]["model"] == Path("m.onnx") and calls["bench"][1]["device"] == "host"


# ---------------------------------------------------------------- the doc's example, as written


@pytest.mark.e2e
def test_the_docs_example_prunes_finetunes_and_exports(tmp_path, monkeypatch, fashion_root):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(doc_example(), str(DOC), "exec"), namespace)  # the doc's own code, nothing added
    result, exported, model = namespace["result"], namespace["exported"], namespace["model"]
    assert result.after.macs <= 0.5 * result.before.macs
    assert model.conv1.out_channels == 64 and result.model.conv1.out_channels < 64
    assert (tmp_path / "resnet18_pruned.onnx").is_file() and exported.fidelity["passed"]
    assert torch.isfinite(namespace["loss"]) and exported.fidelity["images"] == 64
