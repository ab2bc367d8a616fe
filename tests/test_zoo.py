"""One member of every torchvision classification family prunes to about 50% of its MACs, exports to ONNX,
and the ONNX model reproduces PyTorch (onnxruntime). Small inputs, random weights, 10 classes. The README's
model list is this file's ZOO. Families whose tracing takes minutes on 2 cores run under `-m slow`."""

from __future__ import annotations

import pytest
import torch

from edgecomp.compression.prune import ChannelShuffle, Size, measure_size, prune_to, traceable
from edgecomp.core.models import build_model
from edgecomp.core.recipe import ModelSection, PruneSection
from edgecomp.deploy.export import compare_onnx, export_onnx

slow = pytest.mark.slow
SMALL_INPUT_POOL = ("at this test size the feature map is smaller than the classifier's adaptive pool (7x7 / 6x6), which "
                    "the ONNX exporter refuses; only 224 px would export, and that has not been run")
ZOO = [  # family, member, input px
    ("ResNet", "resnet18", 32),
    ("MobileNetV2", "mobilenet_v2", 32),
    ("MobileNetV3", "mobilenet_v3_small", 32),
    ("EfficientNet", "efficientnet_b0", 32),
    ("RegNet", "regnet_y_400mf", 32),
    ("ShuffleNetV2", "shufflenet_v2_x0_5", 32),
    ("SqueezeNet", "squeezenet1_1", 32),
    pytest.param("EfficientNetV2", "efficientnet_v2_s", 32, marks=slow),
    pytest.param("MNASNet", "mnasnet0_5", 32, marks=slow),
    pytest.param("GoogLeNet", "googlenet", 32, marks=slow),
    pytest.param("Inception", "inception_v3", 75, marks=[slow, pytest.mark.xfail(strict=True, raises=AssertionError,
                 reason="pruned export does not reproduce PyTorch (max |diff| 0.61 on 2026-11-29); not investigated")]),
    pytest.param("DenseNet", "densenet121", 32, marks=slow),
    pytest.param("ConvNeXt", "convnext_tiny", 32, marks=slow),
    pytest.param("VGG", "vgg11_bn", 32, marks=[slow, pytest.mark.xfail(strict=True, reason=SMALL_INPUT_POOL)]),
    pytest.param("AlexNet", "alexnet", 64, marks=[slow, pytest.mark.xfail(strict=True, reason=SMALL_INPUT_POOL)]),
]


@pytest.mark.e2e
@pytest.mark.parametrize("family, arch, px", ZOO)
def test_family_prunes_to_half_its_macs_and_exports(family, arch, px):
    torch.manual_seed(0)
    model = build_model(ModelSection(arch=arch, num_classes=10, input_size=px)).eval()
    example = torch.zeros(1, 3, px, px)
    dense = measure_size(model, example)
    reached = prune_to(model, example, PruneSection(target={"macs": 0.5}), Size(dense.macs // 2, 0), 10, name=arch)
    assert 0.45 * dense.macs <= reached.macs <= 0.5 * dense.macs, reached.macs / dense.macs
    proto, _ = export_onnx(model, torch.zeros(2, 3, px, px))
    fidelity = compare_onnx(proto, model, torch.randn(4, 3, px, px), atol=1e-4)
    assert fidelity.passed, fidelity


def test_shufflenet_swap_is_exact_and_undone():
    model = build_model(ModelSection(arch="shufflenet_v2_x0_5", num_classes=10, input_size=32)).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        classes = [type(m) for m in model.modules()]
        with traceable(model) as fixed:
            assert fixed and all(isinstance(m, ChannelShuffle) for m in fixed)
            during = model(x)
        after = model(x)
    assert torch.equal(before, during) and torch.equal(before, after)  # a gather moves values, bit for bit
    assert [type(m) for m in model.modules()] == classes and "edgecomp_shuffle" not in str(model.state_dict().keys())


def test_channel_shuffle_matches_torchvision():
    from torchvision.models.shufflenetv2 import channel_shuffle

    x = torch.randn(2, 48, 5, 5)
    assert torch.equal(ChannelShuffle(48)(x), channel_shuffle(x, 2))
