"""The index stage: the shop and one index per category of it, over the items' embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fashionbench.artifacts import INDEXES, SHOP_IMAGES, SHOP_ITEMS, TAG_INDEX_BACKEND
from fashionbench.data import Catalogue
from fashionbench.data.artifact_files import save_shop
from fashionbench.index.base import CategoryIndex, IndexConfig, ItemEmbeddings
from fashionbench.index.store import save_indexes
from fashionbench.stage import StageResult


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
        return {TAG_INDEX_BACKEND: self.backend}

    def summary(self) -> str:
        sizes = ", ".join(f"{category} {len(index)}" for category, index in self.indexes.items())
        return f"{self.backend}, one per category: {sizes}"

    def item_ids(self) -> dict[str, list[str]]:
        """The indexed items per category."""
        return {category: index.item_ids.tolist() for category, index in self.indexes.items()}

    def write_artifacts(self, directory: Path) -> None:
        save_shop(self.shop, directory / SHOP_ITEMS, directory / SHOP_IMAGES)
        save_indexes(self.indexes, directory / INDEXES)


def build_shop_index(shop: Catalogue, embeddings: ItemEmbeddings, config: IndexConfig) -> ShopIndex:
    """One index per category of ``shop``, over its items' ``embeddings``, by ``config.build``
    (a backend's config: ``index.registry.BACKENDS``)."""
    return ShopIndex(shop, {category: config.build(embeddings.of_category(category))
                            for category in dict.fromkeys(embeddings.categories.tolist())})
