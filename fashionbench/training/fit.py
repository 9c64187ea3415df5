"""Fine-tuning: ``model.fit`` on the train split, validated on the val split, timed.

With a ``TrunkCache`` the frozen trunk's activations are computed once (or read from disk)
and only the trainable tail + head is fitted on them; the tail shares the classifier's
layers, so the classifier ends up with the trained weights either way (see trunk_cache.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from fashionbench.artifacts import (
    CACHE_SECTION,
    FIT_SECONDS,
    TAG_TRAINING_REUSED_FROM,
    TAG_TRUNK_CACHE,
    TRAIN_SECONDS,
    TRAINING_SECTION,
    TRUNK_CACHE_USED,
)
from fashionbench.data import Catalogue
from fashionbench.data.rows import StoredRows, batched_rows
from fashionbench.model.classifier import preprocess_images
from fashionbench.model.freeze_split import split_at_freeze
from fashionbench.runtime import interrupts
from fashionbench.runtime.console import progress
from fashionbench.stage import StageResult
from fashionbench.training.schema import TrainConfig
from fashionbench.training.trunk_cache import CachedFeatures, TrunkCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrunkCacheReport:
    """Whether fitting used cached trunk activations, why (not), and what it saved."""

    used: bool
    reason: str  # the boundary when used, otherwise why not
    hits: int = 0
    misses: int = 0
    derived: int = 0  # misses computed from another freeze value's stored (upstream) boundary
    seconds: float = 0.0  # computing or reading the activations
    # Estimated: uncached, every epoch runs the frozen trunk over train and val once, each
    # time costing what computing the activations cost; a miss replaces one of those passes,
    # a hit all of them; minus what reading the activations cost here.
    seconds_saved: float = 0.0

    def metrics(self) -> dict[str, float]:
        return {TRUNK_CACHE_USED: float(self.used), CACHE_SECTION + "trunk_cache_hits": float(self.hits),
                CACHE_SECTION + "trunk_cache_misses": float(self.misses),
                CACHE_SECTION + "trunk_cache_derived": float(self.derived),
                CACHE_SECTION + "trunk_cache_seconds": self.seconds,
                CACHE_SECTION + "trunk_cache_seconds_saved": self.seconds_saved}


@dataclass(frozen=True)
class TrainingResult(StageResult):
    """What fitting measured: per-epoch history and wall-clock seconds of training."""

    history: dict[str, list[float]]
    # Training's wall time: without the trunk cache, model.fit (the course's "Seconds per
    # attempt"); with it, getting the trunk activations plus fitting the tail.
    seconds: float
    fit_seconds: float = 0.0  # model.fit alone (the tail's, with the cache)
    cache: TrunkCacheReport = field(default_factory=lambda: TrunkCacheReport(False, "train.cache=false"))

    @property
    def epochs(self) -> int:
        return len(next(iter(self.history.values()), []))

    stage = "train"

    def summary(self) -> str:
        last = {name: values[-1] for name, values in self.history.items() if values}
        scores = ", ".join(f"{name} {last[name]:.3f}" for name in ("accuracy", "val_accuracy") if name in last)
        cache = (f"trunk cache {self.cache.hits} hit(s), {self.cache.misses} miss(es)" if self.cache.used
                 else "no trunk cache")
        return f"{self.epochs} epochs, {scores}; {cache}"

    def metrics(self) -> dict[str, float]:
        return {TRAIN_SECONDS: self.seconds, FIT_SECONDS: self.fit_seconds, **self.cache.metrics()}

    def stepped_metrics(self) -> dict[str, list[float]]:
        """Per-epoch training curves: ``epoch_loss``, ``epoch_val_accuracy``..."""
        return {f"{TRAINING_SECTION}epoch_{name}": values for name, values in self.history.items()}

    def tags(self) -> dict[str, str]:
        return {TAG_TRUNK_CACHE: self.cache.reason}


@dataclass(frozen=True)
class ReusedTraining(StageResult):
    """Training that did not run: the classifier has the trained weights of an earlier FINISHED
    run whose data, model, training and seed settings and code were the same (tracking.reuse_training),
    as an index-only sweep needs. Its times are the source run's, so that tables of training
    time stay comparable."""

    source_run_id: str
    seconds: float  # the source run's train_seconds
    fit_seconds: float

    stage = "train"

    def summary(self) -> str:
        return (f"reused the trained weights of run {self.source_run_id} (its train_seconds {self.seconds:.1f}); "
                "tracking.reuse_training=false trains again")

    def metrics(self) -> dict[str, float]:
        return {TRAIN_SECONDS: self.seconds, FIT_SECONDS: self.fit_seconds}

    def tags(self) -> dict[str, str]:
        return {TAG_TRAINING_REUSED_FROM: self.source_run_id}


def classifier_dataset(catalogue: Catalogue, batch_size: int, shuffle_seed: int | None = None,
                       augment: bool = False) -> tf.data.Dataset:
    """(preprocessed image, category index) batches, read from the catalogue a batch at a time
    and prefetched; ``augment`` flips images at random."""
    dataset = batched_rows((catalogue.images, catalogue.labels), batch_size, shuffle_seed)
    if augment:
        dataset = dataset.map(lambda images, labels: (tf.image.random_flip_left_right(images, seed=shuffle_seed),
                                                      labels))
    dataset = dataset.map(
        lambda images, labels: (preprocess_images(images), labels), num_parallel_calls=tf.data.AUTOTUNE
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def features_dataset(features: tuple[np.ndarray | StoredRows, ...], labels: np.ndarray, batch_size: int,
                     shuffle_seed: int | None = None) -> tf.data.Dataset:
    """(boundary activations, category index) batches, read from the trunk cache's files a batch
    at a time and shuffled exactly as ``classifier_dataset`` (``batched_rows``): the same seed
    visits the items in the same order as uncached training does."""
    dataset = batched_rows((*features, labels), batch_size, shuffle_seed)
    to_float32 = lambda *batch: (tuple(tf.cast(x, tf.float32) for x in batch[:-1]), batch[-1])  # noqa: E731
    return dataset.map(to_float32, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def compile_arguments(options: TrainConfig, jit_compile: bool | None) -> dict:
    """What the classifier (or a tail built alone) is compiled with: Adam at ``train.learning_rate``."""
    # float(): Keras refuses an int learning rate, and a YAML "1" is one. Named: Keras numbers unnamed
    # optimizers within a process (adam, adam_1...), and the name is part of the architecture a run stores.
    return {"optimizer": keras.optimizers.Adam(learning_rate=float(options.learning_rate), name="adam"),
            "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"],
            "jit_compile": "auto" if jit_compile is None else jit_compile}


def train_classifier(
    model: keras.Model,
    train: Catalogue,
    val: Catalogue,
    options: TrainConfig,
    *,
    seed: int,
    cache: TrunkCache | None = None,
    trunk_digests: dict[int, str] | None = None,
    jit_compile: bool | None = None,
    verbose: int = 0,
) -> TrainingResult:
    """Compile ``model`` with Adam at ``options.learning_rate`` and fit it on ``train`` for
    ``options.epochs``; ``val`` gives the per-epoch validation metrics. ``seed`` orders the
    shuffled training items.

    ``cache``: fit the trainable tail on the frozen trunk's cached activations (same
    result within float tolerance). It is not used, with the reason in the report, when
    ``options.augment`` is on, nothing is frozen, or the activations would exceed
    ``train.cache_max_gb`` (the images are streamed instead). ``trunk_digests``: the frozen
    trunk's weight hashes, when the run looked it up already (``TrunkCache.features``).

    ``jit_compile`` (``device.jit_compile``): XLA-compile the training step; None is Keras'
    "auto" (on a GPU only).
    """
    callbacks = [EpochProgress(options.epochs)]
    model.compile(**compile_arguments(options, jit_compile))
    epochs, batch_size, augment = options.epochs, options.batch_size, options.augment
    if cache is not None:
        if augment:
            reason = "train.augment=true: augmented images differ every epoch, so trunk activations cannot be reused"
        else:
            split, reason = split_at_freeze(model)
            needed = cache.activation_bytes(split, len(train) + len(val)) if split is not None else 0
            if needed > cache.max_bytes:  # the images are streamed instead: never held whole in memory
                reason = (f"the trunk activations ({needed / 1e9:.2f} GB) exceed train.cache_max_gb "
                          f"({cache.max_bytes / 1e9:.2f} GB)")
            elif split is not None:
                return _train_tail_on_cache(model, split, reason, cache, train, val, epochs, batch_size, seed, verbose,
                                            callbacks, {} if trunk_digests is None else trunk_digests)
        log.info("trunk cache not used: %s", reason)
        report = TrunkCacheReport(False, reason)
    else:
        report = TrunkCacheReport(False, "train.cache=false")

    train_data = classifier_dataset(train, batch_size, shuffle_seed=seed, augment=augment)
    val_data = classifier_dataset(val, batch_size) if len(val) else None
    start = time.perf_counter()
    history = model.fit(train_data, validation_data=val_data, epochs=epochs, verbose=verbose,
                        shuffle=False, callbacks=callbacks)  # the dataset shuffles itself, seeded
    seconds = time.perf_counter() - start
    return TrainingResult(_floats(history.history), seconds, fit_seconds=seconds, cache=report)


def train_tail(tail: keras.Model, features: list[CachedFeatures], boundary: str, train: Catalogue, val: Catalogue,
               options: TrainConfig, *, seed: int, feature_seconds: float, jit_compile: bool | None = None,
               verbose: int = 0) -> TrainingResult:
    """Compile and fit a tail built without its frozen trunk (``model.built_tail``) on the trunk's
    stored activations of ``train`` and ``val`` (``features``, read in ``feature_seconds``; their
    leases released here), as ``train_classifier`` fits the tail it cuts from a whole classifier."""
    start = time.perf_counter() - feature_seconds
    callbacks = [EpochProgress(options.epochs)]
    tail.compile(**compile_arguments(options, jit_compile))
    return _fit_on_features(tail, features, boundary, train, val, options.epochs, options.batch_size, seed, verbose,
                            callbacks, start, feature_seconds)


def _train_tail_on_cache(model, split, boundary, cache, train, val, epochs, batch_size, seed, verbose, callbacks,
                         digests):
    start = time.perf_counter()
    # ``digests``: the frozen trunk's weights, hashed once for both splits (and the shop's passes)
    parts = [cache.features(split, train.images, digests)] + \
        ([cache.features(split, val.images, digests)] if len(val) else [])
    feature_seconds = time.perf_counter() - start
    # The tail is compiled as the classifier was, with the classifier's own optimizer (it
    # finds each variable's slots by the variable, not by position): the updates are the ones
    # uncached training makes, and the classifier keeps the optimizer state, as when saved.
    arguments = keras.saving.deserialize_keras_object(model.get_compile_config())
    split.tail.compile(**{**arguments, "optimizer": model.optimizer})
    return _fit_on_features(split.tail, parts, boundary, train, val, epochs, batch_size, seed, verbose, callbacks,
                            start, feature_seconds)


def _fit_on_features(tail, parts, boundary, train, val, epochs, batch_size, seed, verbose, callbacks, start,
                     feature_seconds):
    """Fit the compiled ``tail`` on the boundary activations ``parts`` (train, then val if any),
    releasing their leases after; ``start``: when getting the activations began."""
    hits = sum(part.hit for part in parts)
    train_data = features_dataset(parts[0].arrays, train.labels, batch_size, shuffle_seed=seed)
    val_data = features_dataset(parts[1].arrays, val.labels, batch_size) if len(val) else None
    fit_start = time.perf_counter()
    try:
        history = tail.fit(train_data, validation_data=val_data, epochs=epochs, verbose=verbose, shuffle=False,
                           callbacks=callbacks)
    finally:  # read entries may be evicted by other jobs again
        for part in parts:
            part.release()
    fit_seconds = time.perf_counter() - fit_start
    seconds = time.perf_counter() - start
    saved = sum((epochs if part.hit else epochs - 1) * part.compute_seconds for part in parts) \
        - sum(part.seconds for part in parts if part.hit)
    derived = sum(part.derived_from is not None for part in parts)
    report = TrunkCacheReport(True, boundary, hits, len(parts) - hits, derived, feature_seconds, saved)
    log.info("trunk cache: %s, %d hit(s), %d miss(es) (%d from a stored upstream boundary), %.1f s getting "
             "activations, ~%.1f s saved", boundary, report.hits, report.misses, derived, feature_seconds, saved)
    return TrainingResult(_floats(history.history), seconds, fit_seconds=fit_seconds, cache=report)


class EpochProgress(keras.callbacks.Callback):
    """A progress bar over the epochs (on a terminal only; see fashionbench.runtime.console.progress),
    and a checkpoint for a signal whose exception was swallowed (``runtime.interrupts``). Not at
    each batch: a batch hook would make Keras run every callback synchronously."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.bar = progress(range(epochs), "train", epochs)
        self.epochs = iter(self.bar)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        next(self.epochs, None)
        if logs and hasattr(self.bar, "set_postfix"):
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in logs.items() if "accuracy" in k})
        interrupts.raise_pending()  # a Ctrl-C that a finalizer swallowed stops training here

    def on_train_end(self, logs: dict | None = None) -> None:
        if hasattr(self.bar, "close"):
            self.bar.close()


def _floats(history: dict) -> dict[str, list[float]]:
    return {k: [float(v) for v in vs] for k, vs in history.items()}
