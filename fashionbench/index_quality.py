"""How good and how fast an approximate index is against exact search, measured as ann-benchmarks measures it.

Protocol (Aumüller, Bernhardsson & Faithfull, "ANN-Benchmarks", Information Systems 2020;
github.com/erikbern/ann-benchmarks, ``plotting/metrics.py`` and ``runner.py``):

- ground truth is brute-force k-NN under the index's own metric;
- the distances of the neighbours an index returns are recomputed exactly, and a returned
  neighbour counts as correct if its distance is <= the true k-th distance + 1e-3 (so ties
  at the k-th place are not punished);
- recall@k is the mean over queries of correct / k;
- QPS = queries / the best total search time over ``repeats`` runs, one query at a time
  (ann-benchmarks' default, non-batch mode), for the index and for exact search alike.

Distances are ``fashionbench.index.exact.metric_distances``: Annoy's own definitions.
Metrics are named after the backend (``annoy_recall_at_k``); exact search is the reference.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from fashionbench.index.base import CategoryIndex, ItemEmbeddings
from fashionbench.index.exact import ExactSearch, metric_distances
from fashionbench.stage import StageResult

if TYPE_CHECKING:  # the package imports this module
    from fashionbench.index import ShopIndex


RECALL_EPSILON = 1e-3  # ann-benchmarks' tolerance on the k-th distance


def recall_at_k(vectors: np.ndarray, queries: np.ndarray, found: list[np.ndarray], k: int, metric: str) -> float:
    """Mean over queries of (returned neighbours within the true k-th distance + 1e-3) / k.

    ``found[i]`` holds the positions an index returned for ``queries[i]``; only the first k count.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    correct = 0
    for query, positions in zip(queries, found, strict=True):
        distances = metric_distances(vectors, query, metric)
        threshold = np.sort(distances)[k - 1] + RECALL_EPSILON
        correct += int(np.sum(distances[np.asarray(positions[:k], dtype=int)] <= threshold))
    return correct / (k * len(queries))


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

    kind: str  # the backend ("annoy"), the metrics' prefix
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

    def metrics(self, suffix: str = "") -> dict[str, float]:
        return {
            f"{self.kind}_recall_at_k{suffix}": self.recall,
            f"{self.kind}_qps{suffix}": self.index_qps,
            f"exact_qps{suffix}": self.exact_qps,
            f"{self.kind}_speedup{suffix}": self.speedup,
            f"{self.kind}_build_seconds{suffix}": self.build_seconds,
            f"{self.kind}_index_bytes{suffix}": float(self.index_bytes),
        }


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
        recall=recall_at_k(vectors, queries, found, k, index.metric),
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
        return (f"{kind} recall@{k} {m[f'{kind}_recall_at_k']:.3f}, {m[f'{kind}_speedup']:.2f}x the queries per "
                "second of exact search")

    def metrics(self) -> dict[str, float]:
        qualities = self.qualities
        if not qualities:
            return {}
        kind = qualities[0].kind
        metrics: dict[str, float] = {}
        for quality in qualities:
            metrics.update(quality.metrics(f"_{quality.category}"))
        queries = sum(q.n_queries for q in qualities)
        metrics[f"{kind}_recall_at_k"] = sum(q.recall * q.n_queries for q in qualities) / queries
        metrics[f"{kind}_qps"] = queries / sum(q.n_queries / q.index_qps for q in qualities)
        metrics["exact_qps"] = queries / sum(q.n_queries / q.exact_qps for q in qualities)
        metrics[f"{kind}_speedup"] = metrics[f"{kind}_qps"] / metrics["exact_qps"]
        metrics[f"{kind}_build_seconds"] = sum(q.build_seconds for q in qualities)
        metrics[f"{kind}_index_bytes"] = float(sum(q.index_bytes for q in qualities))
        return metrics


def measure_shop_index(shop_index: ShopIndex, embeddings: ItemEmbeddings, k: int = 10, repeats: int = 3
                       ) -> ShopIndexQuality:
    """Each category's index of ``shop_index`` against exact search over the same ``embeddings``."""
    return ShopIndexQuality([measure_index(index, embeddings.of_category(category).vectors, k, repeats)
                             for category, index in shop_index.items()])
