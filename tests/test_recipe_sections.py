"""A recipe must say what it runs, `--set` must carry key.path=value, and a model the pruner cannot handle
is refused: each one line, exit 2, before any run directory exists."""

from __future__ import annotations

import sys

import pytest
import yaml
from conftest import tiny_recipe_dict

from edgecomp.cli import main


def cli(monkeypatch, capsys, tmp_path, *args: str) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["edgecomp", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def one_line_exit_2(code: int, err: str, tmp_path, *needles: str) -> None:
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "Usage" not in err
    for needle in needles:
        assert needle in err, err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, needles", [
    ("", ("the recipe is empty", "model and data")),
    ("# only a comment\n", ("the recipe is empty",)),
    ("name: x\nseed: 1\n", ("missing sections model and data",)),
    ("model: {arch: cifar_resnet8}\n", ("missing section data",)),
    ("data: {dataset: fashion_mnist}\n", ("missing section model",)),
])
def test_empty_or_sectionless_recipe_is_refused(monkeypatch, capsys, tmp_path, text, needles):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    for command in (["compress", "--recipe", str(path), "--out", str(tmp_path / "out")],
                    ["recipe", "check", str(path)]):
        code, err = cli(monkeypatch, capsys, tmp_path, *command)
        one_line_exit_2(code, err, tmp_path, "recipe error", *needles)


@pytest.mark.parametrize("sets, needle", [
    (["--set"], "--set needs a value"),
    (["--set", "--out", "x"], "--set needs a value"),
    (["--set", "prune.steps"], "expected key.path=value (no '=' or no key)"),
    (["--set", "=3"], "expected key.path=value"),
])
def test_malformed_set_is_one_line(monkeypatch, capsys, tmp_path, sets, needle):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict()))
    code, err = cli(monkeypatch, capsys, tmp_path, "compress", "--recipe", str(path), *sets)
    one_line_exit_2(code, err, tmp_path, needle)


def test_unreachable_prune_target_is_refused_before_the_run_directory(monkeypatch, capsys, tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe_dict(prune={"target": {"macs": 0.2}, "max_layer_ratio": 0.1})))
    code, err = cli(monkeypatch, capsys, tmp_path, "compress", "--recipe", str(path), "--out", str(tmp_path / "out"))
    one_line_exit_2(code, err, tmp_path, "prune error: prune.target.macs: 0.2 is below", "smallest cifar_resnet8")
