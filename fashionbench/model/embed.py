"""Item embeddings: the output of the classifier's embedding layer for every shop item."""

from __future__ import annotations

import numpy as np

from fashionbench.data import Catalogue
from fashionbench.index.base import ItemEmbeddings
from fashionbench.model.classifier import Classifier

__all__ = ["ItemEmbeddings", "classify_and_embed", "embed_items"]


def embed_items(classifier: Classifier, catalogue: Catalogue, batch_size: int = 128) -> ItemEmbeddings:
    """Embed every item of ``catalogue`` with the classifier's embedding layer (flattened)."""
    return classify_and_embed(classifier, catalogue, batch_size)[1]


def classify_and_embed(classifier: Classifier, catalogue: Catalogue, batch_size: int = 128,
                       activations: tuple | None = None) -> tuple[np.ndarray, ItemEmbeddings]:
    """The classifier's probabilities for every item of ``catalogue`` and the items' embeddings, in
    one pass over the images (``Classifier.shop_model``), or over the frozen trunk's
    ``activations`` of them (``Classifier.shop_tail``)."""
    probabilities, vectors = classifier.probabilities_and_embeddings(catalogue.images, batch_size, activations)
    embeddings = ItemEmbeddings(
        catalogue.items["item_id"].to_numpy(),
        catalogue.items["category"].to_numpy(),
        vectors,
        classifier.embedding_layer,
    )
    return probabilities, embeddings
