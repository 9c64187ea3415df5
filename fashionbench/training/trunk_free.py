"""A cached run that never builds its frozen trunk.

Once a cached run has stored the trunk's activations of the train, validation and shop images
and, beside them in the trunk cache, what building its classifier gave (``model.built_tail``), a
later run with the same build and the same images needs nothing of the frozen trunk: it builds
the tail alone, trains it on the stored activations, and classifies and embeds the shop on them.
``trunk_free_start`` says whether a run can, holding every entry it needs (shared locks, as a hit
does) until it has used them; otherwise the run builds the whole classifier, as the first run
does, and ``BuildRecorder`` records the build for the next.

A record's key is everything the build depends on: the ``model.*`` options, the image size, the
dtype policy, the Keras and TensorFlow versions, the code that builds and cuts the classifier,
and the bytes of the weights file it loads. ImageNet weights that are not in the Keras cache are
never recorded: ``model.weights=auto`` may download them in one run and not in another. A record
is checked against its hash when read, and a damaged one is removed and the run builds the whole
classifier: the cache may make a run faster, never wrong.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import fashionbench.model.built_tail
import fashionbench.model.classifier
import fashionbench.model.freeze_split
from fashionbench.data import CATEGORIES, Catalogue
from fashionbench.data.checksums import file_hash
from fashionbench.index.base import ItemEmbeddings
from fashionbench.model.built_tail import BuiltTail, TailClassifier
from fashionbench.model.classifier import IMAGENET_NOTOP_FILE, Classifier, keras_models_dir
from fashionbench.model.embed import classify_and_embed
from fashionbench.model.freeze_split import boundary_note
from fashionbench.model.parts import built_backbone, load_layers, save_layers
from fashionbench.model.schema import NO_WEIGHTS, ModelConfig
from fashionbench.training.fit import TrainingResult, train_tail
from fashionbench.training.schema import TrainConfig
from fashionbench.training.trunk_cache import META, CachedFeatures, DamagedEntry, TrunkCache, weights_fingerprint

log = logging.getLogger(__name__)

# Bump when what a record holds, or what it means, changes.
RECORD_FORMAT = 1
RECORD_KIND = "built_tail"
VARIABLES_FILE = "tail.npz"
# The code whose changes change the build: its source is part of the key.
BUILDING_CODE = (fashionbench.model.classifier, fashionbench.model.freeze_split, fashionbench.model.built_tail,
                 sys.modules[__name__])
# What is redone when a record cannot be used (the trunk cache's log line).
REDONE = "the whole classifier is built and its build recorded again"


def build_key(options: ModelConfig, image_size: int) -> str | None:
    """The trunk cache's key for the record of the classifier ``options`` build (None when it
    cannot be pinned down: ImageNet weights not in the Keras cache)."""
    if options.weights in NO_WEIGHTS:
        weights = "random"
    elif options.weights in ("imagenet", "auto"):
        path = keras_models_dir() / IMAGENET_NOTOP_FILE
        if not path.is_file():
            return None
        weights = "imagenet:" + file_hash(path)
    else:
        weights = "file:" + file_hash(Path(options.weights))
    code = hashlib.sha256()
    for module in BUILDING_CODE:
        code.update(Path(module.__file__).read_bytes())
    parts = [RECORD_KIND, str(RECORD_FORMAT), weights, str(options.freeze), options.embedding_layer,
             ",".join(str(n) for n in options.dense_units), repr(float(options.dropout)), str(options.seed),
             str(image_size), ",".join(CATEGORIES), keras.config.dtype_policy().name, keras.backend.backend(),
             keras.__version__, tf.__version__, code.hexdigest()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


class BuildRecorder:
    """Records the build of a whole classifier in the trunk cache, for the runs after it.

    ``start`` right after ``build_classifier`` (before anything else draws from Python's random
    state), ``finish`` once the run has logged its model (the backbone's fingerprint is made then).
    Records nothing where a run could not start without its trunk: a record is there already, the
    key cannot be pinned down, or the classifier has no tail to run on stored activations (nothing
    frozen, or a frozen embedding layer)."""

    def __init__(self, cache: TrunkCache, key: str | None, seed: int) -> None:
        """``key``: the build's ``build_key``; ``seed``: ``model.seed``, which the build was seeded with."""
        self.cache = cache
        self.key = key
        self.seed = seed
        self.record: BuiltTail | None = None
        self.classifier: Classifier | None = None

    def start(self, classifier: Classifier, digests: dict[int, str]) -> None:
        """Capture ``classifier`` as built; ``digests``: the trunk's weight hashes, shared with the
        run's cache lookups (hashed once)."""
        random_state = random.getstate()
        if self.key is None or (self.cache.directory / self.key / META).exists():
            return
        tail = classifier.shop_tail()
        if tail is None:
            return
        trunk_fingerprint = weights_fingerprint(tail.split.trunk, digests)
        self.record = BuiltTail.capture(classifier, tail.split, trunk_fingerprint, self.seed, random_state)
        self.classifier = classifier

    def finish(self) -> None:
        """Store the record (its backbone fingerprint from the classifier, memoised when the run
        logged it); an I/O error is logged and the run goes on."""
        if self.record is None:
            return
        record = replace(self.record, backbone_fingerprint=built_backbone(self.classifier).fingerprint)
        if self.cache.store_entry(self.key, lambda folder: _write_record(record, self.key, folder)):
            log.info("trunk cache: recorded the build of this classifier (entry %s); runs with the same build and "
                     "images build its tail alone", self.key)
        self.record = None


@dataclass
class TrunkFreeStart:
    """A run's classifier built without its frozen trunk, and the stored activations it runs on,
    each held (its entry's shared lock) until ``release``."""

    classifier: TailClassifier
    boundary: tuple[str, ...]
    training_features: list[CachedFeatures]  # the train split's, then the validation split's (if any)
    shop_features: CachedFeatures
    seconds: float  # reading the training splits' activations

    def train(self, train: Catalogue, val: Catalogue, options: TrainConfig, *, seed: int,
              jit_compile: bool | None = None) -> TrainingResult:
        """Fit the tail on the stored activations (``training.fit.train_tail``)."""
        return train_tail(self.classifier.model, self.training_features, boundary_note(self.boundary), train, val,
                          options, seed=seed, feature_seconds=self.seconds, jit_compile=jit_compile)

    def shop_outputs(self, classifier: TailClassifier, shop: Catalogue, batch_size: int
                     ) -> tuple[np.ndarray, ItemEmbeddings]:
        """``training.shop_pass.shop_outputs`` of the shop, on its stored activations."""
        log.info("shop: the trunk's activations of %d items read from the trunk cache (%.2f s)", len(shop),
                 self.shop_features.seconds)
        return classify_and_embed(classifier, shop, batch_size, self.shop_features.arrays)

    def release(self) -> None:
        for features in (*self.training_features, self.shop_features):
            features.release()


def trunk_free_start(cache: TrunkCache, key: str | None, train: Catalogue, val: Catalogue, shop: Catalogue,
                     backbone_stored=None) -> TrunkFreeStart | None:
    """The run's classifier built without its frozen trunk, when the trunk cache holds the record
    of its build (``key``: ``build_key``) and the trunk's activations of ``train``, ``val`` and
    ``shop``; None (the run builds the whole classifier) when it does not.
    ``backbone_stored(fingerprint)``: whether the backbone is stored where the run's model will
    name it (a run that logs its model needs it)."""
    record = cache.read_entry(key, lambda folder: _read_record(folder, key), REDONE) if key is not None else None
    if record is None:
        return None
    if backbone_stored is not None and not backbone_stored(record.backbone_fingerprint):
        log.info("trunk cache: the whole classifier is built: its backbone %s is not in this experiment's backbone "
                 "store yet", record.backbone_fingerprint)
        return None
    started = time.perf_counter()
    found: list[CachedFeatures] = []
    for part in (train, val, shop):
        if part is val and not len(val):
            continue
        features = cache.stored_features(record.trunk_fingerprint, record.boundary, part.images)
        if features is None:
            for held in found:
                held.release()
            log.info("trunk cache: the whole classifier is built: not every split's activations are stored")
            return None
        found.append(features)
    seconds = time.perf_counter() - started
    try:
        classifier = record.classifier()
    except Exception as error:  # noqa: BLE001 - its hash checked, yet not a tail Keras can build: never trusted
        for held in found:
            held.release()
        cache.discard_entry(key, f"the build it records does not fit its tail: {type(error).__name__}: {error}",
                            REDONE)
        return None
    log.info("trunk cache: the classifier's tail built alone from the recorded build (entry %s); its frozen trunk is "
             "not built", key)
    return TrunkFreeStart(classifier, record.boundary, found[:-1], found[-1], seconds)


def _write_record(record: BuiltTail, key: str, folder: Path) -> None:
    save_layers(record.variables, folder / VARIABLES_FILE)
    (folder / META).write_text(json.dumps({"kind": RECORD_KIND, "format": RECORD_FORMAT, "key": key,
                                           "record": record.meta()}))


def _read_record(folder: Path, key: str) -> BuiltTail:
    """The record stored under ``key``; DamagedEntry when it cannot be trusted: unreadable, of
    another kind or format, not hashing to what it holds, or stored under another key (copied)."""
    try:
        meta = json.loads((folder / META).read_text())
        if not isinstance(meta, dict) or meta.get("kind") != RECORD_KIND or meta.get("format") != RECORD_FORMAT:
            raise DamagedEntry(f"{META} is not a built tail's record of format {RECORD_FORMAT}")
        if meta.get("key") != key:
            raise DamagedEntry(f"{META} records the build of key {meta.get('key')!r}, not of this entry's")
        return BuiltTail.from_meta(meta.get("record"), load_layers(folder / VARIABLES_FILE))
    except DamagedEntry:
        raise
    except Exception as error:  # noqa: BLE001 - whatever a damaged file makes json, numpy or the checks raise
        raise DamagedEntry(f"{type(error).__name__}: {str(error)[:200]}") from None
