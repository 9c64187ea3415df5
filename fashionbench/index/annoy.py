"""Annoy (Spotify's approximate nearest neighbours: a forest of random-projection trees), as the course used.

Builds are reproducible only with ``set_seed`` and ``build(n_trees, n_jobs=1)``; a saved index
is memory-mapped on ``load``, so processes share it by loading the file.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from annoy import AnnoyIndex

from fashionbench.index.base import CategoryIndex, IndexConfigError, ItemEmbeddings, check_metric
from fashionbench.index_quality import ShopIndexQuality, measure_shop_index

if TYPE_CHECKING:  # the package imports this module
    from fashionbench.index import ShopIndex



@dataclass
class AnnoyIndexConfig:
    """``index=annoy``: the options of an Annoy index, and ``build`` to make one."""

    metric: str = "angular"  # angular | euclidean | manhattan | dot
    n_trees: int = 10
    search_k: int = -1  # -1: Annoy's default (n_trees * k)
    seed: int = 0  # Annoy builds are reproducible only seeded and single-threaded
    # Annoy against exact brute force (fashionbench.index_quality), measured with every run:
    quality_k: int = 10  # recall@k with ties at the k-th distance tolerated (ann-benchmarks)
    quality_repeats: int = 3  # QPS = queries / best total search time over this many repeats

    def __post_init__(self) -> None:
        """IndexConfigError naming the option unless every option is usable."""
        check_metric(self.metric)
        if isinstance(self.n_trees, bool) or not isinstance(self.n_trees, int) or self.n_trees < 1:
            raise IndexConfigError(f"index.n_trees must be an integer >= 1, got {self.n_trees!r}")
        if not isinstance(self.search_k, int) or (self.search_k < 1 and self.search_k != -1):
            raise IndexConfigError(f"index.search_k must be -1 (Annoy's default) or >= 1, got {self.search_k!r}")
        if self.quality_k < 1:
            raise IndexConfigError(f"index.quality_k must be >= 1, got {self.quality_k}")
        if self.quality_repeats < 1:
            raise IndexConfigError(f"index.quality_repeats must be >= 1, got {self.quality_repeats}")

    def build(self, embeddings: ItemEmbeddings) -> AnnoyCategoryIndex:
        """Index ``embeddings`` (all of one category); the same seed builds the same index."""
        return AnnoyCategoryIndex.build(embeddings, self)

    def measure(self, shop_index: ShopIndex, embeddings: ItemEmbeddings) -> ShopIndexQuality:
        """Each category's Annoy index against exact search over the same vectors (ann-benchmarks)."""
        return measure_shop_index(shop_index, embeddings, self.quality_k, self.quality_repeats)


class AnnoyCategoryIndex(CategoryIndex):
    """An Annoy index of one category's items; Annoy id i is ``item_ids[i]``."""

    kind = "annoy"

    def __init__(self, category: str, annoy: AnnoyIndex, item_ids: np.ndarray, metric: str, search_k: int = -1,
                 build_seconds: float = 0.0) -> None:
        super().__init__(category, item_ids, metric, build_seconds)
        self.annoy = annoy
        self.search_k = search_k

    @classmethod
    def build(cls, embeddings: ItemEmbeddings, config: AnnoyIndexConfig) -> AnnoyCategoryIndex:
        category = embeddings.only_category()
        start = time.perf_counter()
        annoy = AnnoyIndex(embeddings.dim, config.metric)
        annoy.set_seed(config.seed)
        for position, vector in enumerate(embeddings.vectors):
            annoy.add_item(position, vector)
        annoy.build(config.n_trees, n_jobs=1)
        seconds = time.perf_counter() - start
        return cls(category, annoy, np.asarray(embeddings.item_ids), config.metric, config.search_k, seconds)

    def nearest(self, n: int, vector: np.ndarray | None = None, position: int | None = None
                ) -> tuple[list[int], list[float]]:
        if vector is not None:
            positions, distances = self.annoy.get_nns_by_vector(vector, n, search_k=self.search_k,
                                                                include_distances=True)
        else:
            positions, distances = self.annoy.get_nns_by_item(position, n, search_k=self.search_k,
                                                              include_distances=True)
        if self.metric == "dot":  # Annoy reports the inner product, larger is nearer
            distances = [-d for d in distances]
        return positions, distances

    def nbytes(self) -> int:
        """The size of the saved index file."""
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "index.ann"
            self.annoy.save(str(path))
            return path.stat().st_size

    def save(self, directory: Path) -> list[Path]:
        """Write ``<category>.ann`` and ``<category>.json`` (kind, item ids, metric, dim, search_k)."""
        directory.mkdir(parents=True, exist_ok=True)
        ann_path = directory / f"{self.category}.ann"
        self.annoy.save(str(ann_path))
        return [ann_path, self._write_meta(directory, dim=self.annoy.f, search_k=self.search_k)]

    @classmethod
    def load(cls, directory: Path, meta: dict) -> AnnoyCategoryIndex:
        """Memory-map an index written by ``save``."""
        annoy = AnnoyIndex(meta["dim"], meta["metric"])
        annoy.load(str(directory / f"{meta['category']}.ann"))
        return cls(meta["category"], annoy, np.asarray(meta["item_ids"]), meta["metric"], meta["search_k"])
