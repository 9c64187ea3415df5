"""The experiment's configuration: typed schemas that Hydra composes, checks and validates.

Every config group has a schema, registered in Hydra's ConfigStore under ``<group>/<name>_schema``;
the YAML files in ``configs/`` extend them (``defaults: [<name>_schema, _self_]``) and set only
what differs from the schema, so each default lives in one place: the dataclass field.

- The swappable parts are their own schemas: a data source (``fashionbench.data.*Source``), a
  users simulation (``fashionbench.users.simulation.TasteUsers``/``CourseUsers``) and an index backend
  (``fashionbench.index.AnnoyIndexConfig``/``ExactIndexConfig``/``HnswIndexConfig``) are each a dataclass of their
  options with the method that does the work (``load``, ``simulate``, ``build``).
- The fixed stages' schemas are below: model, train, eval, tracking, data_store, device.

Composition checks types and names the key (``train.epochs=abc`` fails there; an integer is
accepted where a float is expected). Ranges are checked when the composed config becomes typed
objects (``experiment_config``): each schema's ``__post_init__`` raises a ``ConfigError`` whose
message names the option and its valid values, before any data is loaded or a model is built.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from fashionbench.data.deepfashion import DeepFashionSource
from fashionbench.data.folders import FolderSource
from fashionbench.data.image_csv import ImageCsvSource
from fashionbench.data.synthetic import SyntheticSource
from fashionbench.evaluation.references import REFERENCES
from fashionbench.index import AnnoyIndexConfig, ExactIndexConfig, HnswIndexConfig
from fashionbench.options import Role, Stage, option, schema_roles
from fashionbench.runtime.paths import absolute_path
from fashionbench.users.simulation import CourseUsers, TasteUsers

# The installed package carries configs/ as this module (see pyproject.toml), so the entry
# points and the compose API find it from any working directory, editable install or not.
CONFIG_MODULE = "fashionbench.configs"
CONFIG_NAME = "config"
DEFAULT_SEED = 0
# ResNet50 without its top has 175 layers, its input layer included: freeze=N trains the last N.
RESNET50_LAYERS = 175
CACHE_DTYPES = ("float32", "float16")
NO_WEIGHTS = (None, "null", "none", "random")


class ConfigError(ValueError):
    """An invalid option; the message names it (``train.epochs``) and what was expected."""


class ModelConfigError(ConfigError):
    """An invalid ``model.*`` option."""


class TrainConfigError(ConfigError):
    """An invalid ``train.*`` option."""


class TrunkCacheConfigError(TrainConfigError):
    """An invalid ``train.cache_*`` option."""


class EvalConfigError(ConfigError):
    """An invalid ``eval.*`` option."""


@dataclass
class ModelConfig:
    """The classifier (fashionbench.model.classifier): ResNet50 backbone, the course's head, the embedding layer."""

    # imagenet | auto (ImageNet if Keras can load it, else random) | null (random) | /path/to/weights.h5
    weights: str | None = option("auto", decides=Stage.TRAINING)
    freeze: int = option(4, decides=Stage.TRAINING)  # train the last N backbone layers, freeze the rest (0..175)
    # pool (2048) | dense_512 | dense_128 | softmax | any backbone layer name
    embedding_layer: str = option("pool", decides=Stage.EMBEDDING)
    dense_units: list[int] = option(factory=lambda: [512, 128], decides=Stage.TRAINING)
    dropout: float = option(0.3, decides=Stage.TRAINING)
    # initial weights, dropout and the order training visits the items
    seed: int = option(DEFAULT_SEED, decides=Stage.TRAINING, seed=True)

    def __post_init__(self) -> None:
        if isinstance(self.freeze, bool) or not isinstance(self.freeze, int) or not 0 <= self.freeze <= RESNET50_LAYERS:
            raise ModelConfigError(
                f"model.freeze must be an integer in [0, {RESNET50_LAYERS}] (ResNet50 has {RESNET50_LAYERS} "
                f"layers; freeze=N trains the last N), got {self.freeze!r}"
            )
        if len(self.dense_units) != 2 or min(self.dense_units) < 1:
            raise ModelConfigError(f"model.dense_units must be two layer widths >= 1, got {list(self.dense_units)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.weights not in (*NO_WEIGHTS, "imagenet", "auto"):
            path = absolute_path(self.weights)  # relative to where the command was launched, in every job
            if not path.is_file():
                raise ModelConfigError(
                    f"model.weights={self.weights!r}: expected 'imagenet', 'auto', null or the path of an "
                    f"existing weights file for ResNet50 without its top, and no file is at {path}"
                )
            self.weights = str(path)


@dataclass
class TrainConfig:
    """Fine-tuning (fashionbench.training.fit): Adam, ``model.fit`` on the train split, timed."""

    # From random initialisation the frozen trunk's pooled features share a large offset, and the
    # head needs small steps and many of them to learn past it: at 3 epochs and 1e-3 it predicted
    # one category for every item in 3 of 5 seeds (README, "A classifier that learns").
    epochs: int = option(30, decides=Stage.TRAINING)
    batch_size: int = option(32, decides=Stage.TRAINING)
    learning_rate: float = option(3e-4, decides=Stage.TRAINING)  # Adam
    # Frozen-trunk cache (fashionbench.training.trunk_cache): the activations crossing the freeze
    # boundary are computed once per (trunk weights, images, boundary); only the tail is fitted.
    cache: bool = option(True, decides=Stage.TRAINING)
    # null: $FASHIONBENCH_CACHE_DIR, else .cache/trunk; relative to where the command is launched (every job
    # of a sweep shares it, hydra.job.chdir=true too); an absolute path puts it on shared storage.
    cache_dir: str | None = option(None, decides=Stage.PLACEMENT)
    cache_max_gb: float = option(5.0, decides=Stage.PLACEMENT)  # least recently used entries are evicted past this
    cache_dtype: str = option("float32", decides=Stage.TRAINING)  # float16 halves the disk; probabilities move by ~1e-3
    # random horizontal flips; turns the cache off (logged reason)
    augment: bool = option(False, decides=Stage.TRAINING)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise TrainConfigError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise TrainConfigError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise TrainConfigError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        check_cache_options(self.cache_max_gb, self.cache_dtype)

    @property
    def cache_directory(self) -> Path:
        return absolute_path(self.cache_dir or os.environ.get("FASHIONBENCH_CACHE_DIR") or ".cache/trunk")


def check_cache_options(max_gb: float, dtype: str) -> None:
    """TrunkCacheConfigError naming ``train.cache_max_gb`` or ``train.cache_dtype`` unless both are usable."""
    if isinstance(max_gb, bool) or not isinstance(max_gb, (int, float)) or not max_gb > 0:
        raise TrunkCacheConfigError(f"train.cache_max_gb must be a number > 0, got {max_gb!r}")
    if dtype not in CACHE_DTYPES:
        raise TrunkCacheConfigError(f"train.cache_dtype must be one of {list(CACHE_DTYPES)}, got {dtype!r}")


@dataclass
class EvalConfig:
    """Evaluation: classification on the test split (fashionbench.evaluation.classification), and recommendations
    of the model and the reference ladder on every (user, category) pair (fashionbench.evaluation.pairs)."""

    k: int = option(5, decides=Stage.EVALUATION)  # the headline: precision@k (precision_at_k)
    ks: list[int] = option(factory=lambda: [5, 10], decides=Stage.EVALUATION)  # every metric at each of these too
    # of each user's favourites per category, hidden and to be found
    holdout_fraction: float = option(0.5, decides=Stage.USERS)
    batch_size: int = option(128, decides=Stage.EMBEDDING)  # for prediction and embedding
    # Reference recommenders scored on the same pairs (fashionbench.evaluation.references), floor to ceiling.
    references: list[str] = option(factory=lambda: list(REFERENCES), decides=Stage.EVALUATION)
    # the pixels reference: thumbnails of this many pixels a side
    pixels_size: int = option(8, decides=Stage.EVALUATION)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise EvalConfigError(f"eval.k must be >= 1, got {self.k}")
        if not self.ks or min(self.ks) < 1:
            raise EvalConfigError(f"eval.ks must list cutoffs >= 1, got {list(self.ks)}")
        unknown = sorted(set(self.references) - set(REFERENCES))
        if unknown:
            raise EvalConfigError(f"eval.references: unknown {unknown}; expected some of {list(REFERENCES)}")
        if self.pixels_size < 1:
            raise EvalConfigError(f"eval.pixels_size must be >= 1, got {self.pixels_size}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise EvalConfigError(f"eval.holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.batch_size < 1:
            raise EvalConfigError(f"eval.batch_size must be >= 1, got {self.batch_size}")


@dataclass
class TrackingConfig:
    """Where runs are tracked (fashionbench.tracking)."""

    # null: $MLFLOW_TRACKING_URI if set, else mlflow.db where the command is launched (a SQLite file);
    # a server: http://host:5000 (configs/tracking/server.yaml, experiments/scale_out/README.md).
    uri: str | None = option(None, decides=Stage.PLACEMENT)
    experiment_name: str = option("fashionbench", decides=Stage.PLACEMENT)
    # null: mlartifacts/ beside a SQLite store; a server's artifact root
    artifact_location: str | None = option(None, decides=Stage.PLACEMENT)
    # log the run's model: its trainable layers; the frozen backbone once per experiment
    log_model: bool = option(True, decides=Stage.PLACEMENT)
    # Set by the sweep callback on every job of a multirun (an override Hydra passes to each
    # job's config, so it reaches workers under any launcher): the sweep's parent run.
    parent_run_id: str | None = option(None, decides=Stage.PLACEMENT)
    # A multirun skips a job whose config (tracking and naming aside) has a FINISHED run in the
    # experiment, and returns that run's headline metric; false runs every job again.
    resume: bool = option(True, decides=Stage.PLACEMENT)
    # A run whose data, model, training and seed settings and code match a FINISHED run with a
    # logged model reuses its trained weights instead of training (tag training_reused_from).
    reuse_training: bool = option(True, decides=Stage.PLACEMENT)


@dataclass
class DataStoreConfig:
    """The catalogue store (fashionbench.data.catalogue_store): decode or draw a data source once.

    Top level, not in data/: it applies to every source, and a source's options are its own."""

    enabled: bool = option(True, decides=Stage.PLACEMENT)
    # null: $FASHIONBENCH_DATA_STORE, else .cache/catalogues (as train.cache_dir)
    dir: str | None = option(None, decides=Stage.PLACEMENT)

    @property
    def directory(self) -> Path:
        return absolute_path(self.dir or os.environ.get("FASHIONBENCH_DATA_STORE") or ".cache/catalogues")


@dataclass
class DeviceConfig:
    """How TensorFlow uses the machine (fashionbench.runtime.device), set at the start of a run.

    Top level, not a config group: every default suits a CPU and a GPU alike."""

    # Keras' mixed_float16: float16 compute with float32 weights and a float32 softmax, loss
    # scaling on. About 2x on GPUs with tensor cores; runs (slowly) on a CPU. Probabilities move.
    mixed_precision: bool = option(False, decides=Stage.TRAINING)
    # XLA-compile the training step (model.fit) and, when true, let XLA cluster the prediction
    # functions. null: Keras' "auto" (XLA on a GPU, off on a CPU-only machine).
    jit_compile: bool | None = option(None, decides=Stage.TRAINING)
    # Take GPU memory as needed instead of all of it at start, so parallel jobs can share a GPU.
    memory_growth: bool = option(True, decides=Stage.PLACEMENT)


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
    index: Any = MISSING  # an index backend: AnnoyIndexConfig, ExactIndexConfig, HnswIndexConfig
    users: Any = MISSING  # a users simulation: TasteUsers, CourseUsers
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    data_store: DataStoreConfig = field(default_factory=DataStoreConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)


SCHEMAS: dict[str, dict[str, type]] = {
    "data": {"synthetic": SyntheticSource, "image_csv": ImageCsvSource, "deepfashion": DeepFashionSource,
             "folders": FolderSource},
    "model": {"resnet50": ModelConfig},
    "train": {"default": TrainConfig},
    "index": {"annoy": AnnoyIndexConfig, "exact": ExactIndexConfig, "hnsw": HnswIndexConfig},
    "users": {"taste": TasteUsers, "course": CourseUsers},
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
