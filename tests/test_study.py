import json

import pytest
import yaml
from conftest import run_cli, tiny_recipe, tiny_recipe_dict, unsplit_imagefolder

from edgecomp.compression.convergence import PlateauRule
from edgecomp.compression.study import best_per_size, fit_linear, recipe_snippet, study
from edgecomp.core.errors import UserInputError
from edgecomp.core.recipe import validate

RANDAUGMENT = {"policy": "randaugment"}  # the default policy (none) has no magnitude to study


def synthetic_grid(dense=12.0, minimum=2.0):
    """Accuracy peaks at M = min + (dense - min) * s: the fit must find that line again."""
    sizes, magnitudes = [1.0, 0.6, 0.3, 0.1], [float(m) for m in range(31)]
    peak = lambda s: minimum + (dense - minimum) * s  # noqa: E731
    return {s: {m: 0.9 - (m - peak(s)) ** 2 / 1000 for m in magnitudes} for s in sizes}


def test_best_per_size_and_fit_recover_a_known_schedule():
    grid = synthetic_grid()
    assert best_per_size(grid) == {1.0: 12.0, 0.6: 8.0, 0.3: 5.0, 0.1: 3.0}
    fit = fit_linear(best_per_size(grid))
    assert fit["dense"] == pytest.approx(12.0, abs=0.3) and fit["min"] == pytest.approx(2.0, abs=0.3)


def test_fit_is_clamped_and_handles_one_size():
    assert fit_linear({1.0: 30.0, 0.5: 0.0}) == {"dense": 30.0, "min": 0.0}
    assert fit_linear({0.5: 7.0}) == {"dense": 7.0, "min": 7.0}
    assert best_per_size({1.0: {0.0: 0.5, 5.0: 0.5}}) == {1.0: 0.0}  # ties: the gentler magnitude


def test_snippet_loads_into_a_valid_recipe():
    snippet = yaml.safe_load(recipe_snippet(fit_linear(best_per_size(synthetic_grid()))))
    data = tiny_recipe_dict()
    data["augment"] = {**data.get("augment", {}), **snippet["augment"]}
    recipe = validate(data)
    assert recipe.augment.schedule.kind.value == "linear" and recipe.augment.schedule.dense > recipe.augment.schedule.min


@pytest.mark.e2e
def test_small_real_study_resumes(tmp_path, fashion_root):
    recipe = tiny_recipe(augment=RANDAUGMENT)
    seen = []
    rule = PlateauRule(max_epochs=2)
    result = study(recipe, sizes=[1.0, 0.5], magnitudes=[0.0, 10.0], rule=rule, out=tmp_path / "s", workers=2,
                   progress=seen.append)
    assert len(seen) == 4 and set(result.grid) == {1.0, 0.5}
    assert all(0 <= acc <= 1 for row in result.grid.values() for acc in row.values())
    assert result.heatmap_path.is_file() and result.snippet_path.is_file()
    summary = json.loads((tmp_path / "s" / "study.json").read_text())
    assert set(summary["best"]) == {"1.0", "0.5"}
    assert summary["epochs"]["0.5"]["10.0"] == 2 and summary["converged"]["0.5"]["10.0"] is False  # capped
    assert all(0 <= a <= 1 for row in summary["test_grid"].values() for a in row.values())
    cells = sorted((tmp_path / "s" / "cells").glob("*.json"))
    assert not list((tmp_path / "s" / "cells").glob("*.state.pt")), "finished cells keep no training state"
    cell = json.loads(cells[0].read_text())
    assert len(cell["val_curve"]) == 2 and cell["val_accuracy"] == cell["val_curve"][-1]
    kept = json.loads(cells[0].read_text())
    cells[1].unlink()  # as if the study had been killed before that cell
    seen.clear()
    again = study(recipe, sizes=[1.0, 0.5], magnitudes=[0.0, 10.0], rule=rule, out=tmp_path / "s", workers=1,
                  progress=seen.append)
    assert len(seen) == 1  # only the missing cell ran
    assert again.grid[kept["size"]][kept["magnitude"]] == kept["accuracy"]


def test_study_refuses_a_size_below_the_round_to_floor(tmp_path):
    recipe = tiny_recipe(prune={"round_to": 8}, augment=RANDAUGMENT)
    with pytest.raises(UserInputError, match=r"prune.target.macs: 0.05 is below 0\.\d+, the smallest cifar_resnet8 at round_to 8"):
        study(recipe, sizes=[1.0, 0.05], magnitudes=[0.0], out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_study_bad_input(tmp_path, write_recipe):
    with pytest.raises(UserInputError, match="--sizes"):
        study(tiny_recipe(augment=RANDAUGMENT), sizes=[1.5], magnitudes=[0.0], out=tmp_path / "x")
    with pytest.raises(UserInputError, match="--magnitudes"):
        study(tiny_recipe(augment=RANDAUGMENT), sizes=[0.5], magnitudes=[31.0], out=tmp_path / "x")
    with pytest.raises(UserInputError, match="augment.policy: none applies no magnitude"):
        study(tiny_recipe(), sizes=[0.5], magnitudes=[0.0, 5.0], out=tmp_path / "x")  # the default policy
    assert not (tmp_path / "x").exists()
    path = write_recipe(tiny_recipe_dict(augment=RANDAUGMENT))
    result = run_cli("study", "--recipe", str(path), "--sizes", "1.0,abc", "--out", str(tmp_path / "y"))
    assert result.returncode == 2 and "--sizes" in result.stderr and not (tmp_path / "y").exists()


@pytest.mark.e2e
def test_a_study_without_a_held_out_split_records_no_test_figure(tmp_path):
    recipe = tiny_recipe(**unsplit_imagefolder(tmp_path / "images"), augment=RANDAUGMENT)
    study(recipe, sizes=[1.0], magnitudes=[0.0], rule=PlateauRule(max_epochs=1), out=tmp_path / "s", workers=1)
    summary = json.loads((tmp_path / "s" / "study.json").read_text())
    assert summary["test_grid"] == {"1.0": {"0.0": None}}
