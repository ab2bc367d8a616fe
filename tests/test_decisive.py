"""benchmarks/decisive.py picks the confirmation candidates by PLAN.md's rule, on validation, from seeds 0-2."""

import json

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def decisive():
    return load_benchmark("decisive")


def cells(val: dict[str, float], test: dict[str, float] | None = None, seeds=(0, 1, 2)) -> dict:
    test = test or {}
    return {(0.05, name, seed): {"val_accuracy": acc, "test_accuracy": test.get(name, acc)}
            for name, acc in val.items() for seed in seeds}


def test_the_two_best_mechanisms_above_the_baseline_by_validation(decisive):
    grid = cells({"tp_baseline": 0.835, "kd": 0.839, "rep_trunk": 0.840, "heads": 0.836, "rep": 0.820,
                  "linear": 0.99})  # linear is the weak view, not a mechanism: never a candidate
    assert decisive.confirmation_candidates(grid) == ["rep_trunk", "kd"]


def test_the_test_set_never_chooses(decisive):
    grid = cells({"tp_baseline": 0.835, "kd": 0.834, "heads": 0.836}, test={"kd": 0.99, "heads": 0.70})
    assert decisive.confirmation_candidates(grid) == ["heads"]


def test_nothing_to_confirm_without_the_baseline_or_a_full_set_of_seeds(decisive):
    assert decisive.confirmation_candidates(cells({"kd": 0.9})) == []
    grid = {**cells({"tp_baseline": 0.835}), **cells({"kd": 0.9}, seeds=(0, 1))}  # kd misses seed 2
    assert decisive.confirmation_candidates(grid) == []


def test_candidates_are_chosen_once_and_frozen(decisive, tmp_path, monkeypatch):
    monkeypatch.setattr(decisive, "CELLS", tmp_path / "decisive")
    decisive.CELLS.mkdir()
    (tmp_path / "gates.json").write_text(json.dumps({"3": {"passes": True}, "4": {"passes": False},
                                                     "5": {"passes": True}}))
    grid = cells({name: 0.80 for name in ["tp_baseline", *decisive.MECHANISMS]} | {"kd": 0.81, "heads": 0.82})
    chosen = decisive.confirmation(grid)
    assert chosen["candidates"] == ["heads", "kd"] and chosen["seeds"] == [3, 5] and chosen["dropped_seeds"] == [4]
    later = cells({name: 0.80 for name in ["tp_baseline", *decisive.MECHANISMS]} | {"rep": 0.9})
    assert decisive.confirmation(later) == chosen  # new cells never change a choice already made


def test_no_choice_before_every_mechanism_ran_or_without_gates(decisive, tmp_path, monkeypatch):
    monkeypatch.setattr(decisive, "CELLS", tmp_path / "decisive")
    decisive.CELLS.mkdir()
    partial = cells({name: 0.80 for name in ["tp_baseline", *decisive.MECHANISMS[:-1]]})
    with pytest.raises(SystemExit, match="missing: full seed 0"):
        decisive.confirmation(partial)
    with pytest.raises(SystemExit, match="--gate-only"):
        decisive.confirmation(cells({name: 0.80 for name in ["tp_baseline", *decisive.MECHANISMS]}))
    assert not (decisive.CELLS / "confirmation.json").exists()
