"""Exact search: brute force over every item, the reference approximate indexes are measured against.

Distances follow Annoy's definitions so the two backends agree: angular = sqrt(2 - 2 cos),
euclidean, manhattan, and for dot the negative inner product (smaller is nearer everywhere).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashionbench.index.base import METRICS, CategoryIndex, IndexConfig, ItemEmbeddings


def metric_distances(vectors: np.ndarray, query: np.ndarray, metric: str) -> np.ndarray:
    """Distance of ``query`` (dim,) to each row of ``vectors`` (n, dim), smaller = nearer, in float64.

    Raises ValueError for a metric this module does not define.
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
    """Brute-force k-NN, fast: as ann-benchmarks' ``BruteForceBLAS``, the vectors are prepared
    once (normalised for angular, squared norms for euclidean), then each query is one
    matrix-vector product and a partial sort. Raises ValueError for an unknown metric."""

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
        scores = self.scores(query)
        k = min(k, len(scores))
        nearest = np.argpartition(scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        return nearest[np.argsort(scores[nearest], kind="stable")]

    def scores(self, query: np.ndarray) -> np.ndarray:
        """A score per vector that orders them as the metric's distance does (not the distance), in float32."""
        query = np.asarray(query, dtype=np.float32)
        if self.metric == "manhattan":
            return np.abs(self.vectors - query).sum(axis=1)
        if self.metric == "euclidean":  # ||v - q||^2 without the constant ||q||^2
            return self.squared_norms - 2.0 * (self.vectors @ query)
        return -(self.vectors @ query)  # angular (normalised vectors) and dot: largest inner product first


@dataclass
class ExactIndexConfig(IndexConfig):
    """``index=exact``: brute-force search; exact, and as fast as Annoy below ~1,000 items per index.

    Measured against the reference like any backend: its recall is 1.0 unless its ranking and the
    reference's disagree beyond ties, and its QPS is its own search's beside the reference's."""

    def build(self, embeddings: ItemEmbeddings) -> ExactCategoryIndex:
        return ExactCategoryIndex.build(embeddings, self.metric)


class ExactCategoryIndex(CategoryIndex):
    """Every item's vector, searched exhaustively; distances as ``metric_distances`` gives them,
    ties broken by position."""

    kind = "exact"
    # Candidates scored in float32 per n asked for, before their float64 distances rank them:
    # float32's error would have to exceed the gap across n + 8 places to change an answer.
    CANDIDATES_PER_RESULT = 2
    EXTRA_CANDIDATES = 8

    def __init__(self, category: str, vectors: np.ndarray, item_ids: np.ndarray, metric: str,
                 build_seconds: float = 0.0) -> None:
        super().__init__(category, item_ids, metric, build_seconds)
        self.vectors = np.asarray(vectors, dtype=np.float32)
        self.search = ExactSearch(self.vectors, metric)

    @classmethod
    def build(cls, embeddings: ItemEmbeddings, metric: str = "angular") -> ExactCategoryIndex:
        category = embeddings.only_category()
        start = time.perf_counter()
        index = cls(category, embeddings.vectors, embeddings.item_ids, metric)
        index.build_seconds = time.perf_counter() - start
        return index

    def nearest(self, n: int, vector: np.ndarray | None = None, position: int | None = None
                ) -> tuple[list[int], list[float]]:
        query = self.vectors[position] if vector is None else vector
        # One BLAS pass over every item (ExactSearch) picks the candidates, every item tied with the
        # last one included; only they get float64 distances (a pass over all items in float64 was
        # 20-50x slower on 1,000-10,000 pooled 2048-d vectors). Ties broken by position, as
        # exact_neighbours does, so answers do not depend on the sort.
        scores = self.search.scores(query)
        pool = min(len(scores), self.CANDIDATES_PER_RESULT * n + self.EXTRA_CANDIDATES)
        candidates = np.flatnonzero(scores <= np.partition(scores, pool - 1)[pool - 1])
        distances = metric_distances(self.vectors[candidates], query, self.metric)
        order = np.lexsort((candidates, distances))[:n]
        return candidates[order].tolist(), distances[order].tolist()

    def nbytes(self) -> int:
        return int(self.vectors.nbytes)

    def save(self, directory: Path) -> list[Path]:
        """Write ``<category>.npy`` (the vectors) and ``<category>.json``."""
        directory.mkdir(parents=True, exist_ok=True)
        vectors_path = directory / f"{self.category}.npy"
        np.save(vectors_path, self.vectors, allow_pickle=False)
        return [vectors_path, self._write_meta(directory)]

    @classmethod
    def load(cls, directory: Path, meta: dict) -> ExactCategoryIndex:
        vectors = np.load(directory / f"{meta['category']}.npy", allow_pickle=False)
        return cls(meta["category"], vectors, np.asarray(meta["item_ids"]), meta["metric"])
