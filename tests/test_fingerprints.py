"""Which runs did the same work: every option says what it decides, and the fingerprints, the
kept results, compare's seeds and users, and the swept parameters follow from what it says."""

import copy
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from fashionbench.analysis.design import SEED_PARAMS, USERS_AND_SPLITS, not_swept, swept_parameters
from fashionbench.config import CHOSEN_GROUPS, SCHEMAS, ExperimentConfig, option_roles
from fashionbench.options import UPSTREAM, Stage, UndeclaredOptionError, option, role_of, schema_roles
from fashionbench.pipeline.fingerprints import flatten, job_fingerprint, stage_fingerprint, training_fingerprint
from fashionbench.tracking.records import RunRecord
from tests.conftest import compose_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# One composition per config file of each chosen group, so that every option of every schema is tried.
GROUP_CHOICES = [[]] + [[f"{group}={path.stem}"] for group in CHOSEN_GROUPS
                        for path in sorted((CONFIGS / group).glob("*.yaml"))]


def composed_values(overrides: list[str]) -> dict:
    """The resolved config of a composition, as a run fingerprints it (``run.resolved_values``)."""
    return copy.deepcopy(_composed(tuple(overrides)))


@cache
def _composed(overrides: tuple[str, ...]) -> dict:
    return OmegaConf.to_container(compose_config(list(overrides)), resolve=True, throw_on_missing=False)


def changed(value):
    """Another value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 1
    if isinstance(value, list):
        return [*value, value[0] if value else 1]
    if value is None:
        return "set"
    return f"{value}-other"


def with_value(values: dict, dotted: str, value) -> dict:
    result = copy.deepcopy(values)
    node = result
    *parents, leaf = dotted.split(".")
    for parent in parents:
        node = node[parent]
    node[leaf] = value
    return result


def every_option() -> list[tuple[str, list[str]]]:
    """(dotted option, the composition that has it), once per option of every schema."""
    seen, cases = set(), []
    for overrides in GROUP_CHOICES:
        for name in flatten(composed_values(overrides)):
            option_name = next(n for n in option_roles() if name == n or name.startswith(n + "."))
            if option_name not in seen:
                seen.add(option_name)
                cases.append((name, overrides))
    return cases


def test_every_field_of_every_schema_says_what_it_decides():
    roles = option_roles()  # raises UndeclaredOptionError naming a field without a role
    for overrides in GROUP_CHOICES:
        unknown = [name for name in flatten(composed_values(overrides)) if role_of(name, roles) is None]
        assert unknown == [], f"{overrides}: config keys without a declared role"
    # Every schema a group can choose contributes its options.
    for group in CHOSEN_GROUPS:
        for schema in SCHEMAS[group].values():
            assert {f"{group}.{name}" for name in schema_roles(schema)} <= set(roles)
    assert len(every_option()) == len(roles)


def test_a_field_without_a_declared_role_is_refused_by_name():
    @dataclass
    class Planted:
        declared: int = option(1, decides=Stage.TRAINING)
        forgotten: int = 2

    with pytest.raises(UndeclaredOptionError, match=r"Planted\.forgotten does not say what it decides"):
        schema_roles(Planted)


def test_two_schemas_of_one_group_cannot_declare_one_option_differently():
    @dataclass
    class One:
        seed: int = option(0, decides=Stage.DATA, seed=True)

    @dataclass
    class Other:
        seed: int = option(0, decides=Stage.USERS, seed=True)

    @dataclass
    class Experiment:
        data: object = None

    with pytest.raises(UndeclaredOptionError, match="data.seed is declared"):
        schema_roles(Experiment, groups={"data": [One, Other]})


@pytest.mark.parametrize("name, overrides", every_option(), ids=lambda case: case if isinstance(case, str) else "")
def test_each_option_changes_exactly_the_fingerprints_of_what_it_decides(name, overrides):
    values = composed_values(overrides)
    other = with_value(values, name, changed(flatten(values)[name]))
    role = role_of(name, option_roles())
    decides_training = role.decides in UPSTREAM[Stage.TRAINING]
    assert (training_fingerprint(values, "data") != training_fingerprint(other, "data")) == decides_training, \
        f"{name} ({role.decides}): the training fingerprint must change exactly when the trained weights may"
    assert (job_fingerprint(values) != job_fingerprint(other)) == (role.decides is not Stage.PLACEMENT), \
        f"{name} ({role.decides}): the job fingerprint must change exactly when a result may"
    # The results a process keeps for the next job (predictions, embeddings) by the embedding stage's
    # options, the users and splits by the users stage's.
    for stage in (Stage.EMBEDDING, Stage.USERS):
        assert (stage_fingerprint(values, stage) != stage_fingerprint(other, stage)) == (role.decides is stage), name


def test_every_device_setting_that_touches_the_numbers_is_part_of_the_training():
    values = composed_values([])
    for name in ("device.mixed_precision", "device.jit_compile"):
        assert training_fingerprint(values, "d") != training_fingerprint(with_value(values, name, True), "d"), name
    assert training_fingerprint(values, "d") == training_fingerprint(with_value(values, "device.memory_growth",
                                                                               False), "d")


def test_an_unknown_config_key_is_never_fingerprinted_silently():
    with pytest.raises(UndeclaredOptionError, match="'model.planted'"):
        job_fingerprint({"model": {"freeze": 4, "planted": 1}})


def test_compare_seeds_users_and_swept_params_follow_the_declarations():
    roles = option_roles()
    assert set(SEED_PARAMS) == {name for name, role in roles.items() if role.seed}
    assert SEED_PARAMS[0] == "seed"  # the top-level name of the seeds it drives comes first
    assert {"seed", "data.seed", "model.seed", "users.seed", "index.seed"} <= set(SEED_PARAMS)
    assert USERS_AND_SPLITS == {Stage.DATA, Stage.USERS}
    for name, role in roles.items():
        assert not_swept(name) == (role.decides is Stage.PLACEMENT), name
    assert not_swept("tracking.uri") and not_swept("train.cache_dir") and not not_swept("device.mixed_precision")

    def run(run_id, **params):
        return RunRecord(run_id, run_id, "FINISHED", 0, {k.replace("__", "."): v for k, v in params.items()}, {}, {})

    runs = [run("a", freeze="2", model__freeze="2", train__cache_dir="/a", tracking__uri="x"),
            run("b", freeze="4", model__freeze="4", train__cache_dir="/b", tracking__uri="y")]
    assert swept_parameters(runs) == ["freeze"]


def test_the_experiment_schema_is_covered_whole():
    names = set(option_roles())
    for group in ("model", "train", "eval", "tracking", "data_store", "device"):
        assert any(name.startswith(f"{group}.") for name in names), group
    assert {"seed", "freeze", "run_name"} <= names
    assert {name.split(".")[0] for name in names} == {f.name for f in ExperimentConfig.__dataclass_fields__.values()}
