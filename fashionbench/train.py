"""Fine-tuning: ``model.fit`` on the train split, validated on the val split, timed."""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import tensorflow as tf

from fashionbench.data import Catalogue
from fashionbench.model import preprocess_images


@dataclass(frozen=True)
class TrainingResult:
    """What fitting measured: per-epoch history and wall-clock seconds inside ``fit``."""

    history: dict[str, list[float]]
    seconds: float  # the course's "Seconds per attempt": fit only, no data loading or evaluation

    @property
    def epochs(self) -> int:
        return len(next(iter(self.history.values()), []))


def classifier_dataset(catalogue: Catalogue, batch_size: int, shuffle_seed: int | None = None) -> tf.data.Dataset:
    """(preprocessed image, category index) batches, prefetched."""
    dataset = tf.data.Dataset.from_tensor_slices((catalogue.images, catalogue.labels))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(catalogue), seed=shuffle_seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(
        lambda images, labels: (preprocess_images(images), labels), num_parallel_calls=tf.data.AUTOTUNE
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def train_classifier(
    model: keras.Model,
    train: Catalogue,
    val: Catalogue,
    epochs: int = 2,
    batch_size: int = 32,
    seed: int = 0,
    verbose: int = 0,
) -> TrainingResult:
    """Fit ``model`` (compiled) on ``train``; ``val`` gives the per-epoch validation metrics."""
    if epochs < 1:
        raise ValueError(f"train.epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"train.batch_size must be >= 1, got {batch_size}")
    train_data = classifier_dataset(train, batch_size, shuffle_seed=seed)
    val_data = classifier_dataset(val, batch_size) if len(val) else None
    start = time.perf_counter()
    history = model.fit(train_data, validation_data=val_data, epochs=epochs, verbose=verbose,
                        shuffle=False)  # the dataset shuffles itself, seeded
    seconds = time.perf_counter() - start
    return TrainingResult({k: [float(v) for v in vs] for k, vs in history.history.items()}, seconds)

