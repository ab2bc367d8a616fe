"""Issue 11: the committed dense reference and the checks that keep the study regime honest."""

import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_cli, tiny_recipe_dict

from edgecomp.core.models import MODEL_FORMAT, load_model_file
from edgecomp.core.recipe import load_recipe
from edgecomp.core.rundir import sha256

RECORD = REPO / "benchmarks" / "results" / "dense_reference" / "reference.json"
WEIGHTS = REPO / "edgecomp" / "recipes" / "weights" / "fmnist_resnet20.pt"


def test_committed_reference_loads_safely_and_matches_its_record():
    record = json.loads(RECORD.read_text())
    assert sha256(WEIGHTS) == record["weights_sha256"]
    payload = torch.load(WEIGHTS, map_location="cpu", weights_only=True)  # tensors and plain data only
    assert payload["format"] == MODEL_FORMAT and payload["model"]["arch"] == "cifar_resnet20"
    assert record["converged"] and record["test_images"] == 10_000
    model = load_model_file(WEIGHTS)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_quickstart_starts_from_the_reference():
    recipe = load_recipe("quickstart.yaml")
    assert recipe.dense.epochs == 0 and Path(recipe.dense.weights) == WEIGHTS.resolve()


@pytest.mark.e2e
def test_a_macs_target_below_the_round_to_floor_is_a_recipe_error(tmp_path, write_recipe, fashion_root):
    path = write_recipe(tiny_recipe_dict(model={"arch": "cifar_resnet20"}, prune={"round_to": 8,
                                                                                  "target": {"macs": 0.05}}))
    result = run_cli("compress", "--recipe", str(path), "--out", str(tmp_path / "run"))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "prune.target.macs: 0.05 is below 0.1" in lines[0]
    assert "the smallest cifar_resnet20 at round_to 8 and max_layer_ratio 0.9" in lines[0]
    assert "lower prune.round_to" in lines[0]
    assert not (tmp_path / "run").exists()
