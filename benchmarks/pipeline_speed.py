"""The pipeline's own speed, side by side in one process (interleaved repeats, medians):

1. fine-tune throughput of edgecomp's training loop (`edgecomp.compression.train.train`: views, objective, progress bar,
   cosine LR) vs a plain PyTorch loop with the same model, data, optimizer and augmentation call;
   and the cost of findings B and C in that loop: with `rep` branches, with `heads`, and with the teacher
   (KD + difficulty weights; KD alone), each as a ratio to the plain edgecomp loop, on the quickstart model pruned to
   30% of its MACs (the quickstart's smallest step);
2. augmentation throughput: edgecomp's batched RandAugment on uint8 tensors vs torchvision's
   per-image RandAugment on PIL images, at the same magnitude.

    python benchmarks/pipeline_speed.py [--repeats 7]   # writes benchmarks/results/pipeline_speed.{json,md}
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms as T

from edgecomp.compression.augment import Augmenter
from edgecomp.compression.auxiliary import attach
from edgecomp.compression.objective import Objective
from edgecomp.compression.prune import Size, measure_size, prune_to
from edgecomp.compression.teacher import Teacher
from edgecomp.compression.train import InputSpec, TrainJob, console, make_optimizer, train
from edgecomp.core.data import TensorBatches, read_fashion_mnist
from edgecomp.core.models import build_model
from edgecomp.core.recipe import AugmentSection, ModelSection, OptimSettings, PruneSection, TeacherSection, aux_section

RESULTS = Path(__file__).resolve().parent / "results"
AUX_VARIANTS = {"rep": aux_section(kind="rep"), "rep_trunk": aux_section(kind="rep", rep_trunk=True),
                "heads": aux_section(kind="heads")}
IMAGES, REPEATS, MAGNITUDE = 2048, 7, 9.0


def setup():
    images, labels = read_fashion_mnist(Path("/usr/share/datasets/fashion-mnist"), train=True)
    data = TensorBatches(images[:IMAGES], labels[:IMAGES], 128)
    cfg = ModelSection(arch="cifar_resnet20", in_channels=1, input_size=28)
    spec = InputSpec.create(cfg, (0.2860,), (0.3530,), torch.device("cpu"))
    return data, cfg, spec, Augmenter(AugmentSection(policy="randaugment"))  # the default is crop + flip only


def small_model(cfg, spec):
    """The quickstart model pruned once to 30% of its MACs (weights as initialised: speed only)."""
    torch.manual_seed(0)
    model = build_model(cfg)
    dense = measure_size(model, spec.example())
    prune_to(model, spec.example(), PruneSection(target={"macs": 0.3}), Size(int(dense.macs * 0.3), 0), 10)
    return model


def edgecomp_epoch(data, cfg, spec, augment, variant: str = "plain", small=None) -> float:
    torch.manual_seed(0)
    model = copy.deepcopy(small) if small is not None else build_model(cfg)
    teacher_cfg = {"teacher": TeacherSection(kd_weight=0.5, difficulty={"mode": "weight"}),
                   "kd": TeacherSection(kd_weight=0.5)}.get(variant, TeacherSection())
    teacher = Teacher(build_model(cfg)) if variant in ("teacher", "kd") else None  # the dense model, as in a run
    objective, strong = Objective(teacher_cfg, 0.3, teacher), None
    if variant in AUX_VARIANTS:
        branched = attach(model, AUX_VARIANTS[variant], spec.example())
        objective = Objective(teacher_cfg, 0.3, teacher, branched=branched)  # aux weight 1: cost does not depend on it
        model, strong = branched.model, 9.0
    job = TrainJob(data=data, spec=spec, augment=augment, magnitude=MAGNITUDE, optim=OptimSettings(lr=0.05), epochs=1,
                   seed=0, label="bench", objective=objective, strong_magnitude=strong)
    start = time.perf_counter()
    train(model, job)
    return IMAGES / (time.perf_counter() - start)


def plain_epoch(data, cfg, spec, augment) -> float:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optim = OptimSettings(lr=0.05)
    optimizer, generator = make_optimizer(model, optim), torch.Generator().manual_seed(0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=data.num_batches())
    start = time.perf_counter()
    for raw, labels in data.batches(0):
        loss = F.cross_entropy(model(spec.prepare(raw, augment, MAGNITUDE, generator)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return IMAGES / (time.perf_counter() - start)


def batched_augment(images, augment) -> float:
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for begin in range(0, len(images), 128):
        augment(images[begin:begin + 128], MAGNITUDE, generator)
    return len(images) / (time.perf_counter() - start)


def pil_augment(images) -> float:
    pipeline = T.Compose([T.RandomCrop(28, padding=2), T.RandomHorizontalFlip(),
                          T.RandAugment(num_ops=2, magnitude=int(MAGNITUDE)), T.PILToTensor()])
    pictures = [T.functional.to_pil_image(image) for image in images]  # decoding is not timed
    start = time.perf_counter()
    for picture in pictures:
        pipeline(picture)
    return len(images) / (time.perf_counter() - start)


COST_VARIANTS = ("plain", *AUX_VARIANTS, "teacher", "kd")
COST_ROWS = [("rep", "with rep branches"),
             ("rep_trunk", "with rep branches, strong view trains the trunk too (rep_trunk)"),
             ("heads", "with aux heads"), ("teacher", "with teacher (KD + weights)"),
             ("kd", "with distillation alone (teacher.kd_weight 0.5)")]


def measure(repeats: int) -> dict[str, list[float]]:
    """img/s of every measure, `repeats` times, interleaved so drifts in machine load hit all of them alike."""
    data, cfg, spec, augment = setup()
    small = small_model(cfg, spec)
    raw = {name: [] for name in ("edgecomp", "plain", "batched", "pil", *(f"small_{v}" for v in COST_VARIANTS))}
    for _ in range(repeats):
        raw["edgecomp"].append(edgecomp_epoch(data, cfg, spec, augment))
        raw["plain"].append(plain_epoch(data, cfg, spec, augment))
        raw["batched"].append(batched_augment(data.images, augment))
        raw["pil"].append(pil_augment(data.images))
        for variant in COST_VARIANTS:
            raw[f"small_{variant}"].append(edgecomp_epoch(data, cfg, spec, augment, variant, small))
    return raw


def summarise(raw: dict[str, list[float]], repeats: int) -> dict:
    """Medians, and each cost as the median of its per-repeat ratios to plain (paired: run back to back)."""
    med = {k: statistics.median(v) for k, v in raw.items()}
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "host": f"{platform.platform()}, {torch.get_num_threads()} torch threads",
              "images": IMAGES, "repeats": repeats, "magnitude": MAGNITUDE, "raw": raw, "median": med,
              "loop_ratio": med["edgecomp"] / med["plain"], "augment_speedup": med["batched"] / med["pil"]}
    for variant, _ in COST_ROWS:
        ratios = [a / b for a, b in zip(raw[f"small_{variant}"], raw["small_plain"])]
        result[f"{variant}_ratio"] = statistics.median(ratios)
        result[f"{variant}_ratio_range"] = [min(ratios), max(ratios)]
    return result


def markdown(result: dict) -> str:
    med = result["median"]
    rows = [f"| fine-tune img/s at 30% MACs: {words} vs plain | {med[f'small_{variant}']:.0f} | "
            f"{med['small_plain']:.0f} | {result[f'{variant}_ratio']:.3f} "
            f"({result[f'{variant}_ratio_range'][0]:.3f}–{result[f'{variant}_ratio_range'][1]:.3f}) |"
            for variant, words in COST_ROWS]
    return "\n".join([
        "# Pipeline speed", "", "`python benchmarks/pipeline_speed.py` — " + result["date"], "",
        f"Host: {result['host']}. ResNet-20 (cifar_resnet20), Fashion-MNIST 28 px, {IMAGES} images per epoch, "
        f"batch 128, RandAugment N=2 M={MAGNITUDE:g} (torchvision's kernels, no erasing), {result['repeats']} "
        "interleaved repeats, medians; a cost ratio is the median of the per-repeat ratios to plain (range in "
        "brackets); rep and heads must reach 0.45 of plain (issue 12).", "",
        "| measure | edgecomp | baseline | ratio |", "|---|---:|---:|---:|",
        f"| fine-tune img/s: edgecomp loop vs plain PyTorch loop | {med['edgecomp']:.0f} | {med['plain']:.0f} "
        f"| {result['loop_ratio']:.3f} |",
        f"| augmentation img/s: batched tensors vs per-image PIL (torchvision) | {med['batched']:.0f} "
        f"| {med['pil']:.0f} | {result['augment_speedup']:.1f}× |",
        *rows, "",
        "rep and heads make a second (strong) view per batch and run it through the branches; the teacher "
        "runs one extra forward pass of the dense model per batch.", "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=REPEATS, help="interleaved repeats of every measure")
    args = parser.parse_args()
    console.quiet = True
    result = summarise(measure(args.repeats), args.repeats)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pipeline_speed.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "pipeline_speed.md").write_text(markdown(result))
    print((RESULTS / "pipeline_speed.md").read_text())


if __name__ == "__main__":
    main()
