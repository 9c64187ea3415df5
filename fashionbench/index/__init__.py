"""Indexes of the shop's item embeddings: one per category, behind one small interface.

As ann-benchmarks' ``BaseANN`` (fit, query, done), every backend implements the same few
methods, lives in its own module and has its own config file (``configs/index/<name>.yaml``):

- ``annoy`` (``index/annoy.py``): Spotify's Annoy, random-projection trees, as the course used;
- ``exact`` (``index/exact.py``): brute force, the reference every approximate index is measured against;
- ``hnsw`` (``index/hnsw.py``): HNSW graphs through faiss, an optional dependency.

A backend's config dataclass (``AnnoyIndexConfig``, ``ExactIndexConfig``, ``HnswIndexConfig``,
each an ``IndexConfig``) is its options and its ``build(embeddings)`` makes a ``CategoryIndex``.
Distances are "smaller is nearer" for every metric: for ``dot`` they are the negative inner
product (Annoy and faiss themselves report the inner product).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fashionbench.data import Catalogue
from fashionbench.index.annoy import AnnoyCategoryIndex, AnnoyIndexConfig
from fashionbench.index.base import (
    METRICS,
    CategoryIndex,
    IndexConfig,
    IndexConfigError,
    ItemEmbeddings,
    check_metric,
)
from fashionbench.index.exact import ExactCategoryIndex, ExactIndexConfig
from fashionbench.index.hnsw import HnswCategoryIndex, HnswIndexConfig
from fashionbench.stage import StageResult

BACKENDS: dict[str, type[CategoryIndex]] = {
    cls.kind: cls for cls in (AnnoyCategoryIndex, ExactCategoryIndex, HnswCategoryIndex)}

__all__ = ["BACKENDS", "METRICS", "AnnoyCategoryIndex", "AnnoyIndexConfig", "CategoryIndex", "ExactCategoryIndex",
           "ExactIndexConfig", "HnswCategoryIndex", "HnswIndexConfig", "IndexConfig", "IndexConfigError",
           "ItemEmbeddings", "ShopIndex", "build_shop_index", "check_metric", "load_index"]


def load_index(directory: Path, category: str) -> CategoryIndex:
    """The index of ``category`` saved in ``directory`` by any backend, chosen by the kind its
    ``<category>.json`` names (an index saved before backends had names is Annoy's)."""
    meta = json.loads((Path(directory) / f"{category}.json").read_text())
    return BACKENDS[meta.get("kind", "annoy")].load(Path(directory), meta)


@dataclass(frozen=True)
class ShopIndex(StageResult):
    """The shop (its items and the images the model saw) and one index per category of it.

    Its artifacts are what a recommender needs besides the classifier: the shop's item table and
    images, and the indexes.
    """

    shop: Catalogue
    indexes: dict[str, CategoryIndex]

    def __getitem__(self, category: str) -> CategoryIndex:
        return self.indexes[category]

    def items(self):
        return self.indexes.items()

    @property
    def backend(self) -> str:
        """The backend's kind ("hnsw"); one build uses one backend."""
        return "/".join(sorted({index.kind for index in self.indexes.values()}))

    stage = "index"

    def tags(self) -> dict[str, str]:
        """Which backend indexed the shop, to filter and group runs by (their metrics share names)."""
        from fashionbench.artifacts import TAG_INDEX_BACKEND

        return {TAG_INDEX_BACKEND: self.backend}

    def summary(self) -> str:
        sizes = ", ".join(f"{category} {len(index)}" for category, index in self.indexes.items())
        return f"{self.backend}, one per category: {sizes}"

    def item_ids(self) -> dict[str, list[str]]:
        """The indexed items per category."""
        return {category: index.item_ids.tolist() for category, index in self.indexes.items()}

    def write_artifacts(self, directory: Path) -> None:
        # Imported here: the artifact contract reads indexes back through this package.
        from fashionbench.artifacts import INDEXES, SHOP_IMAGES, SHOP_ITEMS, save_indexes, save_shop

        save_shop(self.shop, directory / SHOP_ITEMS, directory / SHOP_IMAGES)
        save_indexes(self.indexes, directory / INDEXES)


def build_shop_index(shop: Catalogue, embeddings: ItemEmbeddings, config: IndexConfig) -> ShopIndex:
    """One index per category of ``shop``, over its items' ``embeddings``, by ``config.build``
    (a backend's config: AnnoyIndexConfig, ExactIndexConfig, HnswIndexConfig)."""
    return ShopIndex(shop, {category: config.build(embeddings.of_category(category))
                            for category in dict.fromkeys(embeddings.categories.tolist())})
