"""The pipeline's own speed, side by side in one process (interleaved repeats, medians):

1. fine-tune throughput of edgecomp's training loop (`edgecomp.train.train`: views, objective, progress bar,
   cosine LR) vs a plain PyTorch loop with the same model, data, optimizer and augmentation call;
2. augmentation throughput: edgecomp's batched RandAugment (+erasing) on uint8 tensors vs torchvision's
   per-image RandAugment + RandomErasing on PIL images, at the same magnitude.

    python benchmarks/pipeline_speed.py            # writes benchmarks/results/pipeline_speed.{json,md}
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms as T

from edgecomp.augment import Augmenter
from edgecomp.data import TensorBatches, read_fashion_mnist
from edgecomp.models import build_model
from edgecomp.objective import Objective
from edgecomp.recipe import AugmentSection, ModelSection, OptimSettings, TeacherSection
from edgecomp.train import InputSpec, TrainJob, console, cosine_lr, make_optimizer, train

RESULTS = Path(__file__).resolve().parent / "results"
IMAGES, REPEATS, MAGNITUDE = 4096, 3, 9.0


def setup():
    images, labels = read_fashion_mnist(Path("/usr/share/datasets/fashion-mnist"), train=True)
    data = TensorBatches(images[:IMAGES], labels[:IMAGES], 128)
    cfg = ModelSection(arch="cifar_resnet20", in_channels=1, input_size=28)
    spec = InputSpec.create(cfg, (0.2860,), (0.3530,), torch.device("cpu"))
    return data, cfg, spec, Augmenter(AugmentSection())


def edgecomp_epoch(data, cfg, spec, augment) -> float:
    torch.manual_seed(0)
    model = build_model(cfg)
    job = TrainJob(data, spec, augment, MAGNITUDE, OptimSettings(lr=0.05), 1, 0, "bench", Objective(TeacherSection()))
    start = time.perf_counter()
    train(model, job)
    return IMAGES / (time.perf_counter() - start)


def plain_epoch(data, cfg, spec, augment) -> float:
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optim = OptimSettings(lr=0.05)
    optimizer, generator = make_optimizer(model, optim), torch.Generator().manual_seed(0)
    total = data.num_batches()
    start = time.perf_counter()
    for index, (raw, labels) in enumerate(data.batches(0)):
        cosine_lr(optimizer, optim.lr, index, total)
        loss = F.cross_entropy(model(spec.prepare(raw, augment, MAGNITUDE, generator)), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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
    erase = T.RandomErasing(p=0.5 * MAGNITUDE / 30, value="random")
    pictures = [T.functional.to_pil_image(image) for image in images]  # decoding is not timed
    start = time.perf_counter()
    for picture in pictures:
        erase(pipeline(picture))
    return len(images) / (time.perf_counter() - start)


def main() -> None:
    console.quiet = True
    data, cfg, spec, augment = setup()
    loop = {"edgecomp": [], "plain": []}
    aug = {"batched": [], "pil": []}
    for _ in range(REPEATS):
        loop["edgecomp"].append(edgecomp_epoch(data, cfg, spec, augment))
        loop["plain"].append(plain_epoch(data, cfg, spec, augment))
        aug["batched"].append(batched_augment(data.images, augment))
        aug["pil"].append(pil_augment(data.images))
    med = {k: statistics.median(v) for k, v in {**loop, **aug}.items()}
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": f"{platform.platform()}, {torch.get_num_threads()} torch threads",
        "images": IMAGES, "repeats": REPEATS, "magnitude": MAGNITUDE, "raw": {**loop, **aug}, "median": med,
        "loop_ratio": med["edgecomp"] / med["plain"], "augment_speedup": med["batched"] / med["pil"],
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pipeline_speed.json").write_text(json.dumps(result, indent=1))
    (RESULTS / "pipeline_speed.md").write_text("\n".join([
        "# Pipeline speed", "", "`python benchmarks/pipeline_speed.py` — " + result["date"], "",
        f"Host: {result['host']}. ResNet-20 (cifar_resnet20), Fashion-MNIST 28 px, {IMAGES} images per epoch, "
        f"batch 128, RandAugment N=2 M={MAGNITUDE:g} + erasing, {REPEATS} interleaved repeats, medians.", "",
        "| measure | edgecomp | baseline | ratio |", "|---|---:|---:|---:|",
        f"| fine-tune img/s: edgecomp loop vs plain PyTorch loop | {med['edgecomp']:.0f} | {med['plain']:.0f} "
        f"| {result['loop_ratio']:.3f} |",
        f"| augmentation img/s: batched tensors vs per-image PIL (torchvision) | {med['batched']:.0f} "
        f"| {med['pil']:.0f} | {result['augment_speedup']:.1f}× |", "",
    ]))
    print((RESULTS / "pipeline_speed.md").read_text())


if __name__ == "__main__":
    main()
