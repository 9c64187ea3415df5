"""How good and how fast an Annoy index is, measured as ann-benchmarks measures it.

Protocol (Aumüller, Bernhardsson & Faithfull, "ANN-Benchmarks", Information Systems 2020;
github.com/erikbern/ann-benchmarks, ``plotting/metrics.py`` and ``runner.py``):

- ground truth is brute-force k-NN under the index's own metric;
- the distances of the neighbours an index returns are recomputed exactly, and a returned
  neighbour counts as correct if its distance is <= the true k-th distance + 1e-3 (so ties
  at the k-th place are not punished);
- recall@k is the mean over queries of correct / k;
- QPS = queries / the best total search time over ``repeats`` runs, one query at a time
  (ann-benchmarks' default, non-batch mode), for Annoy and for exact search alike.

Distances use Annoy's own definitions: angular = sqrt(2 - 2 cos), euclidean, manhattan, and
for dot the *negative* inner product (Annoy ranks by largest inner product).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashionbench.index import METRICS, CategoryIndex

RECALL_EPSILON = 1e-3  # ann-benchmarks' tolerance on the k-th distance


def metric_distances(vectors: np.ndarray, query: np.ndarray, metric: str) -> np.ndarray:
    """Distance of ``query`` (dim,) to each row of ``vectors`` (n, dim), smaller = nearer.

    Raises ValueError for a metric Annoy-compatible search does not define here.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    query = np.asarray(query, dtype=np.float64)
    if metric == "angular":
        norms = np.linalg.norm(vectors, axis=1) * np.linalg.norm(query)
        cosine = np.divide(vectors @ query, norms, out=np.zeros(len(vectors)), where=norms > 0)
        return np.sqrt(np.maximum(2.0 - 2.0 * cosine, 0.0))
    if metric == "euclidean":
        return np.linalg.norm(vectors - query, axis=1)
    if metric == "manhattan":
        return np.abs(vectors - query).sum(axis=1)
    if metric == "dot":
        return -(vectors @ query)
    raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")


def exact_neighbours(vectors: np.ndarray, query: np.ndarray, k: int, metric: str) -> np.ndarray:
    """Positions of the k rows of ``vectors`` nearest to ``query``, nearest first (ties by position)."""
    distances = metric_distances(vectors, query, metric)
    return np.lexsort((np.arange(len(distances)), distances))[:k]


class ExactSearch:
    """Brute-force k-NN, the reference the QPS of Annoy is compared with.

    As ann-benchmarks' ``BruteForceBLAS``: the vectors are prepared once (normalised for
    angular, squared norms for euclidean), then each query is one matrix-vector product and a
    partial sort. Raises ValueError for an unknown metric.
    """

    def __init__(self, vectors: np.ndarray, metric: str) -> None:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
        self.metric = metric
        self.vectors = np.asarray(vectors, dtype=np.float32)
        if metric == "angular":
            norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
            self.vectors = np.divide(self.vectors, norms, out=np.zeros_like(self.vectors), where=norms > 0)
        self.squared_norms = (self.vectors**2).sum(axis=1)

    def search(self, query: np.ndarray, k: int) -> np.ndarray:
        """Positions of the k nearest vectors, nearest first."""
        query = np.asarray(query, dtype=np.float32)
        if self.metric == "manhattan":
            scores = np.abs(self.vectors - query).sum(axis=1)
        elif self.metric == "euclidean":  # ||v - q||^2 without the constant ||q||^2
            scores = self.squared_norms - 2.0 * (self.vectors @ query)
        else:  # angular (normalised vectors) and dot: largest inner product first
            scores = -(self.vectors @ query)
        k = min(k, len(scores))
        nearest = np.argpartition(scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        return nearest[np.argsort(scores[nearest], kind="stable")]


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
    """Annoy against exact search for one index: recall@k, QPS of both, build cost and size."""

    category: str
    n_items: int
    n_queries: int
    k: int
    recall: float
    annoy_qps: float
    exact_qps: float
    build_seconds: float
    index_bytes: int

    @property
    def speedup(self) -> float:
        """Annoy QPS / exact QPS: > 1 where Annoy pays."""
        return self.annoy_qps / self.exact_qps

    def metrics(self, suffix: str = "") -> dict[str, float]:
        return {
            f"annoy_recall_at_k{suffix}": self.recall,
            f"annoy_qps{suffix}": self.annoy_qps,
            f"exact_qps{suffix}": self.exact_qps,
            f"annoy_speedup{suffix}": self.speedup,
            f"annoy_build_seconds{suffix}": self.build_seconds,
            f"annoy_index_bytes{suffix}": float(self.index_bytes),
        }


def measure_index(
    index: CategoryIndex, vectors: np.ndarray, k: int = 10, repeats: int = 3, index_file: Path | None = None,
    queries: np.ndarray | None = None,
) -> IndexQuality:
    """Measure ``index`` (``vectors[i]`` is Annoy id i) on ``queries``, by default every indexed vector.

    k is capped at the number of items. Annoy searches with the index's own search_k.
    ``index_file``: the saved ``.ann`` file whose size is reported (0 when not given).
    Raises ValueError when ``vectors`` does not have one row per indexed item.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    queries = vectors if queries is None else np.asarray(queries, dtype=np.float32)
    if len(vectors) != len(index):
        raise ValueError(f"index {index.category!r} holds {len(index)} items but {len(vectors)} vectors were given")
    k = min(k, len(index))
    search_k = index.search_k

    def annoy_search(query: np.ndarray) -> list[int]:
        return index.annoy.get_nns_by_vector(query, k, search_k=search_k)

    exact = ExactSearch(vectors, index.metric)

    def exact_search(query: np.ndarray) -> np.ndarray:
        return exact.search(query, k)

    found = [np.asarray(annoy_search(query)) for query in queries]
    return IndexQuality(
        category=index.category,
        n_items=len(index),
        n_queries=len(queries),
        k=k,
        recall=recall_at_k(vectors, queries, found, k, index.metric),
        annoy_qps=queries_per_second(annoy_search, queries, repeats),
        exact_qps=queries_per_second(exact_search, queries, repeats),
        build_seconds=index.build_seconds,
        index_bytes=index_file.stat().st_size if index_file is not None else 0,
    )


def shop_index_metrics(qualities: list[IndexQuality]) -> dict[str, float]:
    """Per-category metrics (suffix ``_<category>``) and shop totals.

    Shop recall is the query-weighted mean; shop QPS is total queries / total best time,
    i.e. what a stream of queries spread over the categories would see.
    """
    metrics: dict[str, float] = {}
    for quality in qualities:
        metrics.update(quality.metrics(f"_{quality.category}"))
    queries = sum(q.n_queries for q in qualities)
    metrics["annoy_recall_at_k"] = sum(q.recall * q.n_queries for q in qualities) / queries
    metrics["annoy_qps"] = queries / sum(q.n_queries / q.annoy_qps for q in qualities)
    metrics["exact_qps"] = queries / sum(q.n_queries / q.exact_qps for q in qualities)
    metrics["annoy_speedup"] = metrics["annoy_qps"] / metrics["exact_qps"]
    metrics["annoy_build_seconds"] = sum(q.build_seconds for q in qualities)
    metrics["annoy_index_bytes"] = float(sum(q.index_bytes for q in qualities))
    return metrics
