"""edgecomp export: ONNX fidelity, BatchNorm folding, INT8 Q/DQ, engine keys, TensorRT builder branches.

Every ONNX check runs the real exporter and onnxruntime (CPU) on real Fashion-MNIST images.
The TensorRT tests inject a FAKE `tensorrt` module that records the builder calls of the one engine
builder (deploy/target/build.py): they check which API calls it makes for TensorRT 8.x, 10.x and 11;
they are not real TensorRT runs (TensorRT cannot be installed on this host). The engine path tests
(store, reuse, host and device command lines) use recording runners, not devices.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from conftest import run_cli, tiny_recipe

import edgecomp
from edgecomp.compression.prune import Size, measure_size, prune_to
from edgecomp.core.data import InputSpec, TensorBatches, load_data
from edgecomp.core.errors import (
    DeviceError,
    EngineMismatchError,
    ExportError,
    ExportInputError,
    RemoteError,
    UserInputError,
)
from edgecomp.core.models import build_model, load_model_file, model_payload
from edgecomp.core.precision import Precision
from edgecomp.core.recipe import DataSection, ExportSection, ModelSection, PruneSection, aux_section, dump_recipe
from edgecomp.core.rundir import RunDir, save_tensors, sha256, write_text
from edgecomp.deploy import bench as deploy_bench
from edgecomp.deploy import builder, delivery, engines
from edgecomp.deploy import export as exporter
from edgecomp.deploy.devices import SshTarget, resolve_device
from edgecomp.deploy.export import (
    check_fidelity,
    conv_bn_pairs,
    export_onnx,
    fold_batchnorm,
    ort_session,
    resolve_options,
    take_images,
    target_opset,
)
from edgecomp.deploy.runners import HostRunner, Runner, SshRunner
from edgecomp.deploy.target import build as target_build

ATOL = 1e-4


# ---------------------------------------------------------------- helpers and fixtures


def real_images(channels: int, size: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST validation images as a model with this input sees them in evaluation."""
    cfg = ModelSection(arch="cifar_resnet8", in_channels=channels, input_size=size, num_classes=10)
    data = load_data(DataSection(val_subset=count, train_subset=8, test_subset=8), cfg)
    return take_images(data.val, InputSpec.create(cfg, data.mean, data.std, torch.device("cpu")), count)


@pytest.fixture(scope="session")
def rgb32(fashion_root) -> torch.Tensor:
    return real_images(3, 32, 8)[0]


@pytest.fixture(scope="session")
def gray28(fashion_root) -> tuple[torch.Tensor, torch.Tensor]:
    return real_images(1, 28, 64)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fresh BNs fold to the identity; trained-looking statistics make folding mean something."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


@torch.no_grad()
def assert_onnx_matches(path: Path, model: nn.Module, images: torch.Tensor, batches=(1, 8)) -> None:
    """export → reload → compare: onnxruntime against PyTorch at each batch size (dynamic batch)."""
    session = ort_session(Path(path))
    model.eval()
    for batch in batches:
        ours = session.run(None, {"input": images[:batch].numpy()})[0]
        theirs = model(images[:batch]).numpy()
        assert ours.shape == theirs.shape == (batch, theirs.shape[1])
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=ATOL)
        assert (ours.argmax(1) == theirs.argmax(1)).all()


def pruned(model: nn.Module, example: torch.Tensor, monkeypatch, keep: float = 0.5) -> nn.Module:
    dense = measure_size(model, example)
    prune_to(model, example, PruneSection(target={"macs": keep}, round_to=8), Size(int(dense.macs * keep), 0), 10)
    return model.eval()


def minimal_run(root: Path, **sections) -> Path:
    """A run directory (recipe.yaml + model.pt of an untrained ResNet-8) without running compress."""
    recipe = tiny_recipe(**sections)
    root.mkdir(parents=True, exist_ok=True)
    write_text(root / "recipe.yaml", dump_recipe(recipe))
    save_tensors(root / "model.pt", model_payload(build_model(recipe.model), recipe.model))
    return root


def fit(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epochs: int, lr: float) -> nn.Module:
    """Plain SGD on preprocessed images: enough for a model whose predictions mean something."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(images), generator=generator).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(images[index]), labels[index]).backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, fashion_root) -> Path:
    """The quickstart's architecture and data (ResNet-20, 1x28x28 Fashion-MNIST), trained briefly, pruned to
    half its MACs and fine-tuned, written as a run directory (recipe.yaml, model.pt, metrics.jsonl)."""
    root = tmp_path_factory.mktemp("export") / "run"
    recipe = tiny_recipe(name="export", model={"arch": "cifar_resnet20"},
                         data={"train_subset": 2048, "val_subset": 512, "test_subset": 32, "batch_size": 128})
    data = load_data(recipe.data, recipe.model)
    spec = InputSpec.create(recipe.model, data.mean, data.std, torch.device("cpu"))
    images, labels = take_images(data.train, spec, 2048)
    torch.manual_seed(0)
    model = fit(build_model(recipe.model), images, labels, epochs=2, lr=0.05)
    dense = measure_size(model, spec.example())
    size = prune_to(model, spec.example(), recipe.prune, Size(int(dense.macs * 0.5), 0), 10)
    model = fit(model, images, labels, epochs=1, lr=0.01)
    root.mkdir(parents=True)
    write_text(root / "recipe.yaml", dump_recipe(recipe))
    save_tensors(root / "model.pt", model_payload(model, recipe.model))
    RunDir(root).write_rows([{"step": 0, "macs": dense.macs}, {"step": 1, "macs": size.macs}])
    return root


@pytest.fixture(scope="session")
def int8_export(trained_run):
    """One int8 export of the trained run (fp32 ONNX + calib.npy + Q/DQ ONNX) through the public API."""
    return edgecomp.export(run=trained_run, precision="int8")


@pytest.fixture(scope="session")
def quick_int8_export(tmp_path_factory, fashion_root):
    """An int8 export of an untrained ResNet-8 on 64 validation and 64 calibration images: seconds, not minutes."""
    run = minimal_run(tmp_path_factory.mktemp("quick") / "run", data={"val_subset": 64, "train_subset": 64},
                      export={"calib_images": 64})
    return edgecomp.export(run=run, precision="int8")


# ---------------------------------------------------------------- export → reload → compare


ARCHS = ["resnet18", "mobilenet_v2", "efficientnet_b0", "shufflenet_v2_x1_0"]


@pytest.mark.parametrize("variant", ["dense", "pruned"])
@pytest.mark.parametrize("arch", ARCHS)
def test_export_reload_compare(arch, variant, rgb32, tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = randomize_bn(build_model(ModelSection(arch=arch, input_size=32, num_classes=10)))
    if variant == "pruned":
        model = pruned(model, torch.zeros(1, 3, 32, 32), monkeypatch)
    proto, folded = export_onnx(model, rgb32[:2], opset=17)
    onnx.save(proto, tmp_path / "model.onnx")
    reloaded = onnx.load(tmp_path / "model.onnx")
    assert reloaded.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert folded and "BatchNormalization" not in {node.op_type for node in reloaded.graph.node}
    assert_onnx_matches(tmp_path / "model.onnx", model, rgb32)


def test_rep_folded_model_exports_exactly(gray28, tmp_path):
    if importlib.util.find_spec("edgecomp.compression.auxiliary") is None:
        pytest.skip("auxiliary.py not built")
    from edgecomp.compression.auxiliary import attach, detach

    torch.manual_seed(0)
    model = randomize_bn(build_model(ModelSection(arch="cifar_resnet8", in_channels=1, input_size=28)))
    branched = attach(model, aux_section(kind="rep"), torch.zeros(1, 1, 28, 28))
    with torch.no_grad():
        for param in branched.branch_parameters():  # trained-looking branches: the fold has work to do
            param.normal_(0, 0.2)
        model.train()
        for _ in range(3):
            model(gray28[0][:16])  # BN running statistics of the merged convs
    model.eval()
    expected = model(gray28[0][:8]).detach()
    plain, record = detach(branched)
    assert record.kind == "rep" and record.branches > 0
    proto, _ = export_onnx(plain, gray28[0][:2])
    onnx.save(proto, tmp_path / "rep.onnx")
    convs = sum(isinstance(m, nn.Conv2d) for m in plain.modules())
    assert sum(node.op_type == "Conv" for node in proto.graph.node) == convs  # no trace of the branches
    ours = ort_session(tmp_path / "rep.onnx").run(None, {"input": gray28[0][:8].numpy()})[0]
    np.testing.assert_allclose(ours, expected.numpy(), rtol=0, atol=ATOL)


# ---------------------------------------------------------------- BatchNorm folding


class NamedPairs(nn.Module):
    def __init__(self, bn_after_relu: bool = False):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.pool, self.fc, self.bn_after_relu = nn.AvgPool2d(2), nn.Linear(8 * 14 * 14, 10), bn_after_relu

    def forward(self, x):
        x = self.bn1(torch.relu(self.conv1(x))) if self.bn_after_relu else self.bn1(self.conv1(x))
        return self.fc(self.block(self.pool(x)).flatten(1))


def test_bn_folding_is_exact(gray28):
    model = randomize_bn(NamedPairs())
    images = gray28[0][:16]
    expected = model(images).detach()
    folded = fold_batchnorm(model, images[:2])
    assert folded == ["conv1+bn1", "block.0+block.1"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(model(images).detach(), expected, rtol=0, atol=1e-5)


def test_bn_folding_finds_torchvision_pairs():
    pairs = conv_bn_pairs(build_model(ModelSection(arch="resnet18", input_size=32)))
    assert len(pairs) == 20 and ("layer2.0.downsample.0", "layer2.0.downsample.1") in pairs


def test_bn_folding_refuses_a_wrong_pair(gray28):
    model = randomize_bn(NamedPairs(bn_after_relu=True))  # bn1 is named like conv1's partner but is not
    with pytest.raises(ExportError, match="--no-fold-bn"):
        fold_batchnorm(model, gray28[0][:4])


# ---------------------------------------------------------------- the fidelity gate


def test_fidelity_gate_fails_on_a_corrupted_model(gray28, tmp_path):
    images = gray28[0]
    model = randomize_bn(build_model(ModelSection(arch="cifar_resnet8", in_channels=1, input_size=28)))
    proto, _ = export_onnx(model, images[:2])
    assert check_fidelity(proto, model, images, ATOL).passed
    weight = max(proto.graph.initializer, key=lambda t: len(onnx.numpy_helper.to_array(t).ravel()))
    array = onnx.numpy_helper.to_array(weight).copy()
    array.flat[::7] += 0.05  # a small corruption, e.g. a bad conversion of one layer
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    onnx.save(proto, tmp_path / "bad.onnx")
    with pytest.raises(ExportError, match=r"ONNX does not reproduce PyTorch: max \|logit difference\|"):
        check_fidelity(tmp_path / "bad.onnx", model, images, ATOL)


@pytest.mark.e2e
def test_failed_fidelity_writes_no_model(tmp_path, monkeypatch, fashion_root):
    run = minimal_run(tmp_path / "run", data={"val_subset": 32, "train_subset": 32, "test_subset": 8})

    def corrupt(proto):  # the simplifier "breaks" the graph: the gate must catch it
        weight = proto.graph.initializer[0]
        array = onnx.numpy_helper.to_array(weight) + 1.0
        weight.CopyFrom(onnx.numpy_helper.from_array(array.astype(np.float32), weight.name))
        return proto

    monkeypatch.setattr(exporter, "simplify", corrupt)
    with pytest.raises(ExportError, match="nothing was written"):
        edgecomp.export(run=run)
    assert not (run / "model.onnx").exists() and not (run / "export.json").exists()


def test_fewer_validation_images_are_recorded():
    spec = InputSpec.create(ModelSection(arch="cifar_resnet8", in_channels=1, input_size=28), (0.5,), (0.5,),
                            torch.device("cpu"))
    source = TensorBatches(torch.zeros(20, 1, 28, 28, dtype=torch.uint8), torch.zeros(20, dtype=torch.long), 8)
    images, labels = take_images(source, spec, 512)
    assert images.shape == (20, 1, 28, 28) and len(labels) == 20


# ---------------------------------------------------------------- int8 and export.json (one trained run)


@pytest.mark.slow  # trains the quickstart's ResNet-20 on 2048 images (~40 s of CPU on 2 cores, more when shared)
def test_int8_qdq_within_one_point_of_fp32(int8_export):
    int8 = int8_export.info["int8"]
    assert int8["images"] == 512 and int8["calib_images"] == 512
    assert int8["top1_fp32"] > 0.6, int8  # a model whose predictions mean something
    assert abs(int8["top1_fp32"] - int8["top1_int8"]) <= 0.01, int8


@pytest.mark.e2e
def test_int8_qdq_model_is_symmetric_qdq(quick_int8_export):
    model = onnx.load(quick_int8_export.int8_path)
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    zero_points = [t for t in model.graph.initializer if t.name.endswith("_zero_point")]
    assert zero_points and all(not onnx.numpy_helper.to_array(t).any() for t in zero_points)  # symmetric
    assert all(onnx.numpy_helper.to_array(t).dtype == np.int8 for t in zero_points)
    calib = np.load(quick_int8_export.run_dir / "calib.npy")
    assert calib.dtype == np.float32 and calib.shape == (64, 1, 28, 28)
    assert quick_int8_export.info["int8"]["calib_images"] == 64


@pytest.mark.e2e
def test_export_json_fields(quick_int8_export):
    result = quick_int8_export
    info = json.loads(result.info_path.read_text())
    assert info == result.info
    assert info["format"] == "edgecomp-export/1" and info["precision"] == "int8"
    assert info["onnx"]["opset"] == 17
    assert info["onnx"]["inputs"] == [{"name": "input", "shape": ["batch", 1, 28, 28]}]
    assert info["onnx"]["outputs"] == [{"name": "logits", "shape": ["batch", 10]}]
    fidelity = info["fidelity"]
    assert fidelity["images"] == 64  # fewer than the 512 asked for: the count is what was compared
    assert fidelity["passed"] and fidelity["top1_agreement"] == 1.0
    assert fidelity["max_abs_diff"] <= ATOL and 1 in fidelity["batch_sizes"]
    model = load_model_file(result.run_dir / "model.pt")
    assert info["model"]["macs"] == measure_size(model, torch.zeros(1, 1, 28, 28)).macs
    assert info["model"]["params"] == sum(p.numel() for p in model.parameters())
    assert info["aux"] == "none" and info["fold_bn"]["enabled"] and info["fold_bn"]["folded"]
    assert {"images", "top1_fp32", "top1_int8", "drop_points", "top1_agreement"} <= set(info["int8"])
    for name, size in info["files"].items():
        assert (result.run_dir / name).stat().st_size == size
    assert set(info["files"]) == {"model.onnx", "model.int8.onnx", "calib.npy", "eval.npz"}
    assert info["engine"] is None and info["dense"] is None  # minimal_run has no dense step
    assert info["int8"]["source_onnx_sha256"] == info["onnx"]["sha256"] == sha256(result.onnx_path)
    assert info["eval"] == {"file": "eval.npz", "split": "val", "images": 64, "preprocessing": "as in evaluation"}
    assert info["engine_request"] == {"onnx": "model.int8.onnx", "precision": "int8", "inputs": {"input": [1, 28, 28]},
                                      "max_batch": 8, "workspace_mib": 1024, "dla_core": None}


def test_aux_summary_reads_metrics_rows():
    rows = [{"step": 0}, {"step": 1, "aux": {"kind": "rep", "branches": 7, "branch_params": 900}}, {"step": 2}]
    assert exporter.aux_summary(rows) == [{"step": 1, "kind": "rep", "branches": 7, "branch_params": 900}]
    assert exporter.aux_summary([{"step": 0}, {"step": 1, "aux": None}]) == "none"


# ---------------------------------------------------------------- arguments and the CLI


def options(**given):
    trt, precision = given.pop("trt", False), given.pop("precision", None)
    onnx_only = given.pop("onnx_only", False)
    return resolve_options(ExportSection(), trt=trt, precision=precision, onnx_only=onnx_only, **given)


@pytest.mark.parametrize("given, message", [
    ({"precision": "fp16"}, "--precision fp16: fp16 is a TensorRT build setting"),
    ({"precision": "fp8"}, "--precision: must be fp32, fp16 or int8"),
    ({"calib_images": 100, "precision": "fp32"}, "--calib-images: used only by the onnx_int8 (--precision int8) export"),
    ({"accept_new_host_key": True}, "--accept-new-host-key: used only by the engine (--trt) export"),
    ({"max_batch": 4}, "--max-batch: used only by the engine (--trt) export"),
    ({"trt": True, "precision": "fp32", "dla_core": 0}, "--dla-core: the DLA runs fp16 or int8 only"),
    ({"opset": 9}, "--opset: must be 13..20"),
    ({"onnx_only": True, "trt": True}, "--onnx: writes model.onnx alone"),
    ({"onnx_only": True, "precision": "int8"}, "--precision int8: --onnx writes the fp32 model.onnx alone"),
])
def test_bad_arguments_are_refused(given, message):
    with pytest.raises(ExportInputError, match="^export error: " + message.replace("(", r"\(").replace(")", r"\)")):
        options(**given)


def test_arguments_resolve_over_the_recipe():
    chosen = options(trt=True, precision="int8", max_batch=4, calib_images=64, dla_core=1)
    assert [f.name for f in chosen.formats] == ["onnx", "onnx_int8", "engine"]
    assert (chosen.max_batch, chosen.calib_images, chosen.dla_core, chosen.opset) == (4, 64, 1, None)
    assert chosen.precision is Precision.int8
    recipe_int8 = resolve_options(ExportSection(precision="int8"), trt=False, precision=None)
    assert [f.name for f in recipe_int8.formats] == ["onnx", "onnx_int8"]
    only = resolve_options(ExportSection(precision="int8"), trt=False, precision=None, onnx_only=True)
    assert [f.name for f in only.formats] == ["onnx"]  # --onnx: the recipe's int8 does not add the Q/DQ model


def test_one_precision_default():
    """The recipe, export and bench take their default from edgecomp.core.precision; build.py has none."""
    from edgecomp.core.precision import DEFAULT_PRECISION

    assert ExportSection().precision is DEFAULT_PRECISION
    assert options(trt=True).precision is DEFAULT_PRECISION
    assert deploy_bench.Job(model=Path("m.onnx"), out_dir=Path(".")).precision is DEFAULT_PRECISION
    build_parser = target_build.parser()
    precision = next(a for a in build_parser._actions if a.dest == "precision")
    assert precision.required and precision.default is None
    assert list(precision.choices) == [p.value for p in Precision]


def test_opset_follows_the_target_tensorrt():
    assert exporter.default_opset(None) == 17
    assert exporter.default_opset("8.5.2.2") == exporter.default_opset("8.6.2") == 17
    assert exporter.default_opset("10.3.0.30") == 19
    assert exporter.default_opset("8.2.1") == 13
    plain = options()
    assert target_opset(plain, []) == 17
    assert target_opset(plain, ["10.3.0"]) == 19
    assert target_opset(plain, ["8.5", "10.3"], max_opset=17) == 17
    assert target_opset(options(opset=13), ["10.3.0"]) == 13


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_cli_trt_without_tensorrt_exits_2_with_the_device_commands(tmp_path):
    """The host's facts come from info.py through the HostRunner: no TensorRT, refused before any work."""
    run = minimal_run(tmp_path / "run")
    result = run_cli("export", "--run", str(run), "--trt", "--precision", "fp16")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "--trt: host has no TensorRT" in lines[0]
    assert f"edgecomp export --run {run} --trt --precision fp16 --device ssh://user@jetson" in lines[0]
    assert ("/usr/src/tensorrt/bin/trtexec --onnx=model.onnx --saveEngine=model.engine --skipInference --fp16 "
            "--memPoolSize=workspace:1024M --minShapes=input:1x1x28x28 --optShapes=input:8x1x28x28 "
            "--maxShapes=input:8x1x28x28") in lines[0]
    assert not (run / "model.onnx").exists()  # refused before any work


def test_device_without_trt_picks_the_opset_of_its_tensorrt(tmp_path, fashion_root):
    """`export --device NAME` without --trt, as the usage line offers: the profile's TensorRT (the Nano's 8.2)
    chooses the opset; host and a bare ssh:// URL keep 17; nothing connects."""
    run = minimal_run(tmp_path / "run", data={"val_subset": 16, "train_subset": 16, "test_subset": 8})
    assert options(device="jetson-nano").device == "jetson-nano"  # accepted: no refusal without --trt
    result = run_cli("export", "--run", str(run), "--device", "jetson-nano")
    assert result.returncode == 0, result.stderr
    assert json.loads((run / "export.json").read_text())["onnx"]["opset"] == 13
    assert delivery._profile_tensorrt("host") == ([], None)
    assert delivery._profile_tensorrt("ssh://me@jetson") == ([], None)
    assert delivery._profile_tensorrt(None) == ([], None)


def test_a_plain_export_keeps_or_removes_the_int8_artefacts(tmp_path, fashion_root):
    """No artefact without a record: after an int8 export, a plain export of the same model keeps the INT8
    record (model.int8.onnx was quantized from this very model.onnx); after the model changed, model.int8.onnx
    and calib.npy are removed with the record."""
    run = minimal_run(tmp_path / "run", data={"val_subset": 16, "train_subset": 16, "test_subset": 8},
                      export={"calib_images": 16})
    first = edgecomp.export(run=run, precision="int8")
    again = edgecomp.export(run=run)
    kept = json.loads((run / "export.json").read_text())["int8"]
    assert kept == {**first.info["int8"], "kept_from_export": first.info["created"]}
    assert again.int8_path == run / "model.int8.onnx" and {"model.int8.onnx", "calib.npy"} <= set(again.info["files"])
    recipe = tiny_recipe()
    torch.manual_seed(1)  # other weights: another model.onnx
    save_tensors(run / "model.pt", model_payload(build_model(recipe.model), recipe.model))
    changed = edgecomp.export(run=run)
    assert changed.info["int8"] is None and changed.int8_path is None
    assert not (run / "model.int8.onnx").exists() and not (run / "calib.npy").exists()
    assert set(changed.info["files"]) == {"model.onnx", "eval.npz"}


def test_cli_bad_argument_exits_2(tmp_path):
    result = run_cli("export", "--run", str(minimal_run(tmp_path / "run")), "--max-batch", "4")
    assert result.returncode == 2 and result.stderr.strip().startswith("export error: --max-batch")


# ---------------------------------------------------------------- engine keys


SHAPES = engines.shapes_for("input", (1, 28, 28), 8)


def key(**change):
    fields = {"device": "NVIDIA Jetson Orin Nano", "trt_version": "10.3.0.30", "precision": "fp16",
              "shapes": SHAPES, "onnx_sha256": "ab" * 32, **change}
    return engines.engine_key(**fields)


def test_engine_key_names_its_fields():
    wanted = key()
    assert wanted.fields()["shapes"] == {"input": "1x1x28x28/8x1x28x28/8x1x28x28"}
    assert wanted.name.startswith("nvidia-jetson-orin-nano_trt10.3.0.30_fp16_input-1x1x28x28-8x1x28x28")
    assert len({key().name, key(trt_version="8.6.2").name, key(precision="int8").name,
                key(shapes=engines.shapes_for("input", (1, 28, 28), 1)).name, key(onnx_sha256="cd" * 32).name,
                key(dla_core=0).name}) == 6


def test_engine_store_find_and_refuse_a_mismatch(tmp_path):
    wanted = key()
    assert engines.find_engine(tmp_path, wanted) is None
    path = engines.store_engine(tmp_path, wanted, b"plan", {"flags": ["FP16"]})
    assert engines.find_engine(tmp_path, wanted) == path
    assert engines.find_engine(tmp_path, key(trt_version="8.6.2")) is None  # another key: not this file
    with pytest.raises(EngineMismatchError, match=r"trt_version '10.3.0.30' \(needed '8.6.2'\)"):
        engines.check_engine(path, key(trt_version="8.6.2"))
    record = json.loads(path.with_suffix(".json").read_text())
    record["key"]["device"] = "NVIDIA Jetson AGX Orin"  # a key file that disagrees with its name
    path.with_suffix(".json").write_text(json.dumps(record))
    with pytest.raises(EngineMismatchError, match="device 'NVIDIA Jetson AGX Orin'"):
        engines.find_engine(tmp_path, wanted)
    path.with_suffix(".json").unlink()
    with pytest.raises(EngineMismatchError, match="no key file"):
        engines.find_engine(tmp_path, wanted)


# ---------------------------------------------------------------- build.py, against a fake TensorRT module


def fake_tensorrt(version: str, *, dla_cores: int = 0, plan=b"serialized-plan", parse_ok: bool = True,
                  fp16_flag: bool = True) -> types.ModuleType:
    """A FAKE `tensorrt` module: records every builder call in `.log`. Not TensorRT."""
    log: list[tuple] = []

    class Logger:
        WARNING = 2

        def __init__(self, level):
            log.append(("logger", level))

    class Network:
        num_inputs = 1

        def get_input(self, index):
            return SimpleNamespace(name="input", shape=(-1, 1, 28, 28))

    class OnnxParser:
        num_errors = 0 if parse_ok else 1

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            log.append(("parse", Path(path).name))
            return parse_ok

        def get_error(self, index):
            return "In node 3 (Foo): UNSUPPORTED_NODE"

    class Profile:
        def set_shape(self, name, smallest, optimal, largest):
            log.append(("set_shape", name, tuple(smallest), tuple(optimal), tuple(largest)))

    class TimingCache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return b"cache+" + self.data

    class Config:
        default_device_type, DLA_core, cache = "GPU", -1, None

        def set_memory_pool_limit(self, pool, size):
            log.append(("memory_pool", pool, size))

        def add_optimization_profile(self, profile):
            log.append(("add_profile",))

        def set_flag(self, flag):
            log.append(("flag", flag))

        def create_timing_cache(self, data):
            log.append(("timing_cache", bytes(data)))
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Builder:
        num_DLA_cores = dla_cores
        platform_has_fast_fp16 = platform_has_fast_int8 = True

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            log.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            module.config = Config()
            return module.config

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            log.append(("build",))
            return plan

    module = types.ModuleType("tensorrt")
    module.__version__, module.log = version, log
    module.Logger, module.Builder, module.OnnxParser = Logger, Builder, OnnxParser
    module.NetworkDefinitionCreationFlag = SimpleNamespace(EXPLICIT_BATCH=0)
    module.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    flags = {"INT8": "INT8", "GPU_FALLBACK": "GPU_FALLBACK", **({"FP16": "FP16"} if fp16_flag else {})}
    module.BuilderFlag = SimpleNamespace(**flags)
    module.DeviceType = SimpleNamespace(DLA="DLA", GPU="GPU")
    return module


def build(trt, tmp_path, monkeypatch, *extra: str, precision: str = "fp32") -> dict:
    """build.py's API path with the fake module, from its own command line."""
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    (tmp_path / "model.onnx").write_bytes(b"not-parsed-by-the-fake")
    args = target_build.parser().parse_args(
        ["--onnx", str(tmp_path / "model.onnx"), "--engine", str(tmp_path / "model.engine"), "--precision",
         precision, "--batch", "8", "--max-batch", "8", *extra])
    return target_build.run(args)


@pytest.mark.parametrize("version, flags", [("8.5.2.2", 1), ("8.6.2", 1), ("10.3.0.30", 0)])
def test_fake_trt_explicit_batch_workspace_profile(version, flags, tmp_path, monkeypatch):
    """Fake TensorRT (not a real run): 8.x sets EXPLICIT_BATCH, 10.x passes 0; workspace and profile."""
    trt = fake_tensorrt(version)
    result = build(trt, tmp_path, monkeypatch, "--workspace-mb", "256")
    assert ("create_network", flags) in trt.log
    assert ("memory_pool", "WORKSPACE", 256 << 20) in trt.log
    assert ("set_shape", "input", (1, 1, 28, 28), (8, 1, 28, 28), (8, 1, 28, 28)) in trt.log
    assert (tmp_path / "model.engine").read_bytes() == b"serialized-plan" and result["tensorrt"] == version
    assert not any(event[0] == "flag" for event in trt.log)


@pytest.mark.parametrize("version", ["8.6.2", "10.3.0.30"])
def test_fake_trt_fp16_and_int8_flags(version, tmp_path, monkeypatch):
    """Fake TensorRT (not a real run): FP16; int8 = FP16 + INT8 flags and no calibrator (the Q/DQ scales)."""
    trt = fake_tensorrt(version)
    build(trt, tmp_path, monkeypatch, precision="fp16")
    assert [e for e in trt.log if e[0] == "flag"] == [("flag", "FP16")]
    trt = fake_tensorrt(version)
    build(trt, tmp_path, monkeypatch, precision="int8")
    assert [e for e in trt.log if e[0] == "flag"] == [("flag", "FP16"), ("flag", "INT8")]
    assert not hasattr(trt.config, "int8_calibrator")


def test_fake_trt_11_has_no_precision_flags(tmp_path, monkeypatch):
    """Fake TensorRT 11 (not a real run): FP16/INT8 builder flags are gone; the refusal says so."""
    with pytest.raises(RuntimeError, match="has no FP16 flag"):
        build(fake_tensorrt("11.0.0", fp16_flag=False), tmp_path, monkeypatch, precision="fp16")
    assert build(fake_tensorrt("11.0.0", fp16_flag=False), tmp_path, monkeypatch)["bytes"] > 0


def test_fake_trt_dla_with_gpu_fallback(tmp_path, monkeypatch):
    """Fake TensorRT (not a real run): DLA core and GPU_FALLBACK; a missing core is refused."""
    trt = fake_tensorrt("8.5.2.2", dla_cores=2)
    build(trt, tmp_path, monkeypatch, "--dla", "1", precision="fp16")
    assert trt.config.default_device_type == "DLA" and trt.config.DLA_core == 1
    assert ("flag", "GPU_FALLBACK") in trt.log
    with pytest.raises(RuntimeError, match="--dla 0: this device has 0 DLA cores"):
        build(fake_tensorrt("10.3.0", dla_cores=0), tmp_path, monkeypatch, "--dla", "0", precision="fp16")


def test_fake_trt_failures_are_clear(tmp_path, monkeypatch):
    """Fake TensorRT (not a real run): a None plan and a parser error become one-line errors."""
    with pytest.raises(RuntimeError, match="engine build failed"):
        build(fake_tensorrt("10.3.0", plan=None), tmp_path, monkeypatch)
    with pytest.raises(RuntimeError, match="cannot parse .*UNSUPPORTED_NODE"):
        build(fake_tensorrt("8.6.2", parse_ok=False), tmp_path, monkeypatch)


def test_fake_trt_timing_cache_round_trip(tmp_path, monkeypatch):
    """Fake TensorRT (not a real run): the timing cache is loaded when present and saved after the build."""
    cache = tmp_path / "timing.cache"
    build(fake_tensorrt("10.3.0"), tmp_path, monkeypatch, "--timing-cache", str(cache))
    assert cache.read_bytes() == b"cache+"
    trt = fake_tensorrt("10.3.0")
    build(trt, tmp_path, monkeypatch, "--timing-cache", str(cache))
    assert ("timing_cache", b"cache+") in trt.log


# ---------------------------------------------------------------- the one engine path (recording runners)

INFO = {"model": "NVIDIA Jetson Orin Nano Developer Kit", "tensorrt": "10.3.0.30", "trtexec": None}


class RecordingDevice(Runner):
    """Not a device: answers the target programs with canned JSON and records every call."""

    label = "recording-orin"

    def __init__(self, info=INFO):
        self.info, self.calls, self.staged = info, [], {}

    def stage(self, path, name):
        self.staged[name] = Path(path)
        return name

    def output(self, name):
        return name

    def fetch(self, remote, local):
        if not remote.endswith(".engine"):
            raise RemoteError(f"no {remote}")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(b"plan of " + self.staged[remote.replace(".engine", ".onnx")].name.encode())

    def run(self, program, args, *, tag=None, log_dir=None):
        self.calls.append((program, list(args)))
        answers = {"info": self.info, "build": {"tool": "api", "tensorrt": self.info["tensorrt"], "notes": []},
                   "bench": {"latency_ms": {"p50": 1.0, "p99": 1.5}, "throughput_fps": 1000.0},
                   "eval": {"accuracy": 0.5, "samples": 64}}
        return answers[program]

    def builds(self):
        return [args for program, args in self.calls if program == "build"]


def export_on(device: RecordingDevice, run: Path, monkeypatch, **arguments):
    monkeypatch.setattr(delivery, "make_runner", lambda target, **_: device)
    return edgecomp.export(run=run, format="engine", **arguments)


@pytest.mark.e2e
def test_export_builds_through_build_py_then_reuses(tmp_path, monkeypatch, fashion_root):
    """export --trt: the engine comes from build.py on the runner, is stored under its key, and is reused."""
    run = minimal_run(tmp_path / "run", data={"val_subset": 16, "train_subset": 16, "test_subset": 8})
    device = RecordingDevice()
    first = export_on(device, run, monkeypatch, precision="fp16")
    assert len(device.builds()) == 1
    args = device.builds()[0]
    assert args[args.index("--precision") + 1] == "fp16" and args[args.index("--onnx") + 1] == "model.onnx"
    assert first.engine_path.read_bytes() == b"plan of model.onnx"
    assert first.info["engine"]["key"]["device"] == INFO["model"] and not first.info["engine"]["reused"]
    assert first.info["onnx"]["opset"] == 19  # TensorRT 10.3 on the target
    second = export_on(device, run, monkeypatch, precision="fp16")
    assert len(device.builds()) == 1 and second.info["engine"]["reused"]
    assert second.engine_path == first.engine_path


def bench_on_a_recording_device(run: Path):
    """Bench the run's TensorRT engine on a recording ssh device: (device, job, entry)."""
    device = RecordingDevice()
    options = deploy_bench._options(10, 1, 2, "tensorrt", None)
    job = deploy_bench.plan_job(run, None, options, evaluate=False)
    target = resolve_device("ssh://me@jetson")
    entry = deploy_bench._new_entry(target, job, options)
    deploy_bench.measure(device, target, job, options, entry, None)
    return device, job, entry


@pytest.mark.e2e
def test_bench_reuses_the_engine_export_built(tmp_path, monkeypatch, fashion_root):
    """bench on the device export built for asks the store for the same key: no second build."""
    run = minimal_run(tmp_path / "run", data={"val_subset": 16, "train_subset": 16, "test_subset": 8})
    exported = export_on(RecordingDevice(), run, monkeypatch, precision="fp16")
    device, job, entry = bench_on_a_recording_device(run)
    assert device.builds() == [] and entry["engine"]["reused"]
    assert Path(entry["engine"]["path"]) == exported.engine_path and entry["precision"] == "fp16"
    bench_call = next(args for program, args in device.calls if program == "bench")
    assert bench_call[bench_call.index("--model") + 1] == "model.engine"


def test_bench_reuses_an_engine_exported_for_a_dla_core(tmp_path, monkeypatch, fashion_root):
    """export --dla-core records its request in export.json; bench reads it back, asks the store for the same
    key (DLA core included) and reuses the engine instead of building a GPU one."""
    run = minimal_run(tmp_path / "run", data={"val_subset": 16, "train_subset": 16, "test_subset": 8})
    exporting = RecordingDevice()
    exported = export_on(exporting, run, monkeypatch, precision="fp16", dla_core=1)
    built = exporting.builds()[0]
    assert built[built.index("--dla") + 1] == "1" and exported.info["engine"]["key"]["dla_core"] == 1
    assert exported.info["engine_request"]["dla_core"] == 1
    device, job, entry = bench_on_a_recording_device(run)
    assert device.builds() == [] and entry["engine"]["reused"] and entry["engine"]["key"]["dla_core"] == 1
    assert Path(entry["engine"]["path"]) == exported.engine_path
    target, options = resolve_device("ssh://me@jetson"), deploy_bench._options(10, 1, 2, "tensorrt", None)
    fp32 = deploy_bench._options(10, 1, 2, "tensorrt", "fp32")
    with pytest.raises(UserInputError, match="--precision fp32: export built for DLA core 1"):
        deploy_bench.measure(RecordingDevice(), target, job, fp32, deploy_bench._new_entry(target, job, fp32), None)
    request = deploy_bench.request_for(job, options, job.model)
    assert request == builder.engine_request(onnx=run / "model.onnx", precision=Precision.fp16,
                                             inputs={"input": (1, 28, 28)}, max_batch=8, dla_core=1)


@pytest.mark.e2e
def test_int8_engine_needs_the_qdq_model(tmp_path):
    """INT8 has one meaning: a float model is refused, not calibrated on whatever images are at hand."""
    from bench_helpers import export_onnx as tiny_onnx

    onnx_path = tiny_onnx(tmp_path / "model.onnx")
    request = builder.EngineRequest(onnx=onnx_path, precision=Precision.int8, shapes=SHAPES)
    with pytest.raises(UserInputError, match="has no Q/DQ nodes"):
        builder.obtain_engine(RecordingDevice(), INFO, request, tmp_path / "engines")
    fp32_dla = builder.EngineRequest(onnx=onnx_path, precision=Precision.fp32, shapes=SHAPES, dla_core=0)
    with pytest.raises(UserInputError, match="the DLA runs fp16 or int8 only"):
        builder.obtain_engine(RecordingDevice(), INFO, fp32_dla, tmp_path / "engines")
    fp16 = builder.EngineRequest(onnx=onnx_path, precision=Precision.fp16, shapes=SHAPES)
    no_trt = {"model": "x", "tensorrt": None}
    with pytest.raises(DeviceError, match="no TensorRT there"):
        builder.obtain_engine(RecordingDevice(no_trt), no_trt, fp16, tmp_path / "engines")


def captured_builds(runner, monkeypatch, request, store: Path) -> list[str]:
    """Run obtain_engine on a real runner whose subprocesses are faked; return build.py's arguments."""
    from edgecomp.deploy import runners

    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        stdout = "{}"
        if command[0] == "scp" and ":" not in command[-1]:  # a fetch: the engine comes back
            Path(command[-1]).write_bytes(b"plan")
        elif command[0] != "scp" and "build.py" in " ".join(command):
            if kwargs.get("cwd"):  # the host runner's working folder
                (Path(kwargs["cwd"]) / "model.engine").write_bytes(b"plan")
            stdout = json.dumps({"tool": "api", "tensorrt": "10.3.0.30"})
        return subprocess.CompletedProcess(command, 0, stdout, "")

    monkeypatch.setattr(runners.subprocess, "run", fake_run)
    with runner:
        builder.obtain_engine(runner, INFO, request, store)
    build = next(c for c in commands if "build.py" in " ".join(c) and c[0] != "scp")
    if build[0] == "ssh":  # ssh ... -- dest "sh -c 'cd DIR && exec python3 build.py ARGS'"
        inner = shlex.split(shlex.split(build[-1])[2])
        return inner[inner.index("build.py") + 1:]
    return build[2:]  # python /path/to/build.py ARGS


def test_host_and_device_builds_run_the_same_command(tmp_path, monkeypatch):
    """Same precision and ONNX: build.py gets the same arguments from the host runner and over ssh."""
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    request = builder.EngineRequest(onnx=tmp_path / "model.onnx", precision=Precision.fp16, shapes=SHAPES,
                                    dla_core=None, workspace_mib=512)
    host = captured_builds(HostRunner(), monkeypatch, request, tmp_path / "host-engines")
    ssh = captured_builds(SshRunner(SshTarget("jetson", "me")), monkeypatch, request, tmp_path / "ssh-engines")
    assert host == ssh
    assert host[:6] == ["--onnx", "model.onnx", "--engine", "model.engine", "--precision", "fp16"]
    assert "--workspace-mb" in host and "512" in host


@pytest.mark.e2e
def test_int8_calibration_and_scoring_images_are_disjoint(quick_int8_export, tmp_path):
    """Calibration from the training split, scoring from validation: no image in both; bench.json says so."""
    run = quick_int8_export.run_dir
    calib = np.load(run / "calib.npy")
    scored = np.load(run / quick_int8_export.info["eval"]["file"])["images"]
    calibrated = {row.tobytes() for row in calib}
    assert len(calib) == 64 and len(scored) == 64
    assert not any(row.tobytes() in calibrated for row in scored)
    info = quick_int8_export.info["int8"]
    assert (info["calib_split"], info["scored_split"]) == ("train", "val")
    device = RecordingDevice()
    options = deploy_bench._options(10, 1, 2, "tensorrt", "int8")
    job = deploy_bench.plan_job(run, None, options, evaluate=True)
    target = resolve_device("ssh://me@jetson")
    entry = deploy_bench._new_entry(target, job, options)
    deploy_bench.measure(device, target, job, options, entry, None)
    assert device.staged["model.onnx"].name == "model.int8.onnx"  # the engine is built from the Q/DQ model
    assert entry["int8_calibration"] == {"split": "train", "images": 64, "file": "calib.npy"}
    assert entry["accuracy_split"] == "val" and entry["precision"] == "int8"
