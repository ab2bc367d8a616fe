import gzip
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from edgecomp.core.data import adapt_batch, load_data, parse_idx, read_cifar, read_fashion_mnist, split_indices
from edgecomp.core.errors import DataError
from edgecomp.core.recipe import DataSection, ModelSection


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx_set(root, count=20, gz=True):
    rng = np.random.default_rng(0)
    opener = gzip.open if gz else open
    suffix = ".gz" if gz else ""
    for prefix in ("train", "t10k"):
        with opener(root / f"{prefix}-images-idx3-ubyte{suffix}", "wb") as f:
            f.write(idx_bytes(rng.integers(0, 255, (count, 28, 28))))
        with opener(root / f"{prefix}-labels-idx1-ubyte{suffix}", "wb") as f:
            f.write(idx_bytes(np.arange(count) % 10))


def test_real_fashion_mnist(fashion_root):
    images, labels = read_fashion_mnist(fashion_root, train=True)
    assert images.shape == (60000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (60000,) and set(labels.unique().tolist()) == set(range(10))
    test_images, _ = read_fashion_mnist(fashion_root, train=False)
    assert len(test_images) == 10000


@pytest.mark.parametrize("gz", [True, False])
def test_idx_gz_or_raw(tmp_path, gz):
    write_idx_set(tmp_path, gz=gz)
    images, labels = read_fashion_mnist(tmp_path, train=True)
    assert images.shape == (20, 1, 28, 28) and labels.tolist()[:3] == [0, 1, 2]


def test_truncated_and_foreign_idx():
    raw = idx_bytes(np.zeros((3, 28, 28)))
    with pytest.raises(DataError, match="truncated"):
        parse_idx(raw[:-5], "x")
    with pytest.raises(DataError, match="not an IDX"):
        parse_idx(b"\x89PNG....", "x")


def test_missing_files_named(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        read_fashion_mnist(tmp_path, train=True)


def test_split_is_deterministic_and_disjoint():
    train_a, val_a = split_indices(1000, 0.1, seed=0)
    train_b, val_b = split_indices(1000, 0.1, seed=0)
    assert torch.equal(train_a, train_b) and torch.equal(val_a, val_b)
    assert len(val_a) == 100 and len(train_a) == 900
    assert not set(train_a.tolist()) & set(val_a.tolist())
    _, val_c = split_indices(1000, 0.1, seed=1)
    assert not torch.equal(val_a, val_c)


def test_subsets_and_held_out_test(fashion_root):
    model = ModelSection(arch="cifar_resnet8", in_channels=1, input_size=28)
    bundle = load_data(DataSection(train_subset=300, val_subset=50, test_subset=70), model)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (300, 50, 70)
    full = load_data(DataSection(), model)
    assert len(full.train) + len(full.val) == 60000 and len(full.test) == 10000
    # the subset is the head of the same deterministic split
    assert torch.equal(bundle.val.images, full.val.images[:50])


def test_adapt_batch_channels_and_size():
    gray = torch.randint(0, 255, (4, 1, 28, 28), dtype=torch.uint8)
    rgb = adapt_batch(gray, 3, 32)
    assert rgb.shape == (4, 3, 32, 32) and rgb.dtype == torch.uint8
    assert torch.equal(rgb[:, 0], rgb[:, 2])
    assert adapt_batch(rgb, 1, 32).shape == (4, 1, 32, 32)
    assert adapt_batch(gray, 1, 28) is not None and torch.equal(adapt_batch(gray, 1, 28), gray)


def test_image_folder(tmp_path):
    for split, count in (("train", 6), ("val", 2)):
        for label in ("cat", "dog"):
            folder = tmp_path / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (40, 30), (i * 20, 100, 200)).save(folder / f"{i}.png")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    model = ModelSection(arch="cifar_resnet8", num_classes=2, in_channels=3, input_size=32)
    bundle = load_data(DataSection(dataset="imagefolder", root=str(tmp_path), val_fraction=0.25, batch_size=4), model)
    assert len(bundle.train) + len(bundle.val) == 12 and len(bundle.test) == 4
    images, labels = next(iter(bundle.train.batches(0)))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8
    # the report names each split: the val/ folder is the held-out test, validation a share of train/
    assert bundle.has_test and bundle.splits["test"] == f"{tmp_path / 'val'}/: 4 images"
    assert bundle.splits["val"] == f"0.25 of {tmp_path / 'train'}/ (split_seed 0): 3 images"


def test_image_folder_without_a_held_out_split(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for i in range(4):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / label / f"{i}.png")
    model = ModelSection(arch="cifar_resnet8", num_classes=2, in_channels=3, input_size=16)
    bundle = load_data(DataSection(dataset="imagefolder", root=str(tmp_path), val_fraction=0.25), model)
    assert not bundle.has_test and len(bundle.test) == 0
    assert bundle.splits["test"].startswith("none: no held-out test split")


def test_image_folder_errors(tmp_path):
    model = ModelSection(arch="cifar_resnet8", num_classes=2)
    with pytest.raises(DataError, match="no class sub-folders"):
        load_data(DataSection(dataset="imagefolder", root=str(tmp_path)), model)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(DataError, match="holds no image files"):
        load_data(DataSection(dataset="imagefolder", root=str(tmp_path)), model)
    Image.new("RGB", (8, 8)).save(tmp_path / "b" / "ok.png")
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="broken.png: not a readable image"):  # found before any training
        load_data(DataSection(dataset="imagefolder", root=str(tmp_path), val_fraction=0.5), model)


def test_missing_root_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(DataSection(root=str(tmp_path / "nope")), ModelSection())


def test_class_count_must_match(fashion_root):
    with pytest.raises(DataError, match="model.num_classes: is 5 but the dataset has 10"):
        load_data(DataSection(), ModelSection(num_classes=5))


def test_cifar_layout_and_pickle_allow_list(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": np.zeros((4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(entry))
    images, labels = read_cifar(tmp_path, True, 10)
    assert images.shape == (20, 3, 32, 32) and labels.tolist()[:4] == [0, 1, 2, 3]

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Payload(), "labels": []}))
    with pytest.raises(DataError, match="refusing to load"):
        read_cifar(tmp_path, False, 10)
    assert not (tmp_path / "pwned").exists()
