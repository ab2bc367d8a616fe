import json

import pytest
import torch
import torch.nn as nn
from conftest import run_cli, tiny_recipe, tiny_recipe_dict

from edgecomp import compress
from edgecomp.compression.augment import Augmenter
from edgecomp.compression.objective import Objective, Views
from edgecomp.compression.teacher import Teacher, calibrate, choose_from_curve, difficulty, sample_weights, tau
from edgecomp.compression.train import InputSpec, TrainJob, train
from edgecomp.core.data import TensorBatches, read_fashion_mnist
from edgecomp.core.recipe import AugmentSection, CalibrationSection, ModelSection, OptimSettings, TeacherSection


class NearestNeighbour(nn.Module):
    """A teacher that is right on the clean images it stores: logits = -scale * distance to each class."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, scale: float = 1.0):
        super().__init__()
        self.register_buffer("memory", images.flatten(1))
        self.register_buffer("labels", labels)
        self.scale = scale

    def forward(self, x):
        dist = torch.cdist(x.flatten(1), self.memory)
        per_class = torch.stack([dist[:, self.labels == c].min(1).values for c in range(10)], dim=1)
        return -self.scale * per_class


@pytest.fixture(scope="module")
def fashion(fashion_root):
    images, labels = read_fashion_mnist(fashion_root, train=False)
    spec = InputSpec.create(ModelSection(in_channels=1, input_size=28), (0.2860,), (0.3530,), torch.device("cpu"))
    return images[:200], labels[:200], spec


@pytest.fixture(scope="module")
def oracle(fashion):
    images, labels, spec = fashion
    return Teacher(NearestNeighbour(spec.prepare(images), labels))


AUG = Augmenter(AugmentSection(policy="randaugment", flip=False, crop_padding=0))  # M alone: no erasing


def mean_difficulty(teacher, images, labels, spec, magnitude, augment=AUG):
    inputs = spec.prepare(images, augment, magnitude, torch.Generator().manual_seed(0))
    return float(difficulty(teacher.logits(inputs), labels).mean())


def test_right_teacher_gives_zero_difficulty_on_clean_data(fashion, oracle):
    images, labels, spec = fashion
    d = difficulty(oracle.logits(spec.prepare(images)), labels)
    assert float(d.max()) < 1e-3
    # policy none leaves the images alone at any M (RandAugment at M = 0 does not: autocontrast, equalize
    # and solarize-of-white act at every magnitude, as in torchvision)
    untouched = Augmenter(AugmentSection(policy="none", flip=False, crop_padding=0))
    assert mean_difficulty(oracle, images, labels, spec, 30.0, untouched) < 1e-3


def test_difficulty_grows_with_magnitude_on_fashion_mnist(fashion, oracle):
    images, labels, spec = fashion
    values = [mean_difficulty(oracle, images, labels, spec, m) for m in (0, 9, 18, 30)]
    assert values == sorted(values), values
    assert values[-1] > values[0] + 0.1


def test_weights_follow_difficulty_and_size():
    cfg = TeacherSection(difficulty={"tau_dense": 0.9, "tau_min": 0.5}).difficulty
    d = torch.tensor([0.0, 0.5, 0.8, 1.0])
    dense, small = sample_weights(d, cfg, 1.0), sample_weights(d, cfg, 0.2)
    assert dense.tolist()[:3] == [1.0, 1.0, 1.0] and dense[3] == pytest.approx(cfg.min_weight)
    assert (small <= dense).all() and small[2] < 1.0  # a small model gives up on hard samples sooner
    assert tau(cfg, 1.0) == cfg.tau_dense and tau(cfg, 0.0) == cfg.tau_min


class Recorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return self.fc(x.flatten(1))


def test_filter_replaces_hard_samples_and_keeps_the_batch(fashion, oracle):
    images, labels, spec = fashion
    weak = spec.prepare(images, AUG, 30.0, torch.Generator().manual_seed(1))
    clean = spec.prepare(images)
    cfg = TeacherSection(difficulty={"mode": "filter", "tau_dense": 0.3, "tau_min": 0.3})
    objective = Objective(cfg, 0.5, oracle)
    model = Recorder()
    objective(model, Views(weak, labels, clean=clean))
    fed = model.seen[0]
    assert fed.shape == weak.shape  # nothing dropped
    hard = difficulty(oracle.logits(weak), labels, oracle.logits(clean)) > 0.3  # the confidence the augmentation cost
    assert 0 < int(hard.sum()) < len(labels)
    assert torch.equal(fed[hard], clean[hard]) and torch.equal(fed[~hard], weak[~hard])
    assert objective.stats.filtered == int(hard.sum())


def test_filter_epoch_sees_every_sample(fashion, oracle):
    images, labels, spec = fashion
    data = TensorBatches(images, labels, 50)
    cfg = TeacherSection(difficulty={"mode": "filter", "tau_dense": 0.2, "tau_min": 0.2})
    objective = Objective(cfg, 0.5, oracle)
    job = TrainJob(data=data, spec=spec, augment=AUG, magnitude=20.0, optim=OptimSettings(lr=0.01), epochs=1, seed=0,
                   label="t", objective=objective)
    stats = train(Recorder(), job)
    assert stats[0].images == len(images)
    assert stats[0].teacher.filtered > 0 and stats[0].teacher.samples == len(images)


def calibrated(oracle, fashion, size, dense=12.0, ceiling=30.0, target_small=0.95):
    images, labels, spec = fashion
    cfg = CalibrationSection(samples=200, grid=[float(m) for m in range(0, 31, 5)], target_small=target_small)
    return calibrate(oracle, images, labels, spec.prepare, AUG, cfg, size, 0, dense, ceiling)


@pytest.mark.e2e
def test_teacher_schedule_is_anchored_at_the_dense_magnitude(fashion, oracle):
    for dense in (0.0, 7.0, 12.0, 30.0):
        at_dense = calibrated(oracle, fashion, 1.0, dense=dense)
        assert at_dense.magnitude == dense, at_dense.as_dict()
        assert dense in at_dense.curve and at_dense.target_fraction == pytest.approx(at_dense.dense_fraction)


@pytest.mark.e2e
def test_teacher_schedule_never_gives_a_smaller_model_more(fashion, oracle):
    chosen = [calibrated(oracle, fashion, s).magnitude for s in (1.0, 0.75, 0.5, 0.25, 0.1, 0.05)]
    assert chosen[0] == 12.0
    assert all(a >= b for a, b in zip(chosen, chosen[1:])), chosen
    assert chosen[-1] < chosen[0]  # this teacher does lose accuracy under augmentation: small models get less
    # a looser target for small models may not push them above the dense magnitude either
    assert calibrated(oracle, fashion, 0.1, target_small=0.1).magnitude <= 12.0
    assert calibrated(oracle, fashion, 0.5, ceiling=5.0).magnitude <= 5.0  # the previous step's magnitude caps it


def test_choose_from_curve_uses_the_passing_prefix():
    curve = {0.0: 0.9, 5.0: 0.85, 10.0: 0.6, 15.0: 0.82}  # a noisy tail must not be chosen
    assert choose_from_curve(curve, 0.9, 0.9) == 5.0
    assert choose_from_curve(curve, 0.9, 0.99) == 0.0
    assert choose_from_curve(curve, 0.9, 0.5) == 15.0


class Confused(nn.Module):
    """A teacher that calls every image class 0, whatever augmentation did to it."""

    def forward(self, x):
        logits = torch.zeros(len(x), 10)
        logits[:, 0] = 5.0
        return logits


def test_drop_difficulty_ignores_a_wrong_teacher_and_handles_its_samples_explicitly(fashion):
    images, labels, spec = fashion
    teacher = Teacher(Confused())
    weak, clean = spec.prepare(images, AUG, 20.0, torch.Generator().manual_seed(0)), spec.prepare(images)
    wrong = labels != 0
    old = difficulty(teacher.logits(weak), labels)
    assert (old[wrong] > 0.99).all()  # the old reading calls every misclassified sample "hard"
    assert torch.equal(difficulty(teacher.logits(weak), labels, teacher.logits(clean)), torch.zeros(len(labels)))
    for handling, expected in (("keep", 1.0), ("exclude", 0.0)):
        cfg = TeacherSection(difficulty={"mode": "weight", "teacher_wrong": handling})
        objective = Objective(cfg, 0.5, teacher)
        weights = objective._weights(teacher.logits(weak), objective._reference(Views(weak, labels, clean=clean)),
                                     labels)
        assert torch.equal(weights[wrong], torch.full((int(wrong.sum()),), expected))
        assert torch.equal(weights[~wrong], torch.ones(int((~wrong).sum())))  # no drop: full weight
        assert objective.stats.as_dict()["teacher_wrong_fraction"] == pytest.approx(float(wrong.float().mean()))


def test_teacher_is_frozen_and_runs_without_autograd(fashion):
    images, labels, spec = fashion
    source = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10), nn.BatchNorm1d(10))
    teacher = Teacher(source)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    objective = Objective(TeacherSection(kd_weight=0.5, difficulty={"mode": "weight"}), 0.5, teacher)
    job = TrainJob(data=TensorBatches(images, labels, 50), spec=spec, augment=AUG, magnitude=9.0,
                   optim=OptimSettings(lr=0.1), epochs=2, seed=0, label="t", objective=objective)
    student = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    train(student, job)
    after = teacher.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN statistics too
    out = teacher.logits(spec.prepare(images[:4]))
    assert not out.requires_grad and out.grad_fn is None
    assert all(p.grad is None and not p.requires_grad for p in teacher.model.parameters())


@pytest.mark.e2e
def test_pipeline_with_teacher_schedule_weights_and_kd(tmp_path, fashion_root):
    recipe = tiny_recipe(augment={"policy": "randaugment", "schedule": {"kind": "teacher", "dense": 9}},
                         teacher={"kd_weight": 0.5, "difficulty": {"mode": "weight"},
                                  "calibration": {"samples": 64, "grid": [0, 10, 20, 30]}})
    result = compress(recipe, out=tmp_path / "t")
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["magnitude"] == 9.0 and "calibration" not in rows[0]
    magnitudes = [row["magnitude"] for row in rows]
    assert all(a >= b for a, b in zip(magnitudes, magnitudes[1:])), magnitudes
    for row in rows[1:]:
        assert set(row["calibration"]["curve"]) == {"0.0", "9.0", "10.0", "20.0", "30.0"}
        assert row["calibration"]["dense_magnitude"] == 9.0
        assert row["magnitude"] == row["calibration"]["chosen"]
        assert 0 <= row["mean_difficulty"] <= 1 and row["weight_min"] <= row["weight_max"] <= 1
    assert "teacher_curves.png" in result.report_path.read_text()
    assert (result.run_dir / "teacher_curves.png").is_file()


@pytest.mark.e2e
def test_mismatched_teacher_checkpoint_exits_2(tmp_path, write_recipe, fashion_root):
    from edgecomp.core.models import build_model

    wrong_classes = build_model(ModelSection(arch="cifar_resnet8", num_classes=5, in_channels=1, input_size=28))
    classes_path = tmp_path / "teacher5.pt"
    torch.save(wrong_classes.state_dict(), classes_path)
    path = write_recipe(tiny_recipe_dict(teacher={"kd_weight": 0.5, "weights": str(classes_path)}))
    result = run_cli("compress", "--recipe", str(path), "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "teacher.weights" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "r").exists()

    from edgecomp.core.models import model_payload

    rgb_cfg = ModelSection(arch="cifar_resnet8", num_classes=10, in_channels=3, input_size=28)
    shape_path = tmp_path / "teacher_rgb.pt"
    torch.save(model_payload(build_model(rgb_cfg), rgb_cfg), shape_path)
    path = write_recipe(tiny_recipe_dict(teacher={"kd_weight": 0.5, "weights": str(shape_path)}), "r2.yaml")
    result = run_cli("compress", "--recipe", str(path), "--out", str(tmp_path / "r2"))
    assert result.returncode == 2 and "teacher.weights" in result.stderr and "input" in result.stderr
    assert not (tmp_path / "r2").exists()
