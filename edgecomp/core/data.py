"""Datasets as batches of uint8 image tensors.

Fashion-MNIST (IDX files) and CIFAR (torchvision's python layout) are read
into memory once; ImageFolder decodes files lazily through a DataLoader.
Every source yields `(uint8 N×C×H×W, int64 labels)` at the dataset's own size;
`adapt_batch` brings a batch to the model's channels and input size, and
`normalize` turns it into the float input the model sees. Augmentation works
on the uint8 batch in between (see `augment`).
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataError
from .recipe import FASHION_MNIST_ROOT, DataSection, Dataset, ModelSection

MEAN_STD = {
    Dataset.fashion_mnist: ((0.2860,), (0.3530,)),
    Dataset.cifar10: ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    Dataset.cifar100: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    Dataset.imagefolder: ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


class BatchSource(Protocol):
    def __len__(self) -> int: ...

    def num_batches(self, shard=None) -> int: ...

    def batches(self, epoch_seed: Optional[int], shard=None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


class TensorBatches:
    """In-memory uint8 images; shuffled by a seed given per epoch (None: in order)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int):
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def __len__(self) -> int:
        return len(self.labels)

    def num_batches(self, shard=None) -> int:
        if shard is None:
            return -(-len(self) // self.batch_size)
        return -(-len(epoch_order(len(self), None, shard)) // shard.local_batch(self.batch_size))

    def batches(self, epoch_seed: Optional[int] = None, shard=None):
        """In order (epoch_seed None) or shuffled; `shard` (a Dist) keeps this rank's share of the order."""
        order = epoch_order(len(self), epoch_seed, shard)
        batch_size = shard.local_batch(self.batch_size) if shard is not None else self.batch_size
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            yield self.images[index], self.labels[index]


def epoch_order(count: int, epoch_seed: Optional[int], shard=None) -> torch.Tensor:
    """The same permutation on every rank (seeded), then this rank's share: DistributedSampler's rule."""
    if epoch_seed is None:
        order = torch.arange(count)
    else:
        order = torch.randperm(count, generator=torch.Generator().manual_seed(epoch_seed))
    return shard.shard(order) if shard is not None else order


@dataclass
class DataBundle:
    """The three splits; `test` is empty when the data has no held-out split (then there is no test figure).
    `splits` says where each split came from, for the report: {"train"|"val"|"test": "source, N images"}."""

    train: TensorBatches | FolderBatches
    val: TensorBatches | FolderBatches
    test: TensorBatches | FolderBatches
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    splits: dict[str, str] = field(default_factory=dict)

    @property
    def has_test(self) -> bool:
        return len(self.test) > 0


# ---------------------------------------------------------------- readers


def _open_idx(root: Path, stem: str) -> bytes:
    for name, opener in ((stem + ".gz", gzip.open), (stem, open)):
        path = root / name
        if path.is_file():
            try:
                with opener(path, "rb") as handle:
                    return handle.read()
            except (OSError, EOFError) as exc:
                raise DataError(f"{path}: cannot read: {exc}") from None
    raise DataError(f"data.root: {root} has no {stem}[.gz] (Fashion-MNIST IDX files)")


def parse_idx(raw: bytes, source: str) -> np.ndarray:
    """IDX format: magic (0,0,dtype=0x08 uint8,ndim), big-endian dims, data."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{source}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{source}: truncated IDX header ({len(raw)} bytes)")
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int)
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"{source}: truncated or padded IDX file ({len(raw)} bytes, expected {expected})")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(dims))


def read_fashion_mnist(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    prefix = "train" if train else "t10k"
    images = parse_idx(_open_idx(root, f"{prefix}-images-idx3-ubyte"), f"{root}/{prefix}-images")
    labels = parse_idx(_open_idx(root, f"{prefix}-labels-idx1-ubyte"), f"{root}/{prefix}-labels")
    if len(images) != len(labels):
        raise DataError(f"data.root: {root}: {len(images)} images but {len(labels)} labels")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles; allow only what a dict of numpy arrays needs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def read_cifar(root: Path, train: bool, classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    folder = root / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    if not folder.is_dir():
        raise DataError(f"data.root: {root} has no {folder.name}/ (torchvision's CIFAR layout)")
    if classes == 10:
        names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    else:
        names = ["train" if train else "test"]
    images, labels = [], []
    for name in names:
        path = folder / name
        try:
            with open(path, "rb") as handle:
                entry = _ArrayUnpickler(handle, encoding="latin1").load()
        except (OSError, pickle.UnpicklingError, EOFError) as exc:
            raise DataError(f"{path}: cannot read CIFAR batch: {exc}") from None
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(entry["labels" if classes == 10 else "fine_labels"], dtype=np.int64))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


# ---------------------------------------------------------------- image folders


class FolderBatches:
    """Lazily decoded image files at a fixed size, batched by a DataLoader."""

    def __init__(self, samples: list[tuple[Path, int]], size: int, channels: int, batch_size: int, workers: int):
        self.samples, self.size, self.channels = samples, size, channels
        self.batch_size, self.workers = batch_size, workers

    def __len__(self) -> int:
        return len(self.samples)

    def num_batches(self, shard=None) -> int:
        if shard is None:
            return -(-len(self) // self.batch_size)
        return -(-len(epoch_order(len(self), None, shard)) // shard.local_batch(self.batch_size))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                resized = image.convert("L" if self.channels == 1 else "RGB").resize((self.size, self.size))
                array = np.asarray(resized, dtype=np.uint8)
        except (OSError, UnidentifiedImageError) as exc:
            raise DataError(f"{path}: not a readable image ({exc})") from None
        tensor = torch.from_numpy(array.copy())
        return (tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)), label

    def batches(self, epoch_seed: Optional[int] = None, shard=None):
        order = epoch_order(len(self), epoch_seed, shard).tolist()
        batch_size = shard.local_batch(self.batch_size) if shard is not None else self.batch_size
        # torch's stubs want a Dataset subclass; DataLoader takes any map-style dataset (__getitem__ and __len__)
        yield from torch.utils.data.DataLoader(self, batch_size=batch_size, sampler=order,  # type: ignore[arg-type]
                                               num_workers=self.workers)


def _check_image_header(path: Path) -> None:
    """Open (header only, cheap) every image up front, so a file that is no image fails before a run starts."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def scan_image_folder(folder: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    if not folder.is_dir():
        raise DataError(f"data.root: {folder} is not a folder")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"data.root: {folder} has no class sub-folders (ImageFolder layout: root/<class>/<image>)")
    samples = []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                _check_image_header(path)
                samples.append((path, label))
    if not samples:
        raise DataError(f"data.root: {folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return samples, classes


# ---------------------------------------------------------------- splitting


def split_indices(count: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic train/val split of the training set (same seed, same split)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    num_val = max(1, int(round(count * val_fraction)))
    return order[num_val:], order[:num_val]


def _take(index: torch.Tensor, limit: Optional[int]) -> torch.Tensor:
    return index if limit is None else index[:limit]


def _default_root(cfg: DataSection) -> Path:
    if cfg.root:
        return Path(cfg.root).expanduser()
    if cfg.dataset == Dataset.fashion_mnist:
        return Path(FASHION_MNIST_ROOT)
    raise DataError(f"data.root: required for dataset {cfg.dataset.value}")


def _check_root(root: Path, cfg: DataSection) -> None:
    if root.is_dir():
        return
    hint = ""
    if cfg.dataset == Dataset.fashion_mnist and str(root) == FASHION_MNIST_ROOT:
        hint = " (install it: apt-get install dataset-fashion-mnist, or set data.root to a folder of IDX files)"
    raise DataError(f"data.root: {root} does not exist{hint}")


def load_data(cfg: DataSection, model: ModelSection) -> DataBundle:
    """Build train/val/test sources. Fails with DataError before anything is written."""
    root = _default_root(cfg)
    _check_root(root, cfg)
    mean, std = MEAN_STD[cfg.dataset]
    if cfg.dataset == Dataset.imagefolder:
        return _load_folder(root, cfg, model, mean, std)
    if cfg.dataset == Dataset.fashion_mnist:
        train_x, train_y = read_fashion_mnist(root, train=True)
        test_x, test_y = read_fashion_mnist(root, train=False)
        classes = 10
    else:
        classes = 10 if cfg.dataset == Dataset.cifar10 else 100
        train_x, train_y = read_cifar(root, True, classes)
        test_x, test_y = read_cifar(root, False, classes)
    _check_classes(classes, model)
    train_idx, val_idx = split_indices(len(train_y), cfg.val_fraction, cfg.split_seed)
    train_idx, val_idx = _take(train_idx, cfg.train_subset), _take(val_idx, cfg.val_subset)
    test_idx = _take(torch.arange(len(test_y)), cfg.test_subset)
    make = lambda x, y, idx: TensorBatches(x[idx], y[idx], cfg.batch_size)  # noqa: E731
    test_files = "t10k-* files" if cfg.dataset == Dataset.fashion_mnist else "the test batch"
    splits = _split_names(root, cfg, len(train_idx), len(val_idx), f"{root}: {test_files}", len(test_idx))
    return DataBundle(
        make(train_x, train_y, train_idx), make(train_x, train_y, val_idx), make(test_x, test_y, test_idx),
        classes, mean, std, splits,
    )


def _split_names(train_source, cfg: DataSection, train: int, val: int, test_source, test: int) -> dict[str, str]:
    """Where each split comes from and how many images it holds, in words the report prints."""
    carve = f"{cfg.val_fraction:g} of {train_source} (split_seed {cfg.split_seed})"
    return {
        "train": f"{train_source}, less the validation share: {train} images",
        "val": f"{carve}: {val} images",
        "test": f"{test_source}: {test} images" if test_source is not None and test else
                "none: no held-out test split (ImageFolder: add root/test/ or root/val/)",
    }


def _check_classes(classes: int, model: ModelSection) -> None:
    if classes != model.num_classes:
        raise DataError(f"model.num_classes: is {model.num_classes} but the dataset has {classes} classes")


def _relabel(samples, names: list[str], train_names: list[str], folder: Path) -> list[tuple[Path, int]]:
    """Held-out labels by class name, as numbered in the training folder (a missing class must not shift them)."""
    unknown = sorted(set(names) - set(train_names))
    if unknown:
        raise DataError(f"data.root: {folder} has classes the training folder lacks: {', '.join(unknown[:5])}")
    index = {name: train_names.index(name) for name in names}
    return [(path, index[names[label]]) for path, label in samples]


def _load_folder(root: Path, cfg: DataSection, model: ModelSection, mean, std) -> DataBundle:
    train_dir = root / "train" if (root / "train").is_dir() else root
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    samples, classes = scan_image_folder(train_dir)
    _check_classes(len(classes), model)
    test_samples = _relabel(*scan_image_folder(test_dir), classes, test_dir) if test_dir else []
    train_idx, val_idx = split_indices(len(samples), cfg.val_fraction, cfg.split_seed)
    pick = lambda idx: [samples[i] for i in idx.tolist()]  # noqa: E731
    make = lambda s: FolderBatches(s, model.input_size, model.in_channels, cfg.batch_size, cfg.workers)  # noqa: E731
    test = test_samples[: cfg.test_subset] if cfg.test_subset else test_samples
    train_pick, val_pick = pick(_take(train_idx, cfg.train_subset)), pick(_take(val_idx, cfg.val_subset))
    splits = _split_names(f"{train_dir}/", cfg, len(train_pick), len(val_pick), test_dir and f"{test_dir}/", len(test))
    return DataBundle(make(train_pick), make(val_pick), make(test), len(classes), mean, std, splits)


# ---------------------------------------------------------------- per batch


def adapt_batch(images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    """Bring a uint8 batch to the model's channel count and square size."""
    if images.shape[1] != channels:
        if images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1)
        elif channels == 1:
            images = images.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
        else:
            raise DataError(f"model.in_channels: cannot adapt {images.shape[1]}-channel images to {channels}")
    if images.shape[-1] != size or images.shape[-2] != size:
        resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return as_nchw(images)


def as_nchw(images: torch.Tensor) -> torch.Tensor:
    """The batch in standard N,C,H,W strides, whatever produced it.

    `.contiguous()` is not enough: a 1-channel tensor with channels-last strides (784, 1, 28, 1) already
    counts as contiguous, and PyTorch then runs every convolution in NHWC, where oneDNN's strided 1x1
    backward-weights kernel writes past its workspace when a layer has fewer input channels than the
    CPU's block (uxlfoundation/oneDNN, "1x1 convolution backward_weights writes past the rtus workspace").
    """
    if images.stride() == nchw_strides(images.shape):
        return images
    return images.clone(memory_format=torch.contiguous_format)


def nchw_strides(shape: torch.Size) -> tuple[int, ...]:
    """Row-major strides of `shape`: what a freshly allocated N,C,H,W tensor has."""
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def channel_stats(stats: tuple[float, ...], channels: int) -> torch.Tensor:
    values = list(stats)
    if len(values) != channels:
        values = [sum(values) / len(values)] * channels
    return torch.tensor(values).view(1, channels, 1, 1)


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """The float input the model sees, always in standard N,C,H,W strides (see `as_nchw`)."""
    return as_nchw((images.float() / 255.0 - mean) / std)


# ---------------------------------------------------------------- preprocessing


@dataclass
class InputSpec:
    """How a uint8 batch becomes the model's input: training, evaluation, export and bench all use it."""

    channels: int
    size: int
    mean: torch.Tensor
    std: torch.Tensor
    device: torch.device

    @classmethod
    def create(cls, model_cfg: ModelSection, mean, std, device: torch.device) -> InputSpec:
        return cls(model_cfg.in_channels, model_cfg.input_size, channel_stats(mean, model_cfg.in_channels),
                   channel_stats(std, model_cfg.in_channels), device)

    def prepare(self, images: torch.Tensor, augment=None, magnitude: float = 0.0, generator=None) -> torch.Tensor:
        images = adapt_batch(images, self.channels, self.size)
        pixels = augment(images, magnitude, generator) if augment is not None else images.float()
        return normalize(pixels, self.mean, self.std).to(self.device, non_blocking=True)

    def example(self, batch: int = 1) -> torch.Tensor:
        return torch.zeros(batch, self.channels, self.size, self.size, device=self.device)
