"""The shop classified and embedded on the frozen trunk's cached activations.

A run passes the shop (the test split) through the classifier twice, untrained (a reference)
and trained, and every run of a sweep with the same weights and freeze value passes the same
shop through the same frozen trunk. With the trunk cache, the trunk's activations of the shop's
images come from it, as the training split's do, and only the tail runs on them
(``Classifier.shop_tail``): the same outputs (bit for bit on a CPU, within float rounding
elsewhere, as for training: tests/test_trunk_cache.py), without the whole network's pass over
the shop and without tracing it (about a second for ResNet50).
"""

from __future__ import annotations

import logging

import numpy as np

from fashionbench.data import Catalogue
from fashionbench.index.base import ItemEmbeddings
from fashionbench.model.classifier import Classifier
from fashionbench.model.embed import classify_and_embed
from fashionbench.training.trunk_cache import TrunkCache

log = logging.getLogger(__name__)


def shop_outputs(classifier: Classifier, shop: Catalogue, batch_size: int, cache: TrunkCache | None,
                 digests: dict[int, str] | None = None) -> tuple[np.ndarray, ItemEmbeddings]:
    """``model.embed.classify_and_embed`` of ``shop``: on the frozen trunk's activations from
    ``cache`` when one is given and the classifier has a tail to run them through, else through
    the whole network. ``digests``: the trunk's weight hashes, shared with the other lookups of
    the same classifier (``TrunkCache.features``)."""
    tail = classifier.shop_tail() if cache is not None else None
    if tail is None:
        return classify_and_embed(classifier, shop, batch_size)
    features = cache.features(tail.split, shop.images, digests)
    try:
        outputs = classify_and_embed(classifier, shop, batch_size, features.arrays)
    finally:
        features.release()
    how = "read" if features.hit else "computed and stored" if features.stored else "computed, not stored"
    log.info("shop: the trunk's activations of %d items %s from the trunk cache (%.2f s)", len(shop), how,
             features.seconds)
    return outputs
