import json
import sys

import pytest
import yaml
from conftest import REPO, run_cli, tiny_recipe_dict


def assert_user_error(result, *fragments):
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    "change, fragments",
    [
        ({"model": {"arch": "resnet81"}}, ["model.arch: unknown model 'resnet81'"]),
        ({"data": {"root": "/nonexistent/fmnist"}}, ["data.root: /nonexistent/fmnist does not exist"]),
        ({"prune": {"target": {"macs": 1.0}}}, ["recipe error: prune.target.macs: must be < 1"]),
        ({"prune": {"target": {"macs": 0}}}, ["recipe error: prune.target.macs: must be > 0"]),
        ({"prune": {"target": {"macs": -0.5}}}, ["prune.target.macs: must be > 0"]),
        ({"prune": {"steps": 0}}, ["recipe error: prune.steps: must be >= 1 (got 0)"]),
        ({"dense": {"weights": "/nonexistent/w.pt"}}, ["dense.weights: /nonexistent/w.pt does not exist"]),
        ({"model": {"num_classes": 3}}, ["model.num_classes: is 3 but the dataset has 10"]),
    ],
)
def test_bad_recipes_exit_2_and_create_nothing(tmp_path, write_recipe, change, fragments):
    path = write_recipe(tiny_recipe_dict(**change))
    out = tmp_path / "run"
    assert_user_error(run_cli("compress", "--recipe", str(path), "--out", str(out)), *fragments)
    assert not out.exists()


def test_missing_recipe_file(tmp_path):
    result = run_cli("compress", "--recipe", "nope.yaml", "--out", str(tmp_path / "r"), cwd=tmp_path)
    assert_user_error(result, "recipe file not found: nope.yaml")
    assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()


def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: [unclosed\n")
    assert_user_error(run_cli("compress", "--recipe", str(path), "--out", str(tmp_path / "r")), "malformed YAML")
    assert not (tmp_path / "r").exists()


def test_bad_set(tmp_path, write_recipe):
    path = write_recipe(tiny_recipe_dict())
    result = run_cli("compress", "--recipe", str(path), "--set", "prune.steps=zero", "--out", str(tmp_path / "r"))
    assert_user_error(result, "prune.steps")
    result = run_cli("recipe", "check", str(path), "--set", "prune.nonsense=1")
    assert_user_error(result, "prune.nonsense: unknown key")


def test_recipe_check_prints_the_resolved_recipe(write_recipe):
    path = write_recipe(tiny_recipe_dict())
    result = run_cli("recipe", "check", str(path), "--set", "prune.steps=4")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["prune"]["steps"] == 4 and resolved["augment"]["policy"] == "none"  # the default: crop + flip


def test_recipe_check_finds_shipped_recipes(tmp_path):
    result = run_cli("recipe", "check", "resnet18_jetson.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["model"]["arch"] == "resnet18"


def test_recipe_schema_is_json_schema():
    result = run_cli("recipe", "schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert set(schema["properties"]) == {"name", "seed", "model", "data", "dense", "prune", "finetune", "augment",
                                         "aux", "teacher", "export", "device"}


def test_report_without_runs(tmp_path):
    assert_user_error(run_cli("report", cwd=tmp_path), "--run: no run under runs/")


def test_readme_command_reference_matches_the_cli():
    """Every flag the README's command block shows exists, and every export/bench/devices option is documented."""
    import re

    import typer

    from edgecomp.cli import app

    group = typer.main.get_command(app)
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Commands", 1)[1].split("```")[1]
    shown: dict[str, set[str]] = {}
    command = None
    for line in block.splitlines():
        words = line.split()
        if line[:1].strip():  # a new command line (continuations are indented)
            command = (" ".join(words[1:3]) if words[1:2] == ["recipe"] else words[1]) \
                if words[0] == "edgecomp" else None
        if command is not None and line.strip():
            shown.setdefault(command, set()).update(re.findall(r"(?<![\w-])--[a-z][a-z-]*", line.split("#")[0]))
    assert {"compress", "export", "bench", "devices", "study", "report", "recipe check"} <= set(shown)
    for name, flags in shown.items():
        found = group
        for word in name.split():
            found = found.commands[word]
        params = found.params
        known = {opt for param in params for opt in (*param.opts, *param.secondary_opts)}
        assert flags <= known, (name, flags - known)
    for name in ("export", "bench"):
        for param in group.commands[name].params:
            spellings = [o for o in (*param.opts, *param.secondary_opts) if o.startswith("--")]
            assert not spellings or any(o in readme for o in spellings), f"edgecomp {name} {spellings}: not in README"


def test_recipe_init_copies_a_shipped_recipe_with_its_comments(tmp_path):
    result = run_cli("recipe", "init", "quickstart", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    copied = (tmp_path / "quickstart.yaml").read_text()
    assert copied.startswith("# Quickstart:") and "# keep 30% of the dense MACs" in copied
    weights = (REPO / "edgecomp" / "recipes" / "weights" / "fmnist_resnet20.pt").resolve()
    assert f"weights: {weights}" in copied  # the copy still finds the shipped reference weights
    checked = run_cli("recipe", "check", "quickstart.yaml", cwd=tmp_path)
    assert checked.returncode == 0 and f"weights: {weights}" in checked.stdout
    (tmp_path / "mine").mkdir()
    assert run_cli("recipe", "init", "resnet18_jetson", "mine", cwd=tmp_path).returncode == 0
    assert "edgecomp recipe init resnet18_jetson" in (tmp_path / "mine" / "resnet18_jetson.yaml").read_text()


def test_recipe_init_never_overwrites(tmp_path):
    (tmp_path / "quickstart.yaml").write_text("mine\n")
    result = run_cli("recipe", "init", "quickstart", cwd=tmp_path)
    assert result.returncode == 2 and "already exists" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "quickstart.yaml").read_text() == "mine\n"
    unknown = run_cli("recipe", "init", "nope", "x.yaml", cwd=tmp_path)
    assert unknown.returncode == 2 and "no shipped recipe 'nope'" in unknown.stderr and not (tmp_path / "x.yaml").exists()


def test_ctrl_c_before_any_step_says_the_latency_timings_are_kept(tmp_path, capsys, monkeypatch):
    import typer

    from edgecomp import cli

    monkeypatch.setattr(sys, "argv", ["edgecomp", "compress", "--recipe", "r.yaml", "--out", str(tmp_path)])
    with pytest.raises(typer.Exit):
        cli._interrupted(tmp_path)
    assert "no step had finished, nothing is kept in" in capsys.readouterr().err
    (tmp_path / "latency").mkdir()
    (tmp_path / "latency" / "block.json").write_text("{}")
    with pytest.raises(typer.Exit) as exited:
        cli._interrupted(tmp_path)
    err = capsys.readouterr().err
    assert exited.value.exit_code == 130 and "the latency target's timings are kept in" in err and "--resume" in err
