"""Pruning to a measured latency budget on `host` (onnxruntime on this CPU)."""

import json

import pytest

from edgecomp import compress
from conftest import run_cli, tiny_recipe, tiny_recipe_dict


def rows_of(result):
    return [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]


def budget_recipe(latency_ms):
    return tiny_recipe(model={"arch": "cifar_resnet14"}, dense={"epochs": 0}, finetune={"epochs_per_step": 0},
                       prune={"steps": 3, "target": {"macs": 0.15, "latency_ms": latency_ms, "latency_iterations": 200},
                              "round_to": 4},
                       device={"latency_iterations": 0})


@pytest.mark.e2e
def test_stops_at_the_first_step_under_a_budget_between_two_steps(tmp_path, fashion_root):
    never = compress(budget_recipe(1e-6), out=tmp_path / "all")  # unreachable: every step measured
    measured = [row["measured_latency_ms"] for row in rows_of(never)]
    assert len(measured) == 4 and measured[-1] < measured[0]
    assert "NOT met" in never.report_path.read_text()

    budget = (measured[1] + measured[-1]) / 2  # between step 1 and the last step
    result = compress(budget_recipe(budget), out=tmp_path / "budget")
    rows = rows_of(result)
    stop = rows[-1]
    assert stop["measured_on"] == "host" and result.final == stop
    # the stopping rule, judged on this run's own measurements (host timings vary between runs):
    assert all(row["measured_latency_ms"] > budget for row in rows[:-1])  # no earlier step met it
    assert stop["measured_latency_ms"] <= budget or stop["step"] == 3  # it stopped there because it met it
    if stop["measured_latency_ms"] <= budget:
        assert "met at step" in result.report_path.read_text()


@pytest.mark.e2e
def test_a_dense_model_within_budget_is_not_pruned(tmp_path, fashion_root):
    result = compress(budget_recipe(1e6), out=tmp_path / "easy")
    assert [row["step"] for row in rows_of(result)] == [0]
    assert "met at step 0" in result.report_path.read_text()


def test_unknown_budget_device_exits_2(tmp_path, write_recipe):
    data = tiny_recipe_dict(prune={"steps": 2, "target": {"macs": 0.5, "latency_ms": 1.0, "device": "jetson-orn"}})
    result = run_cli("compress", "--recipe", str(write_recipe(data)), "--out", str(tmp_path / "r"))
    assert result.returncode == 2 and "jetson-orn" in result.stderr and not (tmp_path / "r").exists()
