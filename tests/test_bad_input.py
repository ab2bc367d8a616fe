"""Malformed recipes and inputs: exit code 2, one line naming the field or file, no traceback, and no run
directory created (or an existing one left byte-for-byte unchanged). Runs the CLI in-process (typer's
CliRunner through `edgecomp.cli.main`'s error handling) to keep 40 cases fast."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, tiny_recipe_dict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from edgecomp.cli import main
from edgecomp.core.errors import RecipeError
from edgecomp.core.recipe import Recipe, apply_overrides, load_recipe, validate

REFERENCE_WEIGHTS = REPO / "edgecomp" / "recipes" / "weights" / "fmnist_resnet20.pt"


def cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["edgecomp", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def merged(**changes) -> dict:
    data = tiny_recipe_dict()
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return data


def image_folder(root: Path, corrupt: bool = False, stray_file: bool = False) -> Path:
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / label / "ok.png")
    if corrupt:
        (root / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    if stray_file:
        (root / "b" / "labels.png").write_text("class,file\n")  # a text file with an image suffix
    return root


FOLDER = {"data__dataset": "imagefolder", "model__num_classes": 2}

RECIPE_CASES = {  # id: (changes, fragment the one line must contain)
    "unknown top-level key": ({"colour": "red"}, "colour: unknown key"),
    "unknown nested key": ({"model__depth": 3}, "model.depth: unknown key"),
    "unknown deep key": ({"augment__schedule__slope": 1}, "augment.schedule.slope: unknown key"),
    "section given as a string": ({"model": "resnet18"}, "model: "),
    "steps not a number": ({"prune__steps": "three"}, "prune.steps: "),
    "batch size a list": ({"data__batch_size": [1, 2]}, "data.batch_size: "),
    "target 1.0": ({"prune__target": {"macs": 1.0}}, "prune.target.macs: must be < 1"),
    "target 1.5": ({"prune__target": {"macs": 1.5}}, "prune.target.macs: must be < 1"),
    "target 0": ({"prune__target": {"macs": 0}}, "prune.target.macs: must be > 0"),
    "target negative": ({"prune__target": {"macs": -0.2}}, "prune.target.macs: must be > 0"),
    "two targets": ({"prune__target": {"macs": 0.5, "params": 0.5}}, "prune.target: give one of macs, params, latency or latency_ms"),
    "zero steps": ({"prune__steps": 0}, "prune.steps: must be >= 1 (got 0)"),
    "negative dense epochs": ({"dense__epochs": -1}, "dense.epochs: must be >= 0"),
    "negative fine-tune epochs": ({"finetune__epochs_per_step": -3}, "finetune.epochs_per_step: must be >= 0"),
    "magnitude 31": ({"augment__schedule__dense": 31}, "augment.schedule.dense: must be <= 30 (got 31)"),
    "negative min magnitude": ({"augment__schedule": {"kind": "linear", "min": -1}}, "augment.schedule.min: must be >= 0"),
    "min on a constant schedule": ({"augment__schedule__min": 2}, "augment.schedule.min: unknown key for kind constant"),
    "rep field on heads": ({"aux": {"kind": "heads", "identity": False}}, "aux.identity: unknown key for kind heads"),
    "steps schedule too short": ({"augment__schedule": {"kind": "steps", "values": [3]}},
                                 "augment.schedule.values: needs 2 values"),
    "steps value 31": ({"augment__schedule": {"kind": "steps", "values": [3, 31]}},
                       "augment.schedule.values.1: must be <= 30 (got 31)"),
    "unknown policy": ({"augment__policy": "autoaugment"}, "augment.policy: must be one of"),
    "unknown dataset": ({"data__dataset": "mnist"}, "data.dataset: must be one of"),
    "val fraction 1.5": ({"data__val_fraction": 1.5}, "data.val_fraction: must be < 1"),
    "one class": ({"model__num_classes": 1}, "model.num_classes: must be >= 2"),
    "input 8 px": ({"model__input_size": 8}, "model.input_size: must be >= 16"),
    "kd weight 1.5": ({"teacher__kd_weight": 1.5}, "teacher.kd_weight: must be <= 1"),
    "temperature 0": ({"teacher__temperature": 0}, "teacher.temperature: must be > 0"),
    "unknown importance": ({"prune__importance": "magnitude"}, "prune.importance: must be one of"),
    "round_to 0": ({"prune__round_to": 0}, "prune.round_to: must be >= 1"),
    "name escaping runs/": ({"name": "../evil"}, "name: "),
    "negative seed": ({"seed": -1}, "seed: must be >= 0"),
    "unknown aux kind": ({"aux__kind": "mystery"}, "aux.kind: must be one of 'none', 'rep', 'heads' (got 'mystery')"),
    "calibration grid 40": ({"teacher__calibration__grid": [0, 40]}, "teacher.calibration.grid"),
    "unknown model": ({"model__arch": "resnet81"}, "model.arch: unknown model 'resnet81'"),
    "model kwargs refused": ({"model__kwargs": {"colour": 1}}, "model.kwargs: cifar_resnet8 does not accept"),
    "ignored layer unknown": ({"prune__ignored_layers": ["layer9"]}, "prune.ignored_layers: no module named"),
    "data root missing": ({"data__root": "/nonexistent/fashion"}, "data.root: /nonexistent/fashion does not exist"),
    "classes mismatch data": ({"model__num_classes": 7}, "model.num_classes: is 7 but the dataset has 10"),
    "model weights missing": ({"model__weights": "/nonexistent/w.pt"}, "model.weights: /nonexistent/w.pt"),
    # the quickstart with model.arch changed while dense.weights still names the shipped ResNet-20 reference
    "weights of another architecture": (
        {"dense__weights": str(REFERENCE_WEIGHTS)},
        f"dense.weights: {REFERENCE_WEIGHTS} does not fit the model: saved from cifar_resnet20 (10 classes, 1 input "
        "channel(s)), the recipe builds cifar_resnet8 (10 classes, 1 input channel(s))"),
}


@pytest.mark.parametrize("changes, fragment", list(RECIPE_CASES.values()), ids=list(RECIPE_CASES))
def test_bad_recipe(tmp_path, monkeypatch, capsys, changes, fragment):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(merged(**changes)))
    out = tmp_path / "run"
    code, err = cli(monkeypatch, capsys, "compress", "--recipe", str(path), "--out", str(out))
    assert_one_line_exit_2(code, err, fragment)
    assert not out.exists()


def assert_one_line_exit_2(code, err, fragment):
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]


def file_case(tmp_path: Path, kind: str) -> tuple[list[str], str]:
    """Bad inputs that are files rather than recipe values: (extra CLI args or recipe changes, fragment)."""
    if kind == "empty image folder":
        (tmp_path / "imgs").mkdir()
        return [f"data.root={tmp_path / 'imgs'}"], "has no class sub-folders"
    if kind == "corrupt image":
        return [f"data.root={image_folder(tmp_path / 'imgs', corrupt=True)}"], "broken.jpg: not a readable image"
    if kind == "non-image file with an image suffix":
        return [f"data.root={image_folder(tmp_path / 'imgs', stray_file=True)}"], "labels.png: not a readable image"
    if kind == "weights file is text":
        (tmp_path / "w.pt").write_text("not a checkpoint")
        return [f"dense.weights={tmp_path / 'w.pt'}"], "dense.weights: "
    if kind == "idx files truncated":
        root = tmp_path / "fm"
        root.mkdir()
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
            (root / name).write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x05")
        return [f"data.root={root}"], "truncated IDX header"
    raise AssertionError(kind)


FILE_CASES = ["empty image folder", "corrupt image", "non-image file with an image suffix", "weights file is text",
              "idx files truncated"]


@pytest.mark.parametrize("kind", FILE_CASES)
def test_bad_files(tmp_path, monkeypatch, capsys, kind):
    sets, fragment = file_case(tmp_path, kind)
    folder = {"data": {"dataset": "imagefolder"}, "model": {"num_classes": 2}} if "image" in kind else {}
    data = tiny_recipe_dict(**folder)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    args = [a for s in sets for a in ("--set", s)]
    code, err = cli(monkeypatch, capsys, "compress", "--recipe", str(path), *args, "--out", str(tmp_path / "run"))
    assert_one_line_exit_2(code, err, fragment)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, fragment", [
    ("model: [unclosed\n", "malformed YAML at line"),
    ("name: !!python/object/apply:os.system ['touch pwned']\n", "malformed YAML"),
    ("- just\n- a list\n", "top level must be a mapping"),
    ("\t bad: indentation\n", "malformed YAML"),
])
def test_bad_yaml_text(tmp_path, monkeypatch, capsys, text, fragment):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    code, err = cli(monkeypatch, capsys, "compress", "--recipe", str(path))
    assert_one_line_exit_2(code, err, fragment)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--set", "prune.steps"], "expected key.path=value"),
    (["--set", "prune.steps.deeper=1"], "prune.steps is a value"),
    (["--set", "prune.target.macs=2"], "prune.target.macs: must be < 1"),
])
def test_bad_overrides(tmp_path, monkeypatch, capsys, args, fragment):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict()))
    code, err = cli(monkeypatch, capsys, "compress", "--recipe", str(path), *args, "--out", str(tmp_path / "r"))
    assert_one_line_exit_2(code, err, fragment)
    assert not (tmp_path / "r").exists()


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_existing_run_is_left_unchanged(tmp_path, monkeypatch, capsys, fashion_root):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict(prune={"steps": 1}, dense={"epochs": 1},
                                                    finetune={"epochs_per_step": 0})))
    run = tmp_path / "run"
    code, err = cli(monkeypatch, capsys, "compress", "--recipe", str(path), "--out", str(run))
    assert code in (0, None), err
    before = tree_digest(run)
    for args in (["--set", "prune.steps=0", "--resume"], ["--set", "seed=5", "--resume"], []):
        code, err = cli(monkeypatch, capsys, "compress", "--recipe", str(path), "--out", str(run), *args)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert tree_digest(run) == before


def test_out_is_a_file(tmp_path, monkeypatch, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict()))
    (tmp_path / "taken").write_text("keep me")
    code, err = cli(monkeypatch, capsys, "compress", "--recipe", str(path), "--out", str(tmp_path / "taken"))
    assert_one_line_exit_2(code, err, "exists and is not a folder")
    assert (tmp_path / "taken").read_text() == "keep me"


# ---------------------------------------------------------------- fuzzing the loader

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
SECTIONS = ["name", "seed", "model", "data", "dense", "prune", "finetune", "augment", "aux", "teacher", "export",
            "device"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(SECTIONS + ["extra"]), values, max_size=4))
def test_fuzz_validate_raises_only_recipe_errors(data):
    try:
        recipe = validate(data)
    except RecipeError as error:
        assert "\n" not in str(error) and str(error).strip()
    else:  # what was accepted reads back as the same recipe (a run's recipe.yaml is validated again on resume)
        assert isinstance(recipe, Recipe) and validate(recipe.to_plain()) == recipe


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=4))
def test_fuzz_overrides_raise_only_recipe_errors(overrides):
    try:
        recipe = validate(apply_overrides(tiny_recipe_dict(), overrides))
    except RecipeError as error:
        assert "\n" not in str(error) and str(error).strip()
    else:  # what was accepted reads back as the same recipe (recipe.yaml of a run is validated again on resume)
        assert validate(recipe.to_plain()) == recipe


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_fuzz_yaml_text_raises_only_recipe_errors(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text)
    try:
        recipe = load_recipe(path)
    except RecipeError as error:
        assert "\n" not in str(error) and str(error).strip()
    else:  # a recipe file must name its model and data sections: anything else is refused, never run on defaults
        assert isinstance(recipe, Recipe) and {"model", "data"} <= set(yaml.safe_load(text))
