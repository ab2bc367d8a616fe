import json

import pytest
import yaml
from conftest import tiny_recipe_dict

from edgecomp.core.errors import RecipeError
from edgecomp.core.recipe import (
    SHIPPED_RECIPES,
    Recipe,
    apply_overrides,
    dump_recipe,
    load_recipe,
    recipe_schema,
    resolve_recipe_path,
    validate,
)


def error_of(data: dict) -> str:
    with pytest.raises(RecipeError) as info:
        validate(data)
    return str(info.value)


def test_defaults_are_valid_and_off():
    recipe = Recipe()
    assert recipe.aux.kind.value == "none"
    assert recipe.teacher.kd_weight == 0
    assert recipe.prune.round_to == 8
    # what benchmarks/RESULTS.md supports: crop + flip, and a magnitude that does not follow size (M* = 0 everywhere)
    assert recipe.augment.policy.value == "none"
    assert recipe.augment.schedule.kind.value == "constant" and recipe.augment.schedule.dense == 0


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"prune": {"steps": 0}}, "recipe error: prune.steps: must be >= 1 (got 0)"),
        ({"prune": {"target": {"macs": 1.0}}}, "prune.target.macs: must be < 1"),
        ({"prune": {"target": {"macs": 0.0}}}, "prune.target.macs: must be > 0"),
        ({"prune": {"target": {}}}, "prune.target: give one of macs, params, latency or latency_ms"),
        ({"prune": {"importance": "magic"}}, "prune.importance: must be one of"),
        ({"model": {"num_classes": "ten"}}, "model.num_classes: "),
        ({"model": {"input_size": 8}}, "model.input_size: must be >= 16"),
        ({"data": {"dataset": "mnist"}}, "data.dataset: must be one of"),
        ({"data": {"batch_size": 0}}, "data.batch_size: must be >= 1"),
        ({"dense": {"epochs": -1}}, "dense.epochs: must be >= 0 (got -1)"),
        ({"finetune": {"epochs_per_step": -2}}, "finetune.epochs_per_step: must be >= 0"),
        ({"augment": {"schedule": {"dense": 31}}}, "augment.schedule.dense: must be <= 30 (got 31)"),
        ({"augment": {"policy": "autoaugment"}}, "augment.policy: must be one of"),
        ({"augment": {"schedule": {"kind": "steps", "values": [1]}}}, "augment.schedule.values: needs 3 values"),
        ({"aux": {"kind": "rep2"}}, "aux.kind: must be one of"),
        ({"teacher": {"kd_weight": 2}}, "teacher.kd_weight: must be <= 1"),
        ({"export": {"precision": "int4"}}, "export.precision: must be one of"),
        ({"name": "a b"}, "name: "),
        ({"seed": -1}, "seed: must be >= 0"),
    ],
)
def test_bad_values_name_the_field(data, expected):
    message = error_of(data)
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize("section", ["", "model", "data", "dense", "prune", "finetune", "augment", "aux",
                                     "teacher", "export", "device"])
def test_unknown_keys_rejected_in_every_section(section):
    data = {"bogus": 1} if not section else {section: {"bogus": 1}}
    expected = "bogus: unknown key" if not section else f"{section}.bogus: unknown key"
    assert expected in error_of(data)


def test_several_problems_on_one_line():
    message = error_of({"prune": {"steps": 0}, "dense": {"epochs": -1}})
    assert "prune.steps" in message and "dense.epochs" in message and "\n" not in message


def test_set_overrides_are_coerced_by_the_schema():
    data = apply_overrides(tiny_recipe_dict(), ["prune.steps=3", "data.dataset=fashion_mnist",
                                                "augment.schedule.kind=steps", "prune.target.macs=0.25",
                                                "augment.schedule.values=[1, 2, 3]", "model.small_input=true"])
    recipe = validate(data)
    assert recipe.prune.steps == 3 and isinstance(recipe.prune.steps, int)
    assert recipe.prune.target.macs == 0.25
    assert recipe.augment.schedule.kind.value == "steps"
    assert recipe.augment.schedule.values == [1.0, 2.0, 3.0]
    assert recipe.model.small_input is True


@pytest.mark.parametrize(
    "override, expected",
    [
        ("prune.steps", "expected key.path=value"),
        ("=3", "expected key.path=value"),
        ("prune.steps.x=1", "prune.steps is a value, not a section"),
    ],
)
def test_bad_set_syntax(override, expected):
    with pytest.raises(RecipeError, match=expected):
        apply_overrides({"prune": {"steps": 2}}, [override])


def test_bad_set_value_and_unknown_path():
    with pytest.raises(RecipeError, match="prune.steps: "):
        validate(apply_overrides({}, ["prune.steps=lots"]))
    with pytest.raises(RecipeError, match="prune.stepz: unknown key"):
        validate(apply_overrides({}, ["prune.stepz=2"]))


def test_bare_name_resolves_to_shipped_recipes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_recipe_path("resnet18_jetson.yaml") == SHIPPED_RECIPES / "resnet18_jetson.yaml"
    assert resolve_recipe_path("quickstart") == SHIPPED_RECIPES / "quickstart.yaml"
    local = tmp_path / "quickstart.yaml"
    local.write_text("name: mine\n")
    assert resolve_recipe_path("quickstart.yaml").resolve() == local  # a file here wins
    with pytest.raises(RecipeError, match="recipe file not found: nope.yaml"):
        resolve_recipe_path("nope.yaml")


BENCHMARK_RECIPES = SHIPPED_RECIPES.parents[1] / "benchmarks" / "recipes"


RECIPES = sorted([p.name for p in SHIPPED_RECIPES.glob("*.yaml")] + [str(p) for p in BENCHMARK_RECIPES.glob("*.yaml")])


@pytest.mark.parametrize("name", RECIPES, ids=lambda name: name.rsplit("/", 1)[-1])
def test_shipped_recipes_validate(name):
    recipe = load_recipe(name)
    assert validate(yaml.safe_load(dump_recipe(recipe))) == recipe  # dump/load round trip


def test_malformed_yaml_and_python_tags(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("prune: {steps: 2\n")
    with pytest.raises(RecipeError, match="malformed YAML at line"):
        load_recipe(bad)
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(RecipeError, match="malformed YAML"):
        load_recipe(evil)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="top level must be a mapping"):
        load_recipe(listing)


def test_schema_documents_every_field():
    schema = recipe_schema()
    json.dumps(schema)
    undocumented = []
    for name, definition in [("Recipe", schema), *schema["$defs"].items()]:
        for field, spec in definition.get("properties", {}).items():
            if not spec.get("description"):
                undocumented.append(f"{name}.{field}")
    assert undocumented == []


def test_sections_with_kinds_are_one_class_per_kind():
    from edgecomp.core.recipe import HeadsAux, LinearSchedule, NoAux, RepAux, recipe_schema

    linear = validate(tiny_recipe_dict(augment={"schedule": {"kind": "linear", "dense": 9, "min": 2}}))
    assert isinstance(linear.augment.schedule, LinearSchedule) and linear.augment.schedule.min == 2
    assert isinstance(validate(tiny_recipe_dict()).aux, NoAux)  # no kind written: none, as before
    randaugment = {"policy": "randaugment", "schedule": {"kind": "constant", "dense": 9}}
    heads = validate(tiny_recipe_dict(aux={"kind": "heads"}, augment=randaugment)).aux
    rep = validate(tiny_recipe_dict(aux={"kind": "rep"}, augment=randaugment)).aux
    assert isinstance(heads, HeadsAux) and (heads.weight, heads.head_kd) == (0.05, 0.5)  # defaults per class
    assert isinstance(rep, RepAux) and (rep.weight, rep.head_kd) == (1.0, 0.0)
    assert "heads_at" not in RepAux.model_fields and "identity" not in HeadsAux.model_fields
    with pytest.raises(RecipeError, match="augment.schedule.values: unknown key for kind linear"):
        validate(tiny_recipe_dict(augment={"schedule": {"kind": "linear", "values": [1, 2]}}))
    definitions = recipe_schema()["$defs"].values()
    kinds = {d["properties"]["kind"].get("const") for d in definitions if "kind" in d.get("properties", {})}
    assert {"constant", "linear", "steps", "teacher", "none", "rep", "heads"} <= kinds


def test_set_changes_the_kind_of_a_shipped_recipe():
    recipe = load_recipe("quickstart.yaml", ["augment.schedule.kind=linear", "augment.schedule.min=3"])
    assert recipe.augment.schedule.kind.value == "linear" and recipe.augment.schedule.min == 3
    assert load_recipe("quickstart.yaml", ["augment.schedule.kind=constant"]).augment.schedule.kind.value == "constant"


def test_a_run_directory_recipe_written_before_the_kinds_still_loads():
    """recipe.yaml of older runs holds every kind's fields at their defaults (the flat sections)."""
    old_flat = {"augment": {"policy": "randaugment",
                            "schedule": {"kind": "linear", "dense": 9.0, "min": 0.0, "values": []}},
                "aux": {"kind": "heads", "strong_magnitude": None, "weight": None, "heads_at": [], "head_kd": None,
                        "rep_trunk": False, "identity": True}}
    recipe = validate(tiny_recipe_dict(**old_flat))
    assert recipe.augment.schedule.min == 0 and recipe.aux.weight == 0.05 and recipe.aux.head_kd == 0.5
    flat_constant = {"kind": "constant", "dense": 0.0, "min": 0.0, "values": []}
    plain = validate(tiny_recipe_dict(augment={"schedule": flat_constant},
                                      aux={"kind": "none", "strong_magnitude": None, "weight": None, "heads_at": [],
                                           "head_kd": None, "rep_trunk": False, "identity": True}))
    assert plain.aux.kind.value == "none"
    with pytest.raises(RecipeError, match="aux.identity: unknown key for kind heads"):
        validate(tiny_recipe_dict(aux={"kind": "heads", "identity": False}, augment=old_flat["augment"]))


def test_set_kind_switches_a_section_and_drops_the_old_kinds_keys(write_recipe):
    path = write_recipe(tiny_recipe_dict(augment={"schedule": {"kind": "linear", "dense": 9, "min": 2}}))
    recipe = load_recipe(path, ["augment.schedule.kind=constant"])
    assert recipe.augment.schedule.kind.value == "constant" and recipe.augment.schedule.dense == 9
    with pytest.raises(RecipeError, match="augment.schedule.kind: must be one of 'constant', 'linear'"):
        load_recipe(path, ["augment.schedule.kind=cosine"])
