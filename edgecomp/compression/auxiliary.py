"""Training-only auxiliary branches (finding B), gone before pruning and export.

The branches train on a strongly augmented view while the deployed path
trains on the weak view; they are attached after a pruning step and removed
before the next one, so Torch-Pruning and the exporter only ever see the plain
model. Two kinds:

rep
    Every k×k Conv2d (k odd, >1) that is followed by a BatchNorm2d gets a
    parallel 1×1 branch (same stride and groups) and, where in = out channels
    and stride 1, an identity branch with a per-channel scale (ACNet / RepVGG
    branches, made linear as in OREPA's online re-parameterisation: no BN of
    their own). Trunk and branches are summed in kernel space and run as one
    convolution, followed by the trunk's own BN, so a branched model trains at
    the cost of a plain one. The pair is replaced by a `RepConvBN` in the
    conv's slot and nn.Identity in the BN's slot. Branch weights start at 0, so
    attaching changes nothing. `detach` writes the merged kernel into the
    ORIGINAL conv and puts the BN back, so parameter names, counts and shapes
    are the plain model's, the BN's statistics are those of the merged conv's
    output (always were), and the fold is exact in train and eval mode.

heads
    Auxiliary classifiers (average pool to at most 4×4, 1×1 conv + BN + ReLU,
    global average pool, Linear)
    read intermediate stage outputs through forward hooks; `detach` removes the
    hooks and the heads. Stages are found where the spatial resolution halves
    among the top-level blocks (ResNet layerN, ShuffleNet stageN; else the
    children of torchvision `features`, RegNet `trunk_output`, MNASNet
    `layers`, timm `stages`/`blocks`), or named in aux.heads_at.

The strong-view pass (`Branched.strong_outputs`)
    * rep: the branched model's logits, computed with every non-branch
      parameter detached, so the strong view trains only the branches (and
      reaches the deployed model only through the fold); the trunk and the
      classifier are trained by the weak view alone. With `aux.rep_trunk`
      the strong view trains trunk and branches alike (the second reading,
      compared in the benchmarks).
    * heads: the heads' logits. Heads sit at the end of every stage, the last
      one included, so the strong view runs through the whole shared trunk
      and its gradients reach every stage; only the main classifier stays on
      the weak view. The forward stops after the deepest hooked stage (the
      main classifier is not run).
    * both: BatchNorm layers normalise with the strong batch's own statistics
      (as in any train-mode forward) but no running statistic is updated:
      the pass runs on copies of all buffers. Strong-view statistics therefore
      never leak into the deployed BN, neither directly nor through a fold.

Recommended loss per batch (weak view w, strong view s of the same images;
edgecomp.compression.objective implements it together with the teacher's terms):
    logits = model(w)
    loss = CE(logits, y)  [+ the teacher's KD, as without aux]
         + aux.weight * strong_loss(branched.strong_outputs(s), y, logits, aux.head_kd, T)
where strong_loss averages over the strong outputs g_j
    CE(g_j, y) + head_kd * T² KL(softmax(logits.detach()/T) ‖ softmax(g_j/T)).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Optional, cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ..core.errors import EdgecompError, ModelError, RecipeError
from ..core.models import model_structure, set_submodule
from ..core.recipe import AuxKind, AuxSection, HeadsAux, RepAux

HEADS_ATTR = "aux_heads"  # where the heads live inside the model while attached
MAX_HEADS = 3
HEAD_MIN_WIDTH = 128  # a head's 1x1 conv width: enough capacity that early features need not be linearly separable
HEAD_GRID = 4  # a head's input is pooled to at most 4x4 before its 1x1 conv
STAGE_CONTAINERS = ("features", "trunk_output", "layers", "stages", "blocks")


class PlainModelError(EdgecompError, AssertionError):
    """A model that should be plain still carries (traces of) auxiliary branches."""


@dataclass
class AuxRecord:
    kind: str  # "rep" | "heads"
    branches: int  # rep branches folded / heads dropped
    branch_params: int  # parameters they held during training

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------- rep: one conv+BN with branches


# torch types a Conv2d's padding, dilation and kernel_size as tuple[int, ...] (padding: or a str); they are pairs


def _padding(conv: nn.Conv2d) -> tuple[int, int]:
    if conv.padding == "valid":
        return (0, 0)
    if conv.padding == "same":
        return cast("tuple[int, int]", tuple(d * (k - 1) // 2 for d, k in zip(conv.dilation, conv.kernel_size)))
    return cast("tuple[int, int]", tuple(conv.padding))  # not a str: "valid" and "same" are the only ones


def _centre(conv: nn.Conv2d) -> tuple[int, int]:
    return cast("tuple[int, int]", tuple((k - 1) // 2 for k in conv.kernel_size))


def _shift(conv: nn.Conv2d) -> tuple[int, int]:
    """Padding a 1x1 conv needs to sample the k×k kernel's centre tap: p - d(k-1)/2 (may be < 0)."""
    return cast("tuple[int, int]", tuple(p - d * c for p, d, c in zip(_padding(conv), conv.dilation, _centre(conv))))


def branchable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
        and max(conv.kernel_size) > 1 and all(k % 2 for k in conv.kernel_size)
        and conv.padding_mode == "zeros" and bn.num_features == conv.out_channels
        and bn.affine and bn.track_running_stats
    )


class RepConvBN(nn.Module):
    """trunk conv  +  1x1 branch  [+ identity branch], summed in kernel space, then the trunk's BN.

    The branches are linear (no BN of their own, as in OREPA's online re-parameterisation), so a training
    forward is one convolution with the merged kernel: a branched model trains at the cost of a plain one,
    and `fold` is exact by construction (the merged kernel is written into the trunk conv).
    """

    id_tap: torch.Tensor  # a buffer, registered with the identity branch

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, identity: bool):
        super().__init__()
        self.conv, self.bn = conv, bn
        self.shift = _shift(conv)
        factory: dict[str, Any] = {"device": conv.weight.device, "dtype": conv.weight.dtype}
        stride = cast("tuple[int, int]", conv.stride)  # a Conv2d's stride is a pair (torch: tuple[int, ...])
        self.conv1x1 = nn.Conv2d(conv.in_channels, conv.out_channels, 1, stride, groups=conv.groups,
                                 bias=False, **factory)
        nn.init.zeros_(self.conv1x1.weight)  # the branch adds exactly 0 until it is trained
        same_grid = conv.in_channels == conv.out_channels and conv.stride == (1, 1) and self.shift == (0, 0)
        self.id_scale = nn.Parameter(torch.zeros(conv.out_channels, **factory)) if identity and same_grid else None
        if self.id_scale is not None:  # the identity as a 1x1 kernel: output c reads input c (within its group)
            tap = torch.zeros_like(self.conv1x1.weight)
            channels = torch.arange(conv.out_channels, device=tap.device)
            tap[channels, channels % (conv.in_channels // conv.groups), 0, 0] = 1.0
            self.register_buffer("id_tap", tap, persistent=False)

    def branch_parameters(self) -> list[nn.Parameter]:
        weight = cast(nn.Parameter, self.conv1x1.weight)  # a Conv2d's weight is a Parameter (torch: Tensor)
        return [weight] + ([self.id_scale] if self.id_scale is not None else [])

    def branch_count(self) -> int:
        return 1 + (self.id_scale is not None)

    def merged_kernel(self) -> torch.Tensor:
        """The one k×k kernel equal to trunk + branches (the 1x1 weight sits at the centre tap)."""
        (kh, kw), (ch, cw) = self.conv.kernel_size, _centre(self.conv)
        centre = self.conv1x1.weight  # both branches are 1x1: add them at that size, pad once
        if self.id_scale is not None:
            centre = centre + self.id_tap * self.id_scale[:, None, None, None]
        return self.conv.weight + F.pad(centre, (cw, kw - 1 - cw, ch, kh - 1 - ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv._conv_forward(x, self.merged_kernel(), self.conv.bias))

    @torch.no_grad()
    def fold(self) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
        """Write the merged kernel into the trunk conv and return the trunk's conv and BN (unchanged BN:
        its statistics were always those of the merged conv's output)."""
        self.conv.weight.copy_(self.merged_kernel())
        return self.conv, self.bn


# ---------------------------------------------------------------- rep: finding the pairs


@dataclass
class ConvBNSite:
    conv_name: str
    bn_name: str


def candidate_pairs(model: nn.Module) -> list[ConvBNSite]:
    """Conv2d then BatchNorm2d inside a Sequential, or attributes convX / bnX of one module."""
    sites = []
    for parent_name, parent in model.named_modules():
        if isinstance(parent, RepConvBN):  # already branched
            continue
        prefix = parent_name + "." if parent_name else ""
        children = list(parent.named_children())
        if isinstance(parent, nn.Sequential):
            pairs = [(a, b) for (a, _), (b, _) in zip(children, children[1:])]
        else:
            names = {name for name, _ in children}
            pairs = [(a, "bn" + m.group(1)) for a, _ in children
                     if (m := re.fullmatch(r"conv(\w*)", a)) and "bn" + m.group(1) in names]
        modules = dict(children)
        sites += [ConvBNSite(prefix + a, prefix + b) for a, b in pairs if branchable(modules[a], modules[b])]
    return sites


def traced_pairs(model: nn.Module, sites: list[ConvBNSite], example: torch.Tensor) -> list[ConvBNSite]:
    """Keep the pairs where, in a real forward, conv and BN run once and the BN is the ONLY user of the
    conv's output (found in the autograd graph): only then may the pair become one block."""
    seen: dict[str, list] = {}
    record = lambda name: lambda tensor: seen.setdefault(name, []).append(tensor)  # noqa: E731
    outputs = {s.conv_name: record(s.conv_name) for s in sites}
    inputs = {s.bn_name: record(s.bn_name) for s in sites}
    out = _traced_forward(model, example.detach().clone().requires_grad_(True), outputs, inputs, grad=True)
    users = _graph_users(out)
    once = lambda name: len(seen.get(name, [])) == 1  # noqa: E731
    return [s for s in sites if once(s.conv_name) and once(s.bn_name)
            and seen[s.bn_name][0] is seen[s.conv_name][0] and users.get(seen[s.conv_name][0].grad_fn) == 1]


def _graph_users(out) -> dict:
    """For every autograd node behind `out`: how many nodes consume its result."""
    outs = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else [out]
    stack = [t.grad_fn for t in outs if torch.is_tensor(t) and t.grad_fn is not None]
    users: dict[Any, int] = {}  # autograd nodes (next_functions: Any in torch's stubs)
    visited = set(stack)
    while stack:
        for child, _ in stack.pop().next_functions:
            if child is not None:
                users[child] = users.get(child, 0) + 1
                if child not in visited:
                    visited.add(child)
                    stack.append(child)
    return users


# ---------------------------------------------------------------- heads


class AuxHead(nn.Module):
    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        width = max(channels, HEAD_MIN_WIDTH)
        self.conv = nn.Conv2d(channels, width, 1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] > HEAD_GRID or x.shape[-2] > HEAD_GRID:
            # summarise the map on a small grid first: the widened 1x1 conv then costs next to nothing,
            # where at full resolution (28x28 x 128 channels) it cost more than the pruned trunk itself
            x = F.adaptive_avg_pool2d(x, HEAD_GRID)
        x = F.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def stage_blocks(model: nn.Module) -> list[str]:
    """The ordered blocks among which stage boundaries are looked for."""
    numbered = [(re.fullmatch(r"(?:layer|stage)(\d+)", n), n) for n, _ in model.named_children()]
    layers = sorted((int(match.group(1)), name) for match, name in numbered if match)  # ResNet, ShuffleNet
    if len(layers) >= 2:
        return [name for _, name in layers]
    for attr in STAGE_CONTAINERS:
        container = getattr(model, attr, None)
        if isinstance(container, (nn.Sequential, nn.ModuleList)) and len(container) >= 2:
            return [f"{attr}.{name}" for name, _ in container.named_children()]
    return []


def output_shapes(model: nn.Module, names: list[str], example: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """Output shape of each named module (None if not a tensor), and the model's output."""
    shapes: dict[str, Optional[tuple[int, ...]]] = {}

    def record(name: str) -> Callable:
        return lambda out: shapes.__setitem__(name, tuple(out.shape) if torch.is_tensor(out) else None)

    return shapes, _traced_forward(model, example, {name: record(name) for name in names}, {})


def find_stages(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Last block of each resolution, the final block included (at most MAX_HEADS, the deepest): the strong
    view then runs through the whole trunk, and every stage learns from it through some head."""
    blocks = stage_blocks(model)
    shapes, _ = output_shapes(model, blocks, example)
    area = lambda name: shapes[name][2] * shapes[name][3] if _is_map(shapes.get(name)) else None  # noqa: E731
    ends = [a for a, b in zip(blocks, blocks[1:]) if (before := area(a)) and (after := area(b)) and after < before]
    if ends and area(blocks[-1]):
        ends.append(blocks[-1])
    return ends[-MAX_HEADS:]


def _is_map(shape) -> bool:
    return shape is not None and len(shape) == 4


def _heads_at(model: nn.Module, cfg: HeadsAux, example: torch.Tensor) -> tuple[list[str], dict, torch.Tensor]:
    arch = type(model).__name__
    if cfg.heads_at:
        modules = dict(model.named_modules())
        unknown = [n for n in cfg.heads_at if n not in modules]
        if unknown:
            raise RecipeError(f"aux.heads_at: {arch} has no module named {', '.join(map(repr, unknown))}")
        names = list(cfg.heads_at)
    else:
        names = find_stages(model, example)
        if not names:
            raise RecipeError(
                f"aux.heads_at: cannot find the stages of {arch}; name the modules whose outputs "
                f"(B, C, H, W feature maps) should get an auxiliary head, e.g. aux.heads_at=[layer1, layer2]"
            )
    shapes, out = output_shapes(model, names, example)
    flat = [n for n in names if not _is_map(shapes.get(n))]
    if flat:
        raise RecipeError(f"aux.heads_at: {', '.join(map(repr, flat))} of {arch} output no (B, C, H, W) "
                          f"feature map in the forward pass")
    return names, shapes, out


# ---------------------------------------------------------------- the branched model


class _StopForward(Exception):
    """Raised once a heads strong pass has every stage it needs: the rest of the network is not run."""


class Branched:
    """A model with its training-only branches attached (the model object itself is mutated)."""

    def __init__(self, model: nn.Module, kind: str):
        self.model, self.kind, self.attached = model, kind, True

    def branch_parameters(self) -> list[nn.Parameter]:
        raise NotImplementedError

    def strong_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def main_and_strong(self, weak: torch.Tensor, strong: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.model(weak), self.strong_outputs(strong)

    def _detach(self) -> AuxRecord:
        raise NotImplementedError

    def _buffer_copies(self) -> dict[str, torch.Tensor]:
        # BN running statistics of the strong pass go to these copies and are dropped
        return {name: b.clone() for name, b in self.model.named_buffers()}


class RepBranched(Branched):
    def __init__(self, model: nn.Module, sites: list[ConvBNSite], blocks: list[RepConvBN], trunk: bool = False):
        super().__init__(model, AuxKind.rep.value)
        self.sites, self.blocks, self.trunk = sites, blocks, trunk

    def branch_parameters(self) -> list[nn.Parameter]:
        return [p for block in self.blocks for p in block.branch_parameters()]

    def strong_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        params = {}
        if not self.trunk:  # default reading: only the branches learn from the strong view
            branch = {id(p) for p in self.branch_parameters()}
            params = {n: p.detach() for n, p in self.model.named_parameters() if id(p) not in branch}
        return [functional_call(self.model, {**params, **self._buffer_copies()}, (x,))]

    def restore(self, fold: bool) -> None:
        for site, block in zip(self.sites, self.blocks):
            conv, bn = block.fold() if fold else (block.conv, block.bn)
            set_submodule(self.model, site.conv_name, conv)
            set_submodule(self.model, site.bn_name, bn)

    def _detach(self) -> AuxRecord:
        record = AuxRecord(self.kind, sum(b.branch_count() for b in self.blocks),
                           sum(p.numel() for p in self.branch_parameters()))
        self.restore(fold=True)
        return record


class HeadsBranched(Branched):
    def __init__(self, model: nn.Module, stages: list[str], heads: nn.ModuleList):
        super().__init__(model, AuxKind.heads.value)
        self.stages, self.heads = stages, heads
        self.features: dict[str, torch.Tensor] = {}
        self.capturing = False
        self.handles = [model.get_submodule(name).register_forward_hook(self._hook(name)) for name in stages]

    def _hook(self, name: str) -> Callable:
        def capture(module, inputs, output):
            if self.capturing:  # the main (weak) forward keeps nothing
                self.features[name] = output
                if len(self.features) == len(set(self.stages)):
                    raise _StopForward

        capture.__dict__["_edgecomp_aux"] = True  # lets assert_plain find a hook left behind
        return capture

    def branch_parameters(self) -> list[nn.Parameter]:
        return list(self.heads.parameters())

    def strong_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.features, self.capturing = {}, True
        try:
            functional_call(self.model, self._buffer_copies(), (x,))
        except _StopForward:
            pass
        finally:
            self.capturing = False
        features, self.features = self.features, {}
        return [head(features[name]) for name, head in zip(self.stages, self.heads)]

    def _detach(self) -> AuxRecord:
        for handle in self.handles:
            handle.remove()
        delattr(self.model, HEADS_ATTR)
        return AuxRecord(self.kind, len(self.heads), sum(p.numel() for p in self.heads.parameters()))


# ---------------------------------------------------------------- public entry points


def attach(model: nn.Module, cfg: AuxSection, example: torch.Tensor) -> Branched:
    """Attach cfg.kind's branches to `model` (mutated); the model computes exactly what it did."""
    if isinstance(cfg, RepAux):
        return _attach_rep(model, cfg, example)
    if isinstance(cfg, HeadsAux):
        return _attach_heads(model, cfg, example)
    raise ValueError(f"attach: aux.kind is {cfg.kind.value}; nothing to attach")


def detach(branched: Branched) -> tuple[nn.Module, AuxRecord]:
    """rep: fold every branch exactly into its conv+BN; heads: drop hooks and heads. Returns the plain model."""
    if not branched.attached:
        raise ValueError("detach: these branches were already detached")
    record = branched._detach()
    branched.attached = False
    return branched.model, record


def _attach_rep(model: nn.Module, cfg: RepAux, example: torch.Tensor) -> RepBranched:
    sites = traced_pairs(model, candidate_pairs(model), example)
    if not sites:
        raise RecipeError(f"aux.kind: rep needs k×k Conv2d layers followed by BatchNorm2d (the only user of "
                          f"the conv's output); {type(model).__name__} has none")
    probe = torch.randn(example.shape, generator=torch.Generator().manual_seed(0)).to(example)
    before = _eval_forward(model, probe)
    blocks = []
    for site in sites:
        conv, bn = model.get_submodule(site.conv_name), model.get_submodule(site.bn_name)
        assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)  # branchable() checked the pair
        block = RepConvBN(conv, bn, cfg.identity)
        set_submodule(model, site.conv_name, block)
        set_submodule(model, site.bn_name, nn.Identity())
        blocks.append(block)
    branched = RepBranched(model, sites, blocks, trunk=cfg.rep_trunk)
    if not _same(before, _eval_forward(model, probe)):  # a conv output used beyond its BN: give up cleanly
        branched.restore(fold=False)
        raise ModelError(f"aux.kind: rep cannot branch {type(model).__name__}: its forward uses conv outputs "
                         f"other than through the following BatchNorm2d")
    return branched


def _attach_heads(model: nn.Module, cfg: HeadsAux, example: torch.Tensor) -> HeadsBranched:
    if hasattr(model, HEADS_ATTR):
        raise ModelError(f"aux.kind: heads: the model already has an attribute {HEADS_ATTR!r}")
    stages, shapes, out = _heads_at(model, cfg, example)
    if out.dim() != 2:
        raise ModelError(f"aux.kind: heads needs (B, classes) logits; {type(model).__name__} gives {tuple(out.shape)}")
    heads = nn.ModuleList(AuxHead(shapes[name][1], out.shape[1]) for name in stages)
    weight = next(model.parameters())
    heads.to(device=weight.device, dtype=weight.dtype)
    model.add_module(HEADS_ATTR, heads)  # a submodule, so model.parameters() feeds them to the optimizer
    return HeadsBranched(model, stages, heads)


def strong_loss(outputs: list[torch.Tensor], labels: torch.Tensor, weak_logits: Optional[torch.Tensor] = None,
                head_kd: float = 0.0, temperature: float = 4.0, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean over the strong outputs of CE + head_kd·KD from the main head's (detached) weak-view logits.
    The pipeline's loss is `edgecomp.compression.objective.Objective` (which adds the teacher terms); this is its
    teacher-free core, for using the branches outside a run."""
    from .objective import kd_loss  # lazily: objective is the owner of the distillation term

    losses = []
    for logits in outputs:
        loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
        if head_kd > 0 and weak_logits is not None:
            loss = loss + head_kd * kd_loss(logits, weak_logits.detach(), temperature)
        losses.append(loss)
    return torch.stack(losses).mean()


def assert_plain(model: nn.Module, reference_structure: dict, reference_params: int,
                 macs_fn: Optional[Callable[[nn.Module], int]] = None, reference_macs: Optional[int] = None,
                 reference_names: Optional[list[str]] = None) -> None:
    """Raise PlainModelError unless `model` is exactly as plain as the model the branches were attached to.

    reference_structure: `model_structure(plain)`; reference_params: its parameter count; macs_fn(model) -> MACs
    (e.g. `lambda m: measure_size(m, example).macs`), compared with reference_macs when both are given.
    """
    if macs_fn is not None and reference_macs is None:
        raise ValueError("assert_plain: macs_fn needs reference_macs (the plain model's MACs) to compare with")
    problems = []
    leftovers = [n for n, m in model.named_modules() if isinstance(m, (RepConvBN, AuxHead))]
    hooks = [n for n, m in model.named_modules() if any(getattr(h, "_edgecomp_aux", False)
                                                        for h in m._forward_hooks.values())]
    if leftovers or hooks:
        problems.append(f"auxiliary modules or hooks left at {', '.join((leftovers + hooks)[:3])}")
    structure = model_structure(model)
    if structure != reference_structure:
        changed = sorted(n for n in structure.keys() | reference_structure.keys()
                         if structure.get(n) != reference_structure.get(n))
        problems.append(f"structure differs at {', '.join(changed[:3])}")
    if reference_names is not None and [n for n, _ in model.named_parameters()] != reference_names:
        problems.append("parameter names differ")
    params = sum(p.numel() for p in model.parameters())
    if params != reference_params:
        problems.append(f"{params} parameters instead of {reference_params}")
    macs = macs_fn(model) if macs_fn is not None else reference_macs
    if macs != reference_macs:
        problems.append(f"{macs} MACs instead of {reference_macs}")
    if problems:
        raise PlainModelError("the model after aux.detach is not the plain model: " + "; ".join(problems))


# ---------------------------------------------------------------- helpers


def _traced_forward(model: nn.Module, example: torch.Tensor, on_output: dict[str, Callable],
                    on_input: dict[str, Callable], grad: bool = False) -> torch.Tensor:
    """An `_eval_forward` that shows named modules' outputs / first inputs to callbacks."""
    module = model.get_submodule
    handles = [module(n).register_forward_hook(lambda m, i, o, f=f: f(o)) for n, f in on_output.items()]
    handles += [module(n).register_forward_pre_hook(lambda m, i, f=f: f(i[0])) for n, f in on_input.items()]
    try:
        return _eval_forward(model, example, grad)
    finally:
        for handle in handles:
            handle.remove()


def _eval_forward(model: nn.Module, x: torch.Tensor, grad: bool = False) -> torch.Tensor:
    """A forward that changes nothing: eval mode (no BN statistics update), mode restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.set_grad_enabled(grad):
            return model(x)
    finally:
        model.train(was_training)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool((a - b).abs().max() <= 1e-5 * (1 + a.abs().max()))
