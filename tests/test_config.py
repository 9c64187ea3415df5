"""The config composes through Hydra as a user composes it on the command line."""

import pytest
from hydra.errors import ConfigCompositionException

from tests.conftest import compose_config


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
