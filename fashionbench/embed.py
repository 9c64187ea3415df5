"""Item embeddings: the output of the classifier's embedding layer for every shop item."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fashionbench.data import Catalogue
from fashionbench.model import Classifier, predict_in_batches
from fashionbench.stage import StageResult


@dataclass(frozen=True)
class ItemEmbeddings(StageResult):
    """One vector per item; ``vectors[i]`` belongs to ``item_ids[i]`` of ``categories[i]``."""

    item_ids: np.ndarray
    categories: np.ndarray
    vectors: np.ndarray  # float32, (n, dim)
    layer: str

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def metrics(self) -> dict[str, float]:
        return {"embedding_dim": float(self.dim)}

    def of_category(self, category: str) -> ItemEmbeddings:
        mask = self.categories == category
        return ItemEmbeddings(self.item_ids[mask], self.categories[mask], self.vectors[mask], self.layer)


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
