"""The interface every index backend implements (see fashionbench/index/__init__.py), and the
item vectors it indexes."""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from fashionbench.artifacts import EMBEDDING_DIM
from fashionbench.options import ConfigError, Stage, option
from fashionbench.stage import StageResult

METRICS = ("angular", "euclidean", "manhattan", "dot")


@dataclass(frozen=True)
class ItemEmbeddings(StageResult):
    """One vector per item; ``vectors[i]`` belongs to ``item_ids[i]`` of ``categories[i]``.

    What ``fashionbench.model.embed.embed_items`` makes of the shop, and what every index and
    reference recommender is built from."""

    item_ids: np.ndarray
    categories: np.ndarray
    vectors: np.ndarray  # float32, (n, dim)
    layer: str  # what made the vectors: the embedding layer, or a reference's name

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    stage = "embed"

    def summary(self) -> str:
        return f"{len(self.item_ids)} shop items, {self.dim}-d ({self.layer})"

    def metrics(self) -> dict[str, float]:
        return {EMBEDDING_DIM: float(self.dim)}

    def only_category(self) -> str:
        """The one category of these items (what a CategoryIndex holds); ValueError for several or none."""
        categories = set(self.categories.tolist())
        if len(categories) != 1:
            raise ValueError(f"a CategoryIndex holds one category, got {sorted(categories)}")
        return categories.pop()

    def of_category(self, category: str) -> ItemEmbeddings:
        mask = self.categories == category
        return ItemEmbeddings(self.item_ids[mask], self.categories[mask], self.vectors[mask], self.layer)


class IndexConfigError(ConfigError):
    """An invalid ``index.*`` option; the message names it and the valid values."""


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise IndexConfigError(f"index.metric must be one of {list(METRICS)}, got {metric!r}")


def check_integer(option: str, value: object, minimum: int) -> None:
    """IndexConfigError naming ``index.<option>`` unless ``value`` is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise IndexConfigError(f"index.{option} must be an integer >= {minimum}, got {value!r}")


@dataclass
class IndexConfig(ABC):
    """What every backend's options share: the metric, and how each run measures the index it
    builds against exact search (``fashionbench.index.quality``, as ann-benchmarks counts it).

    A backend's config extends this with its own options and implements ``build``. The quality
    options are keyword-only so that they come after each backend's own options.
    """

    metric: str = option("angular", decides=Stage.INDEX)  # angular | euclidean | manhattan | dot
    # recall@k with ties at the k-th distance tolerated (ann-benchmarks)
    quality_k: int = option(10, decides=Stage.INDEX, kw_only=True)
    # QPS = queries / best total search time over this many repeats
    quality_repeats: int = option(3, decides=Stage.INDEX, kw_only=True)

    def __post_init__(self) -> None:
        """IndexConfigError naming the option unless the shared options are usable."""
        check_metric(self.metric)
        if self.quality_k < 1:
            raise IndexConfigError(f"index.quality_k must be >= 1, got {self.quality_k}")
        if self.quality_repeats < 1:
            raise IndexConfigError(f"index.quality_repeats must be >= 1, got {self.quality_repeats}")

    @abstractmethod
    def build(self, embeddings: ItemEmbeddings) -> CategoryIndex:
        """Index ``embeddings`` (all of one category)."""


class CategoryIndex(ABC):
    """The shop items of one category, searchable by item and by vector.

    Position i is ``item_ids[i]``. Subclasses implement ``nearest`` (positions and distances
    of the n nearest to a vector or to an indexed item), ``save`` and ``load``; recommending
    from several query items is the same for every backend.
    """

    kind: ClassVar[str]  # the backend's name, as in index=<kind> and in the saved metadata

    def __init__(self, category: str, item_ids: np.ndarray, metric: str, build_seconds: float = 0.0) -> None:
        self.category = category
        self.item_ids = np.asarray(item_ids)
        self.metric = metric
        self.build_seconds = build_seconds  # adding the items and building; 0 for a loaded index
        self._positions = {str(item_id): i for i, item_id in enumerate(self.item_ids)}

    def __len__(self) -> int:
        return len(self.item_ids)

    @abstractmethod
    def nearest(self, n: int, vector: np.ndarray | None = None, position: int | None = None
                ) -> tuple[list[int], list[float]]:
        """Positions and distances (smaller is nearer) of the n items nearest to ``vector``, or to
        the indexed item at ``position`` (that item included), nearest first."""

    @abstractmethod
    def nbytes(self) -> int:
        """What the index takes on disk, in bytes."""

    @abstractmethod
    def save(self, directory: Path) -> list[Path]:
        """Write the index to ``directory`` as ``<category>.*`` files, ``<category>.json`` included."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, meta: dict) -> CategoryIndex:
        """The index ``save`` wrote; ``meta`` is its ``<category>.json``."""

    def position_of(self, item_id: str) -> int:
        return self._positions[str(item_id)]

    def recommend(self, query_item_ids: list[str], k: int) -> list[tuple[str, float]]:
        """The k items nearest to any query item (by its smallest distance), queries excluded.

        Each query asks for k + len(queries) neighbours, so that k remain after the queries
        themselves are removed. Ties are broken by position, so the answer is deterministic.
        """
        return self.recommend_many([query_item_ids], k)[0]

    def recommend_many(self, queries: Sequence[Sequence[str]], k: int) -> list[list[tuple[str, float]]]:
        """``recommend`` for each list of query items in ``queries``, in order.

        A neighbour search (item, n) that several lists share is made once: an evaluation asks
        about the same few items thousands of times, and a search always gives the same answer.
        """
        item_ids = self.item_ids.tolist()  # Python values: indexing a list is much faster than an array
        searched: dict[tuple[int, int], tuple[list[int], list[float]]] = {}
        answers = []
        for query_item_ids in queries:
            excluded = set(query_item_ids)
            n = k + len(excluded)
            best: dict[int, float] = {}
            for item_id in query_item_ids:
                search = (self.position_of(item_id), n)
                if search not in searched:
                    searched[search] = self.nearest(n, position=search[0])
                for position, distance in zip(*searched[search]):
                    if item_ids[position] not in excluded and distance < best.get(position, math.inf):
                        best[position] = distance
            ranked = sorted(best.items(), key=lambda pair: (pair[1], pair[0]))[:k]
            answers.append([(str(item_ids[position]), float(distance)) for position, distance in ranked])
        return answers

    def nearest_to_vector(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k items nearest to an embedding that need not be in the index."""
        positions, distances = self.nearest(k, vector=np.asarray(vector, dtype=np.float32))
        return [(str(self.item_ids[p]), float(d)) for p, d in zip(positions, distances)]

    def _write_meta(self, directory: Path, **extra) -> Path:
        path = directory / f"{self.category}.json"
        path.write_text(json.dumps({"kind": self.kind, "category": self.category, "metric": self.metric,
                                    "item_ids": [str(i) for i in self.item_ids], **extra}))
        return path
