"""Item embeddings: the output of the classifier's embedding layer for every shop item."""

from __future__ import annotations

import numpy as np

from fashionbench.data import Catalogue
from fashionbench.index.base import ItemEmbeddings
from fashionbench.model.classifier import Classifier, predict_in_batches

__all__ = ["ItemEmbeddings", "embed_items"]


def embed_items(classifier: Classifier, catalogue: Catalogue, batch_size: int = 128) -> ItemEmbeddings:
    """Embed every item of ``catalogue`` with the classifier's embedding layer (flattened)."""
    outputs = predict_in_batches(classifier.embedding_model(), catalogue.images, batch_size)
    vectors = outputs.reshape(len(catalogue), -1).astype(np.float32)
    return ItemEmbeddings(
        catalogue.items["item_id"].to_numpy(),
        catalogue.items["category"].to_numpy(),
        vectors,
        classifier.embedding_layer,
    )
