import sys
import urllib.error

import pytest
import torch
import torch.nn as nn

from edgecomp.compression.prune import Size, measure_size, prune_to
from edgecomp.core.errors import ModelError
from edgecomp.core.models import build_model, load_model_file, load_state_file, model_from_payload, model_payload
from edgecomp.core.recipe import ModelSection, PruneSection


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
                                  "shufflenet_v2_x0_5", "regnet_x_400mf", "cifar_resnet8", "toy_grouped"])
def test_factory_adapts_channels_classes_and_small_input(arch):
    cfg = ModelSection(arch=arch, num_classes=7, in_channels=1, input_size=32, small_input=True)
    model = build_model(cfg).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 7)


def test_small_input_keeps_resolution_in_the_stem():
    plain = build_model(ModelSection(arch="resnet18", input_size=32))
    small = build_model(ModelSection(arch="resnet18", input_size=32, small_input=True))
    assert plain.conv1.stride == (2, 2) and isinstance(plain.maxpool, nn.MaxPool2d)
    assert small.conv1.stride == (1, 1) and small.conv1.kernel_size == (3, 3)
    assert isinstance(small.maxpool, nn.Identity)


def test_unknown_model_suggests_close_names():
    with pytest.raises(ModelError, match="unknown model 'resnet81'.*did you mean.*resnet18"):
        build_model(ModelSection(arch="resnet81"))


def test_entry_point_models():
    model = build_model(ModelSection(arch="edgecomp.core.models:CifarResNet", num_classes=4, kwargs={"depth": 8}))
    assert model.fc.out_features == 4
    with pytest.raises(ModelError, match="cannot load entry point"):
        build_model(ModelSection(arch="edgecomp.core.models:Nope"))
    with pytest.raises(ModelError, match="model.kwargs"):
        build_model(ModelSection(arch="cifar_resnet8", kwargs={"colour": 1}))


def test_timm_missing_is_a_clear_error():
    try:
        import timm  # noqa: F401
        pytest.skip("timm is installed here")
    except ImportError:
        pass
    with pytest.raises(ModelError, match="needs timm"):
        build_model(ModelSection(arch="timm:resnet18"))


def test_pretrained_offline_is_refused_clearly(monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(ModelError, match="model.pretrained: cannot get the pretrained weights of resnet18"):
        build_model(ModelSection(arch="resnet18", pretrained=True))


def pruned_toy() -> tuple[nn.Module, ModelSection]:
    cfg = ModelSection(arch="toy_grouped", num_classes=10, in_channels=1, input_size=28)
    model = build_model(cfg)
    example = torch.zeros(1, 1, 28, 28)
    dense = measure_size(model, example)
    prune_to(model, example, PruneSection(target={"macs": 0.5}, round_to=4), Size(dense.macs // 2, 0), 10)
    return model, cfg


def test_payload_round_trip_of_a_pruned_model_is_weights_only(tmp_path):
    model, cfg = pruned_toy()
    path = tmp_path / "model.pt"
    torch.save(model_payload(model, cfg), path)
    raw = torch.load(path, weights_only=True)  # no pickled classes inside
    assert raw["format"] == "edgecomp-model/1"
    rebuilt = load_model_file(path)
    x = torch.randn(3, 1, 28, 28)
    model.eval()
    rebuilt.eval()
    assert torch.equal(model(x), rebuilt(x))
    assert [p.shape for p in model.parameters()] == [p.shape for p in rebuilt.parameters()]
    assert model_from_payload(raw).depthwise[0].groups == model.depthwise[0].groups


def test_state_dict_weights_file(tmp_path):
    cfg = ModelSection(arch="cifar_resnet8", in_channels=1, input_size=28)
    source = build_model(cfg)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    loaded = build_model(cfg.model_copy(update={"weights": str(path)}))
    assert torch.equal(loaded.fc.weight, source.fc.weight)
    wrong = build_model(ModelSection(arch="cifar_resnet8", num_classes=5, in_channels=1))
    with pytest.raises(ModelError, match="dense.weights: .* does not fit the model"):
        load_state_file(wrong, path, "dense.weights")
    with pytest.raises(ModelError, match="model.weights: .*missing.pt does not exist"):
        build_model(cfg.model_copy(update={"weights": str(tmp_path / "missing.pt")}))


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(ModelError, match="is not a safe tensor checkpoint"):
        load_model_file(path)
    assert not marker.exists()


def test_entry_point_from_the_working_directory_and_its_contract(tmp_path, monkeypatch):
    (tmp_path / "mynets.py").write_text(
        "import torch.nn as nn\n"
        "def good(num_classes, width=4):\n"
        "    return nn.Sequential(nn.Conv2d(3, width, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                         nn.Linear(width, num_classes))\n"
        "def no_classes(width=4):\n"
        "    return nn.Linear(width, 2)\n"
        "def needs_missing():\n"
        "    import not_a_module_anywhere\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    model = build_model(ModelSection(arch="mynets:good", num_classes=3, kwargs={"width": 5}))  # found here
    assert model[-1].out_features == 3 and model[0].out_channels == 5
    with pytest.raises(ModelError, match=r"model.arch: mynets:no_classes must accept num_classes="):
        build_model(ModelSection(arch="mynets:no_classes"))
    with pytest.raises(ModelError, match=r"model.kwargs: mynets:good does not accept depth"):
        build_model(ModelSection(arch="mynets:good", kwargs={"depth": 3}))
    with pytest.raises(ModelError, match=r"model.arch: cannot import 'nowhere_net'.*working directory.*PYTHONPATH"):
        build_model(ModelSection(arch="nowhere_net:f"))


def test_weights_of_another_architecture_name_both_and_the_fix(tmp_path):
    saved = ModelSection(arch="cifar_resnet20", in_channels=1, input_size=28)
    path = tmp_path / "ref.pt"
    torch.save(model_payload(build_model(saved), saved), path)
    built = ModelSection(arch="resnet18", in_channels=1, input_size=28)
    with pytest.raises(ModelError) as caught:
        load_state_file(build_model(built), path, "dense.weights", built)
    message = str(caught.value)
    assert "\n" not in message and f"dense.weights: {path} does not fit the model" in message
    assert "saved from cifar_resnet20 (10 classes" in message and "the recipe builds resnet18 (10 classes" in message
    assert message.endswith("use weights of the same architecture, or --set dense.weights=null")
    plain = tmp_path / "plain.pt"
    torch.save(build_model(saved).state_dict(), plain)
    with pytest.raises(ModelError, match="saved from an architecture the file does not record"):
        load_state_file(build_model(built), plain, "dense.weights", built)
