"""The composition root: every schema registered with Hydra, the config composed, checked and typed.

Every config group has a schema, a dataclass that lives beside the code it configures and is
registered here in Hydra's ConfigStore under ``<group>/<name>_schema``; the YAML files in
``configs/`` extend them (``defaults: [<name>_schema, _self_]``) and set only what differs, so
each default lives in one place: the dataclass field. No stage imports this module.

- The swappable parts are their own schemas: a data source (``data.synthetic.SyntheticSource``,
  ...), a users simulation (``users.simulation.TasteUsers``/``CourseUsers``) and an index backend
  (``index.registry.BACKENDS``) are each a dataclass of their options with the method that does
  the work (``load``, ``simulate``, ``build``).
- The fixed stages' schemas: ``model.schema.ModelConfig``, ``training.schema.TrainConfig``,
  ``evaluation.schema.EvalConfig``, ``tracking.settings.TrackingConfig``,
  ``data.catalogue_store.DataStoreConfig``, ``runtime.device.DeviceConfig``.

Composition checks types and names the key (``train.epochs=abc`` fails there; an integer is
accepted where a float is expected). Ranges are checked when the composed config becomes typed
objects (``experiment_config``): each schema's ``__post_init__`` raises a ``ConfigError`` whose
message names the option and its valid values, before any data is loaded or a model is built.
Nothing here imports TensorFlow: a config error answers in about a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from fashionbench.data.catalogue_store import DataStoreConfig
from fashionbench.data.deepfashion import DeepFashionSource
from fashionbench.data.deepfashion_inshop import DeepFashionInShopSource
from fashionbench.data.folders import FolderSource
from fashionbench.data.hm import HmSource
from fashionbench.data.image_csv import ImageCsvSource
from fashionbench.data.synthetic import SyntheticSource
from fashionbench.evaluation.schema import EvalConfig
from fashionbench.index.registry import BACKENDS
from fashionbench.model.schema import ModelConfig
from fashionbench.options import DEFAULT_SEED, ConfigError, Role, Stage, option, schema_roles
from fashionbench.runtime.device import DeviceConfig
from fashionbench.tracking.settings import TrackingConfig
from fashionbench.training.schema import TrainConfig
from fashionbench.users.interactions import InteractionUsers
from fashionbench.users.simulation import CourseUsers, TasteUsers

# The installed package carries configs/ as this module (see pyproject.toml), so the entry
# points and the compose API find it from any working directory, editable install or not.
CONFIG_MODULE = "fashionbench.configs"
CONFIG_NAME = "config"


@dataclass
class ExperimentConfig:
    """One experiment: data -> model -> train -> evaluate -> index -> users -> recommend -> track."""

    seed: int = option(DEFAULT_SEED, decides=Stage.DATA, seed=True)  # data.seed, model.seed, users.seed, ... read it
    # The knob swept most often, so it is top level: `-m freeze=2,4,8` (model.freeze reads it).
    freeze: int = option(ModelConfig.freeze, decides=Stage.TRAINING)
    run_name: str | None = option(None, decides=Stage.PLACEMENT)
    data: Any = MISSING  # a data source: SyntheticSource, ImageCsvSource, DeepFashionSource, FolderSource
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    index: Any = MISSING  # an index backend's config: index.registry.BACKENDS
    users: Any = MISSING  # the users: TasteUsers, CourseUsers (simulated), InteractionUsers (a real log)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    data_store: DataStoreConfig = field(default_factory=DataStoreConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)


SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"synthetic": SyntheticSource, "image_csv": ImageCsvSource, "deepfashion": DeepFashionSource,
             "folders": FolderSource, "hm": HmSource, "deepfashion_inshop": DeepFashionInShopSource},
    "model": {"resnet50": ModelConfig},
    "train": {"default": TrainConfig},
    "index": {kind: backend.config for kind, backend in BACKENDS.items()},
    "users": {"taste": TasteUsers, "course": CourseUsers, "interactions": InteractionUsers},
    "eval": {"default": EvalConfig},
    "tracking": {"mlflow": TrackingConfig},
}


# The config groups whose schema the defaults choose: each of their options is declared by every
# schema of the group (fashionbench.options.schema_roles).
CHOSEN_GROUPS = ("data", "index", "users")


@cache
def option_roles() -> dict[str, Role]:
    """What every option of every schema decides, by dotted name (``model.freeze``): the source of
    the fingerprints, of what ``compare`` counts as seeds and as users and splits, and of what is
    never a swept parameter. Raises UndeclaredOptionError naming a field declared without a role."""
    return schema_roles(ExperimentConfig, groups={group: SCHEMAS[group].values() for group in CHOSEN_GROUPS})


def register_schemas() -> None:
    """Put every schema in Hydra's ConfigStore (idempotent: storing again replaces)."""
    store = ConfigStore.instance()
    store.store(name="experiment_schema", node=ExperimentConfig)
    for group, schemas in SCHEMAS.items():
        for name, schema in schemas.items():
            store.store(group=group, name=f"{name}_schema", node=schema)


register_schemas()


def compose_config(overrides: list[str] | None = None) -> DictConfig:
    """The config the command line composes with these overrides (Hydra's compose API), for
    notebooks, benchmarks and tests. Raises Hydra's ConfigCompositionException naming a bad key."""
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=CONFIG_NAME, overrides=list(overrides or []))


def config_groups() -> dict[str, list[str]]:
    """Every config group of ``configs/`` and the options a command line can pick in it (its YAML
    files), by group path (``data``, ``hydra/launcher``). The schemas (``<name>_schema``, in Hydra's
    ConfigStore) are not options: a config file extends one. Read from the installed package's
    files, so it costs no composition."""

    def walk(folder, prefix: str):
        options = sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir()
                         if entry.is_file() and entry.name.endswith(".yaml"))
        if options and prefix:
            yield prefix, options
        for entry in sorted(folder.iterdir(), key=lambda entry: entry.name):
            if entry.is_dir() and not entry.name.startswith(("_", ".")):
                yield from walk(entry, f"{prefix}/{entry.name}" if prefix else entry.name)

    return dict(walk(resources.files(CONFIG_MODULE), ""))


def experiment_config(cfg: DictConfig | ExperimentConfig) -> ExperimentConfig:
    """The composed config as typed, validated objects: every schema's range checks run here.

    Raises the ConfigError (or a data source's CatalogueError, a users' UsersConfigError, an
    index's IndexConfigError) that names the invalid option.
    """
    if isinstance(cfg, ExperimentConfig):
        return cfg
    experiment = OmegaConf.to_object(cfg)
    if not isinstance(experiment, ExperimentConfig):  # a config composed without experiment_schema
        raise ConfigError("the config does not extend experiment_schema (configs/config.yaml's first default)")
    return experiment


def config_node(cfg: DictConfig | ExperimentConfig) -> DictConfig:
    """The config as an OmegaConf node, interpolations kept (``model.freeze: ${freeze}``): what a
    run logs, resolved in config.yaml and without the keys that only repeat another as params."""
    return OmegaConf.structured(cfg) if isinstance(cfg, ExperimentConfig) else cfg
