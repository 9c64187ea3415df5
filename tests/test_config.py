"""The config composes through Hydra as a user composes it on the command line."""

from pathlib import Path

import pytest
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from fashionbench.config import ExperimentConfig, experiment_config
from fashionbench.data.synthetic import SyntheticSource
from fashionbench.index.exact import ExactIndexConfig
from fashionbench.model.schema import ModelConfig
from fashionbench.users.simulation import TasteUsers
from tests.conftest import compose_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def test_default_config_has_a_group_per_stage():
    cfg = compose_config()
    for group in ("data", "model", "train", "index", "users", "eval", "tracking"):
        assert group in cfg, group
    assert cfg.data.name == "synthetic"
    assert cfg.index.metric == "angular"
    assert cfg.model.freeze == 4


def test_top_level_freeze_drives_the_model():
    cfg = compose_config(["freeze=8"])
    assert cfg.model.freeze == 8


def test_overrides_reach_each_group():
    cfg = compose_config(["index.n_trees=3", "index.metric=euclidean", "model.embedding_layer=dense_128"])
    assert (cfg.index.n_trees, cfg.index.metric, cfg.model.embedding_layer) == (3, "euclidean", "dense_128")


def test_unknown_key_is_rejected_by_hydra():
    with pytest.raises(ConfigCompositionException, match="frezee"):
        compose_config(["model.frezee=3"])


def test_a_wrong_type_fails_at_composition_naming_the_key():
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["train.learning_rate=fast"])
    assert "train.learning_rate" in str(error.value.__cause__) and "fast" in str(error.value.__cause__)
    with pytest.raises(ConfigCompositionException, match="users.n_users"):
        compose_config(["users.n_users=many"])


def test_an_integer_is_accepted_where_a_float_is_expected():
    experiment = experiment_config(compose_config(["train.learning_rate=1", "eval.holdout_fraction=0.5"]))
    assert experiment.train.learning_rate == 1.0 and isinstance(experiment.train.learning_rate, float)


@pytest.mark.parametrize("override, message", [
    ("eval.k=0", "eval.k must be >= 1"),
    ("eval.holdout_fraction=1.5", r"eval.holdout_fraction must be in \(0, 1\)"),
    ("users.n_users=0", "users.n_users must be >= 1"),
    ("train.epochs=0", "train.epochs must be >= 1"),
    ("train.batch_size=0", "train.batch_size must be >= 1"),
    ("train.learning_rate=-1", "train.learning_rate must be > 0"),
    ("data.image_size=7", "data.image_size must be >= 32"),
    ("freeze=999", r"model.freeze must be an integer in \[0, 175\]"),
    ("index.n_trees=0", "index.n_trees must be an integer >= 1"),
    ("train.cache_dtype=int8", "train.cache_dtype must be one of"),
])
def test_range_checks_live_with_the_schema_and_name_the_option(override, message):
    cfg = compose_config([override])  # composes: the type is right
    with pytest.raises(ValueError, match=message):
        experiment_config(cfg)


def test_the_composed_config_is_typed_objects():
    experiment = experiment_config(compose_config(["index=exact", "users=taste", "model.seed=3"]))
    assert isinstance(experiment, ExperimentConfig)
    assert isinstance(experiment.data, SyntheticSource) and isinstance(experiment.index, ExactIndexConfig)
    assert isinstance(experiment.users, TasteUsers) and isinstance(experiment.model, ModelConfig)
    # Each seed defaults to the top-level seed and can be set on its own.
    assert (experiment.data.seed, experiment.model.seed, experiment.users.seed) == (0, 3, 0)


def group_files():
    return sorted(p for p in CONFIG_DIR.glob("*/*.yaml") if p.parent.name not in ("experiment", "hparams_search"))


@pytest.mark.parametrize("path", group_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_group_file_extends_a_schema_and_restates_no_default(path):
    raw = OmegaConf.load(path)
    (schema,) = [d for d in raw.defaults if str(d).endswith("_schema")]
    node = ConfigStore.instance().load(f"{path.parent.name}/{schema}.yaml").node
    for key in raw.keys():
        if key == "defaults" or OmegaConf.is_interpolation(raw, key) or OmegaConf.is_missing(raw, key):
            continue
        assert key in node.keys(), f"{path}: {key} is not an option of {schema}"
        if not OmegaConf.is_missing(node, key):
            value, default = OmegaConf.to_container(raw)[key], OmegaConf.to_container(node)[key]
            assert value != default, f"{path}: {key}={value} repeats the schema's default"


def test_every_config_file_names_its_schema_and_every_option_of_it():
    """The comment atop configs/<group>/<name>.yaml is where a reader learns the options: it names the
    schema (importable) and every one of its fields, so a new option cannot be left out of it."""
    import dataclasses
    import importlib
    import re

    from fashionbench.config import SCHEMAS

    for group in SCHEMAS:
        for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
            text = path.read_text()
            schema = SCHEMAS[group][re.search(r"-\s+(\w+)_schema", text).group(1)]
            comment = " ".join(line[1:].strip() for line in text.splitlines() if line.startswith("#"))
            named = re.search(r"Schema: ([\w.]+); options: ([^.]+)\.", comment)
            assert named, f"{path}: no 'Schema: <module>.<class>; options: ...' comment"
            module, _, name = named.group(1).rpartition(".")
            assert getattr(importlib.import_module(module), name) is schema, path
            listed = [option.strip() for option in named.group(2).split(",")]
            assert listed == [field.name for field in dataclasses.fields(schema)], path


@pytest.mark.parametrize(("args", "answer"), [
    (["eval.k=0"], "EXIT fashionbench.run: invalid config: EvalConfigError: eval.k must be >= 1, got 0"),
    (["train.epochs=abc"], "train.epochs"),  # a type error, named by Hydra's composition
    (["--help"], "== Configuration groups =="),
    (["--help", "freeze=7"], "freeze: 7"),
    (["--cfg", "job"], "freeze: 4"),
])
def test_help_and_config_errors_answer_before_tensorflow_or_mlflow_is_loaded(tmp_path, args, answer):
    """The config is checked before the heavy imports: a user's typo, --help or --cfg job costs a
    second, not TensorFlow's start."""
    import subprocess
    import sys

    code = ("import runpy, sys\n"
            f"sys.argv = ['fashionbench.run', *{args!r}]\n"
            "try:\n    runpy.run_module('fashionbench.run', run_name='__main__')\n"
            "except SystemExit as error:\n    print('EXIT', error.code)\n"
            "print('LOADED', sorted(m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert answer in result.stdout + result.stderr, result.stdout + result.stderr
    assert "LOADED []" in result.stdout, result.stdout + result.stderr


def test_help_lists_every_group_and_option_hydra_knows_and_no_schema():
    """``--help`` is ours (Hydra's composes once per group: 2.4 s): its groups and options are those
    Hydra's config loader finds, without the ``_schema`` nodes a config file extends."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    from fashionbench.config import CONFIG_MODULE, config_groups
    from fashionbench.run import help_text

    text = help_text(["--help", "data=hm"])
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        app_groups = [group for group in loader.get_group_options("", ObjectType.GROUP) if group != "hydra"]
        for group in [*app_groups, "hydra/launcher"]:
            known = sorted(name for name in loader.get_group_options(group, ObjectType.CONFIG)
                           if not name.endswith("_schema"))
            if group == "hydra/launcher":  # Hydra's own (basic, and installed plugins') are --hydra-help's
                assert set(config_groups()[group]) <= set(known)
                continue
            assert config_groups()[group] == known, group
            assert f"{group}:" in text and ", ".join(known) in text, group
    assert "_schema" not in text.split("== Config ==")[0]
    assert "name: hm" in text  # the config composed with the overrides given
    assert help_text(["eval.k=3"]) is None  # no --help: Hydra runs the command
    assert help_text(["--help", "--config-name", "other"]) is None  # a flag only Hydra's help knows
