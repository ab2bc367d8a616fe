"""Training-only auxiliary branches: exact folding, zero inference cost, no strong-view leaks."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import tiny_recipe_dict

from edgecomp.compression.auxiliary import (
    HEADS_ATTR,
    PlainModelError,
    RepConvBN,
    assert_plain,
    attach,
    detach,
    find_stages,
    strong_loss,
)
from edgecomp.compression.prune import Size, measure_size, prune_to
from edgecomp.core.errors import RecipeError
from edgecomp.core.models import build_model, model_from_payload, model_payload, model_structure
from edgecomp.core.recipe import AUX_KINDS, ModelSection, PruneSection, aux_section

SIZE = 32
FOLD_ARCHS = ["resnet18", "mobilenet_v2", "efficientnet_b0", "toy_grouped"]
ROUND_TO = {"toy_grouped": 4}  # its grouped conv cannot reach 50% MACs in steps of 8
REP, HEADS = aux_section(kind="rep"), aux_section(kind="heads")
# aux needs a policy with a magnitude (the default is crop + flip) and a strong view above 0 (the default schedule is
# constant 0): linear from 9 gives both
RANDAUGMENT = {"policy": "randaugment", "schedule": {"kind": "linear", "dense": 9}}


def model_cfg(arch):
    return ModelSection(arch=arch, input_size=SIZE, num_classes=10)


def example():
    return torch.zeros(1, 3, SIZE, SIZE)


def inputs(batch=4, seed=0):
    return torch.randn(batch, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models on a shared 2-core machine: one thread avoids oversubscription stalls."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def plain():
    """plain(arch, pruned) -> a fresh copy of the dense or ~50%-MACs model (each built and pruned once)."""
    cache = {}

    def get(arch, pruned=False):
        if (arch, pruned) not in cache:
            torch.manual_seed(0)
            model = build_model(model_cfg(arch))
            if pruned:
                dense = measure_size(model, example())
                cfg = PruneSection(target={"macs": 0.5}, round_to=ROUND_TO.get(arch, 8))
                prune_to(model, example(), cfg, Size(int(dense.macs * 0.5), 0), 10)
            cache[arch, pruned] = model.eval()
        return copy.deepcopy(cache[arch, pruned])

    return get


@torch.no_grad()
def randomise(model, seed=0):
    """BN statistics and scales (some negative), and non-zero rep branch weights."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda n, lo, hi: torch.rand(n, generator=gen) * (hi - lo) + lo  # noqa: E731
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            sign = torch.where(torch.rand(n, generator=gen) < 0.2, -1.0, 1.0)
            module.weight.copy_(rand(n, 0.3, 0.7) * sign)
            module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
            module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            module.running_var.copy_(rand(n, 0.5, 1.5))
        if isinstance(module, RepConvBN):
            module.conv1x1.weight.copy_(torch.randn(module.conv1x1.weight.shape, generator=gen) * 0.1)
            if module.id_scale is not None:
                module.id_scale.copy_(torch.randn(module.id_scale.shape, generator=gen) * 0.3)


def param_shapes(model):
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


def buffer_names(model):
    return [n for n, _ in model.named_buffers()]


# ---------------------------------------------------------------- rep: exact folding


@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
@pytest.mark.parametrize("arch", FOLD_ARCHS)
def test_fold_is_exact(plain, arch, pruned):
    model, x = plain(arch, pruned), inputs()
    randomise(model, seed=1)
    branched = attach(model, REP, example())
    with torch.no_grad():
        trunk_only = model(x)
        randomise(model, seed=2)
        before = model(x)
    assert (before - trunk_only).abs().max() > 1e-3  # the branches really contribute
    model, record = detach(branched)
    with torch.no_grad():
        after = model(x)
    assert not any(isinstance(m, RepConvBN) for m in model.modules())
    assert record.kind == "rep" and record.branches > 0 and record.branch_params > 0
    diff = (before - after).abs().max().item()
    assert diff <= 1e-5 and diff <= 1e-4 * before.abs().max().item()  # absolute, and relative to small outputs


def test_grouped_and_dilated_sites_get_the_right_branches(plain):
    model = plain("toy_grouped")
    branched = attach(model, REP, example())
    blocks = {site.conv_name: block for site, block in zip(branched.sites, branched.blocks)}
    assert set(blocks) == {"stem.0", "grouped.0", "depthwise.0"}  # the 1x1 conv gets no branch
    assert blocks["grouped.0"].conv1x1.groups == 4 and blocks["grouped.0"].id_scale is None  # stride 2, 32 -> 64
    dilated = blocks["depthwise.0"]
    assert dilated.conv.dilation == (2, 2) and dilated.shift == (0, 0) and dilated.id_scale is not None
    assert dilated.conv1x1.groups == dilated.conv.groups


def test_valid_padding_branch_is_cropped_and_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 5, padding=0), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=3, dilation=2, groups=2), nn.BatchNorm2d(8)).eval()
    branched = attach(model, REP, example())
    assert [b.shift for b in branched.blocks] == [(-2, -2), (1, 1)]
    randomise(model, seed=3)
    with torch.no_grad():
        before = model(inputs())
        after = detach(branched)[0](inputs())
    assert (before - after).abs().max() <= 1e-5


def test_attach_then_detach_without_training_gives_the_plain_weights_back(plain):
    model = plain("cifar_resnet8")
    randomise(model)  # (some BN scales negative: signs survive too)
    reference = copy.deepcopy(model.state_dict())
    model, _ = detach(attach(model, REP, example()))
    for name, tensor in model.state_dict().items():
        assert torch.allclose(tensor.float(), reference[name].float(), atol=1e-5), name


def test_identity_branch_can_be_switched_off(plain):
    branched = attach(plain("cifar_resnet8"), aux_section(kind="rep", identity=False), example())
    assert all(block.id_scale is None for block in branched.blocks)
    assert detach(branched)[1].branches == len(branched.blocks)


# ---------------------------------------------------------------- attach preserves the function, detach leaves no trace


@pytest.mark.parametrize("kind", ["rep", "heads"])
@pytest.mark.parametrize("arch", ["cifar_resnet8", "mobilenet_v2"])
def test_attach_preserves_outputs_in_eval_and_train_mode(plain, arch, kind):
    model, x = plain(arch, pruned=True), inputs(8)
    reference = copy.deepcopy(model)
    randomise(model)
    randomise(reference)
    attach(model, aux_section(kind=kind), example())
    with torch.no_grad():
        assert torch.equal(model.eval()(x), reference.eval()(x))
        outputs = [torch.manual_seed(0) and m.train()(x) for m in (model, reference)]  # same dropout mask
        assert torch.allclose(*outputs, atol=1e-6)  # batch statistics


@pytest.mark.parametrize("kind", ["rep", "heads"])
@pytest.mark.parametrize("arch, pruned", [("resnet18", True), ("mobilenet_v2", False), ("efficientnet_b0", True)])
def test_detach_leaves_exactly_the_plain_model(plain, arch, pruned, kind):
    model = plain(arch, pruned)
    names, buffers, structure = param_shapes(model), buffer_names(model), model_structure(model)
    size = measure_size(model, example())
    macs = lambda m: measure_size(m, example()).macs  # noqa: E731
    branched = attach(model, aux_section(kind=kind), example())
    assert branched.branch_parameters()
    with pytest.raises(PlainModelError):
        assert_plain(model, structure, size.params, macs, size.macs)
    model, record = detach(branched)
    assert record.branch_params == sum(p.numel() for p in branched.branch_parameters())
    assert param_shapes(model) == names and buffer_names(model) == buffers
    assert model_structure(model) == structure
    assert measure_size(model, example()) == size
    assert not hasattr(model, HEADS_ATTR)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert_plain(model, structure, size.params, macs, size.macs)
    with pytest.raises(ValueError, match="already detached"):
        detach(branched)


def test_rep_round_trips_through_pruning_and_the_model_payload(plain):
    cfg = model_cfg("cifar_resnet8")
    model = plain("cifar_resnet8", pruned=True)
    randomise(model)
    branched = attach(model, REP, example())
    randomise(model, seed=5)
    model, _ = detach(branched)
    dense = measure_size(build_model(cfg), example())
    prune_to(model, example(), PruneSection(target={"macs": 0.3}, round_to=4), Size(int(dense.macs * 0.3), 0), 10)
    model, _ = detach(attach(model, REP, example()))  # the next step attaches again
    loaded = model_from_payload(model_payload(model, cfg)).eval()
    with torch.no_grad():
        assert torch.equal(loaded(inputs()), model.eval()(inputs()))
    assert model_structure(loaded) == model_structure(model)


def test_heads_model_payload_round_trip(plain):
    cfg = model_cfg("cifar_resnet8")
    model, _ = detach(attach(plain("cifar_resnet8"), HEADS, example()))
    loaded = model_from_payload(model_payload(model, cfg)).eval()
    assert set(loaded.state_dict()) == set(model.state_dict())
    with torch.no_grad():
        assert torch.equal(loaded(inputs()), model.eval()(inputs()))


def test_training_steps_then_fold_stays_exact_and_plain(plain):
    """What the training loop does: weak + strong loss, SGD over model.parameters(), then detach."""
    model, x, labels = plain("cifar_resnet8"), inputs(16), torch.arange(16) % 10
    structure, params = model_structure(model), sum(p.numel() for p in model.parameters())
    branched = attach(model, REP, example())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for step in range(3):
        logits, strong = branched.main_and_strong(x, x.flip(3) + 0.5 * inputs(16, seed=step))
        loss = F.cross_entropy(logits, labels) + strong_loss(strong, labels, logits, head_kd=0.5)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert all(block.conv1x1.weight.abs().sum() > 0 for block in branched.blocks)  # the branches trained
    with torch.no_grad():
        before = model.eval()(x)
        model, _ = detach(branched)
        assert (model(x) - before).abs().max() <= 1e-5
    assert_plain(model, structure, params)


def test_fold_is_exact_in_train_mode_and_bn_statistics_are_the_merged_convs(plain):
    """The BN after a branched conv normalises the merged conv's output, so folding changes nothing even
    with batch statistics, and its running statistics need no correction."""
    model, x = plain("cifar_resnet8").train(), inputs(32)
    branched = attach(model, REP, example())
    randomise(model, seed=4)
    with torch.no_grad():
        before = model(x)
        model, _ = detach(branched)
        assert torch.allclose(model.train()(x), before, atol=1e-5)


class ConvCounter(torch.overrides.TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += func in (F.conv2d, torch.conv2d)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("arch", ["cifar_resnet8", "mobilenet_v2"])
def test_branched_model_runs_as_many_convolutions_as_the_plain_one(plain, arch):
    """The cost contract of rep (issue 12: >= 0.45x of plain throughput with the strong pass): the branches
    are merged in kernel space, so each forward is the plain model's convolutions, no more."""
    model, x = plain(arch), inputs(2)
    with ConvCounter() as plain_count:
        model.train()(x)
    attach(model, REP, example())
    with ConvCounter() as branched_count:
        model.train()(x)
    assert plain_count.calls > 0 and branched_count.calls == plain_count.calls


# ---------------------------------------------------------------- strong-view pass


def bn_buffers(model):
    return {n: b.clone() for n, b in model.named_buffers()}


def test_rep_strong_pass_trains_only_the_branches_and_leaks_no_statistics(plain):
    model, labels = plain("cifar_resnet8").train(), torch.arange(8) % 10
    branched = attach(model, REP, example())
    randomise(model)  # non-zero branch scales, so every branch parameter gets a gradient
    buffers = bn_buffers(model)
    outputs = branched.strong_outputs(inputs(8))
    assert len(outputs) == 1 and outputs[0].shape == (8, 10)
    F.cross_entropy(outputs[0], labels).backward()
    branch = {id(p) for p in branched.branch_parameters()}
    for name, param in model.named_parameters():
        if id(param) in branch:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
        else:
            assert param.grad is None or not param.grad.any(), name
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())
    model(inputs(8))  # the weak (main) forward does update them
    assert not torch.equal(model.conv1.bn.running_mean, buffers["conv1.bn.running_mean"])


def test_heads_strong_pass_reaches_every_stage_of_the_trunk(plain):
    model, labels = plain("cifar_resnet8").train(), torch.arange(8) % 10
    branched = attach(model, HEADS, example())
    assert branched.stages == ["layer1", "layer2", "layer3"]  # the last stage too: the whole trunk sees it
    buffers = bn_buffers(model)
    outputs = branched.strong_outputs(inputs(8))
    assert [o.shape for o in outputs] == [(8, 10)] * 3
    strong_loss(outputs, labels).backward()
    assert all(p.grad is not None for p in branched.branch_parameters())
    for name, param in model.named_parameters():
        if not name.startswith(("fc.", HEADS_ATTR)):
            assert param.grad is not None and param.grad.abs().sum() > 0, f"{name}: no strong-view gradient"
    assert model.fc.weight.grad is None  # only the main classifier stays on the weak view
    # (the heads' own BN statistics may move: the heads are dropped)
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers() if not n.startswith(HEADS_ATTR))
    model(inputs(8))  # the main forward captures nothing
    assert branched.features == {}


def test_rep_trunk_reading_trains_trunk_and_branches(plain):
    model, labels = plain("cifar_resnet8").train(), torch.arange(8) % 10
    branched = attach(model, aux_section(kind="rep", rep_trunk=True), example())
    randomise(model)
    buffers = bn_buffers(model)
    F.cross_entropy(branched.strong_outputs(inputs(8))[0], labels).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())  # still no statistics leak


def test_strong_loss_adds_distillation_from_the_main_head():
    logits, labels = torch.randn(6, 10), torch.arange(6)
    ce = F.cross_entropy(logits, labels)
    assert torch.allclose(strong_loss([logits, logits], labels), ce)
    assert torch.allclose(strong_loss([logits], labels, weak_logits=logits, head_kd=1.0), ce)  # KD(z, z) = 0
    other = torch.randn(6, 10)
    kd = F.kl_div(F.log_softmax(logits / 4, 1), F.log_softmax(other / 4, 1), log_target=True, reduction="batchmean")
    assert torch.allclose(strong_loss([logits], labels, weak_logits=other, head_kd=0.5), ce + 0.5 * 16 * kd)


# ---------------------------------------------------------------- heads: where they go


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "efficientnet_b0", "regnet_x_400mf", "cifar_resnet8"])
def test_stages_are_found(plain, arch):
    model = plain(arch)
    stages = find_stages(model, example())
    assert 2 <= len(stages) <= 3, stages
    branched = attach(model, HEADS, example())
    assert branched.stages == stages
    outputs = branched.strong_outputs(inputs(2))
    assert len(outputs) == len(stages) and all(o.shape == (2, 10) for o in outputs)


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.body(x)


def test_unknown_model_needs_named_stages():
    with pytest.raises(RecipeError, match=r"aux\.heads_at: cannot find the stages of TinyNet"):
        attach(TinyNet(), HEADS, example())
    with pytest.raises(RecipeError, match=r"aux\.heads_at: TinyNet has no module named 'body.9'"):
        attach(TinyNet(), aux_section(kind="heads", heads_at=["body.1", "body.9"]), example())
    with pytest.raises(RecipeError, match=r"aux\.heads_at: 'body.6' of TinyNet output no \(B, C, H, W\)"):
        attach(TinyNet(), aux_section(kind="heads", heads_at=["body.6"]), example())
    branched = attach(TinyNet(), aux_section(kind="heads", heads_at=["body.1", "body.3"]), example())
    assert [o.shape for o in branched.strong_outputs(inputs(2))] == [(2, 10), (2, 10)]


def test_rep_refuses_a_model_without_conv_bn_pairs():
    with pytest.raises(RecipeError, match="aux.kind: rep needs"):
        attach(TinyNet(), REP, example())


class ConvOutputReused(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.Linear(8, 10)

    def forward(self, x):
        y = self.conv(x)
        return self.fc((self.bn(y) + y).mean((2, 3)))  # the conv output is used beside its BN


def test_rep_leaves_alone_a_conv_whose_output_is_used_beside_its_bn():
    model = ConvOutputReused()
    with pytest.raises(RecipeError, match="rep needs .* followed by BatchNorm2d .*; ConvOutputReused has none"):
        attach(model, REP, example())
    assert type(model.conv) is nn.Conv2d and type(model.bn) is nn.BatchNorm2d


# ---------------------------------------------------------------- recipe


def test_recipe_aux_section():
    from edgecomp.core.recipe import validate

    assert all(field.description for kind in AUX_KINDS for field in kind.model_fields.values())
    recipe = validate(tiny_recipe_dict(aux={"kind": "heads", "heads_at": ["layer1"], "head_kd": 0.3}, augment=RANDAUGMENT))
    assert recipe.aux.kind.value == "heads" and recipe.aux.strong_magnitude is None and recipe.aux.kd_weight() == 0.3
    assert recipe.aux.loss_weight() == 0.05  # heads: a small default weight
    rep = validate(tiny_recipe_dict(aux={"kind": "rep"}, augment=RANDAUGMENT))
    assert rep.aux.loss_weight() == 1.0 and rep.aux.kd_weight() == 0.0
    for bad, field in [({"kind": "branches"}, "aux.kind"), ({"strong_magnitude": 31}, "aux.strong_magnitude"),
                       ({"head_kd": 1.5}, "aux.head_kd"), ({"weight": -1}, "aux.weight")]:
        with pytest.raises(RecipeError, match=field):
            validate(tiny_recipe_dict(aux=bad))


@pytest.mark.parametrize("schedule, strong, ok", [
    ({"kind": "linear", "dense": 9, "min": 0}, 9, True),
    ({"kind": "linear", "dense": 9, "min": 0}, 5, False),  # step 1 of a linear schedule is above 5
    ({"kind": "constant", "dense": 14}, 12, False),
    ({"kind": "steps", "dense": 9, "values": [12, 6]}, 10, False),  # a step above the dense magnitude
    ({"kind": "steps", "dense": 9, "values": [12, 6]}, 12, True),
    ({"kind": "teacher", "dense": 9}, 9, True),  # anchored: never above the dense magnitude
])
def test_strong_view_is_never_weaker_than_the_weak_view(schedule, strong, ok):
    from edgecomp.core.recipe import validate

    data = tiny_recipe_dict(aux={"kind": "rep", "strong_magnitude": strong}, augment={**RANDAUGMENT, "schedule": schedule})
    if ok:
        validate(data)
    else:
        with pytest.raises(RecipeError, match=r"aux.strong_magnitude: .* is weaker than the weak view"):
            validate(data)


def test_a_strong_view_that_resolves_to_zero_everywhere_is_a_recipe_error():
    from edgecomp.core.recipe import validate

    data = tiny_recipe_dict(aux={"kind": "rep"}, augment={"policy": "randaugment"})  # default schedule: constant 0
    with pytest.raises(RecipeError, match=r"aux.strong_magnitude: null gives magnitude 0 at every step"):
        validate(data)
    explicit = tiny_recipe_dict(aux={"kind": "rep", "strong_magnitude": 0}, augment={"policy": "randaugment"})
    with pytest.raises(RecipeError, match=r"aux.strong_magnitude: 0 gives magnitude 0 at every step"):
        validate(explicit)
    validate(tiny_recipe_dict(aux={"kind": "rep", "strong_magnitude": 10}, augment={"policy": "randaugment"}))


def test_default_strong_magnitude_is_the_larger_of_dense_and_step():
    from edgecomp.compression.pipeline import strong_magnitude
    from edgecomp.core.recipe import validate

    recipe = validate(tiny_recipe_dict(aux={"kind": "heads"}, augment=RANDAUGMENT))  # linear from 9
    assert strong_magnitude(recipe, 4.5) == 9 and strong_magnitude(recipe, 12.0) == 12.0


@pytest.mark.parametrize("sections, names", [
    ({"aux": {"kind": "rep"}}, "aux.kind rep"),
    ({"augment": {"schedule": {"kind": "teacher", "dense": 9}}}, "augment.schedule.kind teacher"),
])
def test_the_default_policy_has_no_magnitude_for_a_strong_view_or_a_teacher_schedule(sections, names):
    from edgecomp.core.recipe import validate

    with pytest.raises(RecipeError, match=f"augment.policy: none applies no magnitude, but {names}"):
        validate(tiny_recipe_dict(**sections))
