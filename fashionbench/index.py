"""One Annoy index per category over the shop's item embeddings."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex

from fashionbench.embed import ItemEmbeddings

METRICS = ("angular", "euclidean", "manhattan", "dot")


class IndexConfigError(ValueError):
    """An invalid ``index.*`` option."""


def validate_index_options(metric: str, n_trees: int, search_k: int = -1) -> None:
    """Raise IndexConfigError naming the option unless metric, n_trees and search_k are usable."""
    if metric not in METRICS:
        raise IndexConfigError(f"index.metric must be one of {list(METRICS)}, got {metric!r}")
    if not isinstance(n_trees, int) or n_trees < 1:
        raise IndexConfigError(f"index.n_trees must be an integer >= 1, got {n_trees!r}")
    if not isinstance(search_k, int) or (search_k < 1 and search_k != -1):
        raise IndexConfigError(f"index.search_k must be -1 (Annoy's default) or >= 1, got {search_k!r}")


@dataclass
class CategoryIndex:
    """An Annoy index of one category's shop items; Annoy id i is ``item_ids[i]``."""

    category: str
    annoy: AnnoyIndex
    item_ids: np.ndarray
    metric: str
    search_k: int = -1
    build_seconds: float = 0.0  # adding the items and building the trees; 0 for a loaded index

    @classmethod
    def build(
        cls, embeddings: ItemEmbeddings, metric: str = "angular", n_trees: int = 10,
        search_k: int = -1, seed: int = 0,
    ) -> CategoryIndex:
        """Index ``embeddings`` (all of one category); reproducible for a given seed."""
        validate_index_options(metric, n_trees, search_k)
        categories = set(embeddings.categories.tolist())
        if len(categories) != 1:
            raise ValueError(f"a CategoryIndex holds one category, got {sorted(categories)}")
        start = time.perf_counter()
        annoy = AnnoyIndex(embeddings.dim, metric)
        annoy.set_seed(seed)
        for position, vector in enumerate(embeddings.vectors):
            annoy.add_item(position, vector)
        annoy.build(n_trees, n_jobs=1)  # n_jobs=1: Annoy builds are reproducible only single-threaded
        seconds = time.perf_counter() - start
        return cls(categories.pop(), annoy, np.asarray(embeddings.item_ids), metric, search_k, seconds)

    def __len__(self) -> int:
        return len(self.item_ids)

    def recommend(self, query_item_ids: list[str], k: int) -> list[tuple[str, float]]:
        """The k items nearest to any query item (by its smallest distance), queries excluded.

        Each query asks Annoy for k + len(queries) neighbours, so that k remain after the
        queries themselves are removed.
        """
        positions = {item_id: i for i, item_id in enumerate(self.item_ids)}
        excluded = set(query_item_ids)
        best: dict[int, float] = {}
        for item_id in query_item_ids:
            neighbours, distances = self.annoy.get_nns_by_item(
                positions[item_id], k + len(excluded), search_k=self.search_k, include_distances=True
            )
            for position, distance in zip(neighbours, distances):
                if self.item_ids[position] not in excluded and distance < best.get(position, np.inf):
                    best[position] = distance
        ranked = sorted(best.items(), key=lambda pair: (pair[1], pair[0]))[:k]
        return [(str(self.item_ids[position]), float(distance)) for position, distance in ranked]

    def nearest_to_vector(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k items nearest to an embedding that need not be in the index."""
        neighbours, distances = self.annoy.get_nns_by_vector(
            vector, k, search_k=self.search_k, include_distances=True
        )
        return [(str(self.item_ids[p]), float(d)) for p, d in zip(neighbours, distances)]

    def save(self, directory: Path) -> list[Path]:
        """Write ``<category>.ann`` and ``<category>.json`` (item ids, metric, dim) to ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        ann_path = directory / f"{self.category}.ann"
        meta_path = directory / f"{self.category}.json"
        self.annoy.save(str(ann_path))
        meta = {"category": self.category, "metric": self.metric, "dim": self.annoy.f,
                "search_k": self.search_k, "item_ids": [str(i) for i in self.item_ids]}
        meta_path.write_text(json.dumps(meta))
        return [ann_path, meta_path]

    @classmethod
    def load(cls, directory: Path, category: str) -> CategoryIndex:
        """Memory-map an index written by ``save``."""
        meta = json.loads((directory / f"{category}.json").read_text())
        annoy = AnnoyIndex(meta["dim"], meta["metric"])
        annoy.load(str(directory / f"{category}.ann"))
        return cls(category, annoy, np.asarray(meta["item_ids"]), meta["metric"], meta["search_k"])


def build_shop_index(
    embeddings: ItemEmbeddings, metric: str = "angular", n_trees: int = 10, search_k: int = -1, seed: int = 0
) -> dict[str, CategoryIndex]:
    """One CategoryIndex per category present in ``embeddings``."""
    return {
        category: CategoryIndex.build(embeddings.of_category(category), metric, n_trees, search_k, seed)
        for category in dict.fromkeys(embeddings.categories.tolist())
    }
