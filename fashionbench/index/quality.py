"""How good and how fast an index is against exact search, measured as ann-benchmarks measures it.

Protocol (Aumüller, Bernhardsson & Faithfull, "ANN-Benchmarks", Information Systems 2020;
github.com/erikbern/ann-benchmarks, ``plotting/metrics.py`` and ``runner.py``):

- ground truth is brute-force k-NN under the index's own metric;
- the distances of the neighbours an index returns are recomputed exactly, and a returned
  neighbour counts as correct if its distance is <= the true k-th distance + 1e-3 (so ties
  at the k-th place are not punished);
- recall@k is the mean over queries of correct / k;
- QPS = queries / the best total search time over ``repeats`` runs, one query at a time
  (ann-benchmarks' default, non-batch mode), for the index and for exact search alike.

Every backend is measured the same way: a run logs the shop's totals as
``pipeline/index/recall_at_k``, ``qps``, ``exact_qps``, ``speedup``, ``build_seconds`` and ``bytes``
(``fashionbench.artifacts``: ``INDEX_RECALL``, ``INDEX_QPS``, ...) whatever the backend, and each
category's in ``eval/index_quality.csv``. For ``index=exact`` the measurement is not a formality:
its recall checks the backend's ranking against the reference's (1.0 unless they disagree
beyond ties) and its QPS is its own search's, beside the reference's.

Distances are ``fashionbench.index.exact.metric_distances``: Annoy's own definitions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fashionbench.artifacts import (
    INDEX_BUILD_SECONDS,
    INDEX_BYTES,
    INDEX_EXACT_QPS,
    INDEX_QPS,
    INDEX_QUALITY_TABLE,
    INDEX_RECALL,
    INDEX_SPEEDUP,
)
from fashionbench.index.base import CategoryIndex, ItemEmbeddings
from fashionbench.index.exact import ExactSearch, metric_distances
from fashionbench.stage import StageResult

if TYPE_CHECKING:
    from fashionbench.index.shop import ShopIndex


RECALL_EPSILON = 1e-3  # ann-benchmarks' tolerance on the k-th distance


@dataclass(frozen=True)
class GroundTruth:
    """The true k-th distance of each query among ``vectors``: computed once, it scores any
    number of indexes searched with the same queries (the benchmark's several backends)."""

    vectors: np.ndarray
    queries: np.ndarray
    k: int
    metric: str
    kth_distances: np.ndarray  # per query, in float64 as metric_distances gives them

    @classmethod
    def of(cls, vectors: np.ndarray, queries: np.ndarray, k: int, metric: str) -> GroundTruth:
        """Brute force: each query's k nearest by ``ExactSearch`` (float32 BLAS), their distances
        recomputed in float64; float32's error is orders of magnitude below the 1e-3 tolerance.
        Raises ValueError for k < 1."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        vectors = np.asarray(vectors, dtype=np.float32)
        queries = np.asarray(queries, dtype=np.float32)
        exact = ExactSearch(vectors, metric)
        kth = [metric_distances(vectors[exact.search(query, k)], query, metric).max() for query in queries]
        return cls(vectors, queries, k, metric, np.asarray(kth, dtype=np.float64))

    def recall(self, found: list[np.ndarray]) -> float:
        """Mean over queries of (returned neighbours within the true k-th distance + 1e-3) / k.

        ``found[i]`` holds the positions an index returned for ``queries[i]``; only the first k count.
        """
        correct = 0
        for query, positions, kth in zip(self.queries, found, self.kth_distances, strict=True):
            returned = self.vectors[np.asarray(positions[:self.k], dtype=int)]
            correct += int(np.sum(metric_distances(returned, query, self.metric) <= kth + RECALL_EPSILON))
        return correct / (self.k * len(self.queries))


def recall_at_k(vectors: np.ndarray, queries: np.ndarray, found: list[np.ndarray], k: int, metric: str) -> float:
    """Mean over queries of (returned neighbours within the true k-th distance + 1e-3) / k.

    ``found[i]`` holds the positions an index returned for ``queries[i]``; only the first k count.
    """
    return GroundTruth.of(vectors, queries, k, metric).recall(found)


def queries_per_second(search: Callable[[np.ndarray], object], queries: np.ndarray, repeats: int = 3) -> float:
    """len(queries) / the best (smallest) total time of ``search`` over all queries, ``repeats`` times."""
    best = np.inf
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        for query in queries:
            search(query)
        best = min(best, time.perf_counter() - start)
    return len(queries) / max(best, 1e-12)


@dataclass(frozen=True)
class IndexQuality:
    """An index against exact search: recall@k, QPS of both, build cost and size."""

    kind: str  # the backend ("hnsw")
    category: str
    n_items: int
    n_queries: int
    k: int
    recall: float
    index_qps: float
    exact_qps: float
    build_seconds: float
    index_bytes: int

    @property
    def speedup(self) -> float:
        """Index QPS / exact QPS: > 1 where the index pays."""
        return self.index_qps / self.exact_qps

    def row(self) -> dict[str, float | int | str]:
        """One row of the run's ``eval/index_quality.csv``."""
        return {"category": self.category, "backend": self.kind, "items": self.n_items, "queries": self.n_queries,
                "k": self.k, "recall": self.recall, "qps": self.index_qps, "exact_qps": self.exact_qps,
                "speedup": self.speedup, "build_seconds": self.build_seconds, "bytes": self.index_bytes}


def measure_index(index: CategoryIndex, vectors: np.ndarray, k: int = 10, repeats: int = 3,
                  queries: np.ndarray | None = None) -> IndexQuality:
    """Measure ``index`` (``vectors[i]`` is its item i) on ``queries``, by default every indexed vector.

    k is capped at the number of items; the index searches with its own settings.
    Raises ValueError when ``vectors`` does not have one row per indexed item.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    queries = vectors if queries is None else np.asarray(queries, dtype=np.float32)
    if len(vectors) != len(index):
        raise ValueError(f"index {index.category!r} holds {len(index)} items but {len(vectors)} vectors were given")
    k = min(k, len(index))
    exact = ExactSearch(vectors, index.metric)

    def index_search(query: np.ndarray) -> list[int]:
        return index.nearest(k, vector=query)[0]

    def exact_search(query: np.ndarray) -> np.ndarray:
        return exact.search(query, k)

    found = [np.asarray(index_search(query)) for query in queries]
    return IndexQuality(
        kind=index.kind,
        category=index.category,
        n_items=len(index),
        n_queries=len(queries),
        k=k,
        recall=GroundTruth.of(vectors, queries, k, index.metric).recall(found),
        index_qps=queries_per_second(index_search, queries, repeats),
        exact_qps=queries_per_second(exact_search, queries, repeats),
        build_seconds=index.build_seconds,
        index_bytes=index.nbytes(),
    )


@dataclass(frozen=True)
class ShopIndexQuality(StageResult):
    """Every category's index against exact search, and shop totals.

    Shop recall is the query-weighted mean; shop QPS is total queries / total best time,
    i.e. what a stream of queries spread over the categories would see.
    """

    qualities: list[IndexQuality]
    stage = "vs exact"

    def summary(self) -> str:
        if not self.qualities:
            return "nothing measured"
        m, kind, k = self.metrics(), self.qualities[0].kind, self.qualities[0].k
        return (f"{kind} recall@{k} {m[INDEX_RECALL]:.3f}, {m[INDEX_SPEEDUP]:.2f}x the queries per second of "
                "exact search")

    def metrics(self) -> dict[str, float]:
        """Shop totals under backend-neutral names (``pipeline/index/recall_at_k``, ``qps``, ...), so
        runs with different backends share one chart; the tag ``index_backend`` says which backend."""
        qualities = self.qualities
        if not qualities:
            return {}
        queries = sum(q.n_queries for q in qualities)
        qps = queries / sum(q.n_queries / q.index_qps for q in qualities)
        exact_qps = queries / sum(q.n_queries / q.exact_qps for q in qualities)
        return {INDEX_RECALL: sum(q.recall * q.n_queries for q in qualities) / queries,
                INDEX_QPS: qps, INDEX_EXACT_QPS: exact_qps, INDEX_SPEEDUP: qps / exact_qps,
                INDEX_BUILD_SECONDS: sum(q.build_seconds for q in qualities),
                INDEX_BYTES: float(sum(q.index_bytes for q in qualities))}

    def write_artifacts(self, directory: Path) -> None:
        if self.qualities:
            path = directory / INDEX_QUALITY_TABLE
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame([q.row() for q in self.qualities]).to_csv(path, index=False)


def measure_shop_index(shop_index: ShopIndex, embeddings: ItemEmbeddings, k: int = 10, repeats: int = 3
                       ) -> ShopIndexQuality:
    """Each category's index of ``shop_index`` against exact search over the same ``embeddings``,
    whatever its backend (``index.quality_k`` and ``index.quality_repeats`` of every backend)."""
    return ShopIndexQuality([measure_index(index, embeddings.of_category(category).vectors, k, repeats)
                             for category, index in shop_index.items()])
