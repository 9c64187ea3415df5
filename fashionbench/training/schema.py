"""Fine-tuning's options (``train.*``, ``configs/train/default.yaml``): ``training.fit`` and the
frozen-trunk cache (``training.trunk_cache``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fashionbench.options import ConfigError, Stage, option
from fashionbench.runtime.paths import absolute_path

CACHE_DTYPES = ("float32", "float16")


class TrainConfigError(ConfigError):
    """An invalid ``train.*`` option."""


class TrunkCacheConfigError(TrainConfigError):
    """An invalid ``train.cache_*`` option."""


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
