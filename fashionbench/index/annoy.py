"""Annoy (Spotify's approximate nearest neighbours: a forest of random-projection trees), as the course used.

Builds are reproducible only with ``set_seed`` and ``build(n_trees, n_jobs=1)``; a saved index
is memory-mapped on ``load``, so processes share it by loading the file.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from fashionbench.index.base import CategoryIndex, IndexConfig, IndexConfigError, ItemEmbeddings, check_integer
from fashionbench.options import Stage, option


@dataclass
class AnnoyIndexConfig(IndexConfig):
    """``index=annoy``: the options of an Annoy index, and ``build`` to make one."""

    n_trees: int = option(10, decides=Stage.INDEX)
    search_k: int = option(-1, decides=Stage.INDEX)  # -1: Annoy's default (n_trees * k)
    # Annoy builds are reproducible only seeded and single-threaded
    seed: int = option(0, decides=Stage.INDEX, seed=True)

    def __post_init__(self) -> None:
        """IndexConfigError naming the option unless every option is usable."""
        super().__post_init__()
        check_integer("n_trees", self.n_trees, 1)
        if not isinstance(self.search_k, int) or (self.search_k < 1 and self.search_k != -1):
            raise IndexConfigError(f"index.search_k must be -1 (Annoy's default) or >= 1, got {self.search_k!r}")

    def build(self, embeddings: ItemEmbeddings) -> AnnoyCategoryIndex:
        """Index ``embeddings`` (all of one category); the same seed builds the same index."""
        return AnnoyCategoryIndex.build(embeddings, self)


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
