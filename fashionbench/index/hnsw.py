"""HNSW (Malkov & Yashunin, "Efficient and robust approximate nearest neighbor search using
Hierarchical Navigable Small World graphs", TPAMI 2020), through faiss's ``IndexHNSWFlat``.

faiss (the ``faiss-cpu`` package) rather than hnswlib or usearch: its HNSW searches every metric
of the interface, manhattan included (usearch has no L1), it ships wheels for this Python
(hnswlib's last release is a source distribution that needs a compiler), and a build is
byte-for-byte reproducible when single-threaded, with the level generator seeded. It is an
optional dependency (``pip install 'fashionbench[hnsw]'``): without it ``index=hnsw`` fails when
the config is validated, before any data is loaded.

Metrics in faiss's terms, reported as the other backends report them (smaller is nearer):
angular is the inner product of unit vectors turned into sqrt(2 - 2 cos), as Annoy's (a zero
vector's cosine counts as 0, as in exact search); euclidean is faiss's squared L2, square-rooted;
manhattan is faiss's L1; dot is the negative inner product.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from fashionbench.index.base import CategoryIndex, IndexConfig, IndexConfigError, ItemEmbeddings, check_integer
from fashionbench.options import Stage, option

PACKAGE = "faiss-cpu"  # what provides the module faiss
FAISS_METRICS = {"angular": "METRIC_INNER_PRODUCT", "euclidean": "METRIC_L2", "manhattan": "METRIC_L1",
                 "dot": "METRIC_INNER_PRODUCT"}


def import_faiss() -> ModuleType:
    """The faiss module; IndexConfigError naming ``index=hnsw`` and the package when it is not installed."""
    try:
        import faiss
    except ImportError:
        raise IndexConfigError(f"index=hnsw needs the package {PACKAGE}, which is not installed: "
                               f"pip install {PACKAGE} (or pip install 'fashionbench[hnsw]')") from None
    return faiss


@contextmanager
def single_threaded(faiss: ModuleType) -> Iterator[None]:
    """faiss links a multithreaded add into the graph in an unspecified order (its maintainers:
    "the HNSW add function is performed in an unspecified order"); one thread makes a build
    reproducible. The process's thread count is restored afterwards."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def unit_vectors(vectors: np.ndarray) -> np.ndarray:
    """Each row divided by its norm (zero rows stay zero), float32 and contiguous, as faiss reads them."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.ascontiguousarray(np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0))


@dataclass
class HnswIndexConfig(IndexConfig):
    """``index=hnsw``: the options of an HNSW graph (faiss), and ``build`` to make one."""

    # links per node and layer (2*M on the bottom layer): more = higher recall, more bytes, slower build
    M: int = option(16, decides=Stage.INDEX)
    # candidates kept while linking each new item into the graph
    ef_construction: int = option(100, decides=Stage.INDEX)
    # candidates kept while searching (at least the k asked for): the recall/speed knob
    ef_search: int = option(64, decides=Stage.INDEX)
    # draws the layer each item enters at; builds are single-threaded, so reproducible
    seed: int = option(0, decides=Stage.INDEX, seed=True)

    def __post_init__(self) -> None:
        """IndexConfigError naming the option unless every option is usable and faiss is installed."""
        super().__post_init__()
        check_integer("M", self.M, 2)  # faiss draws layers with probability 1/ln(M)
        check_integer("ef_construction", self.ef_construction, 1)
        check_integer("ef_search", self.ef_search, 1)
        import_faiss()

    def build(self, embeddings: ItemEmbeddings) -> HnswCategoryIndex:
        """Index ``embeddings`` (all of one category); the same seed builds the same graph."""
        return HnswCategoryIndex.build(embeddings, self)


class HnswCategoryIndex(CategoryIndex):
    """An HNSW graph of one category's items (faiss ``IndexHNSWFlat``); faiss id i is ``item_ids[i]``."""

    kind = "hnsw"

    def __init__(self, category: str, graph, item_ids: np.ndarray, metric: str, build_seconds: float = 0.0) -> None:
        super().__init__(category, item_ids, metric, build_seconds)
        self.graph = graph  # faiss.IndexHNSWFlat, its vectors as prepared by ``_prepare``

    @property
    def ef_search(self) -> int:
        return self.graph.hnsw.efSearch

    @ef_search.setter
    def ef_search(self, value: int) -> None:
        """Searching wider or narrower needs no rebuild (the benchmark sweeps it on one graph)."""
        self.graph.hnsw.efSearch = value

    @classmethod
    def build(cls, embeddings: ItemEmbeddings, config: HnswIndexConfig) -> HnswCategoryIndex:
        faiss = import_faiss()
        category = embeddings.only_category()
        start = time.perf_counter()
        graph = faiss.IndexHNSWFlat(embeddings.dim, config.M, getattr(faiss, FAISS_METRICS[config.metric]))
        graph.hnsw.efConstruction = config.ef_construction
        graph.hnsw.efSearch = config.ef_search
        graph.hnsw.rng = faiss.RandomGenerator(config.seed)
        with single_threaded(faiss):
            graph.add(cls._prepare(embeddings.vectors, config.metric))
        seconds = time.perf_counter() - start
        return cls(category, graph, np.asarray(embeddings.item_ids), config.metric, seconds)

    @staticmethod
    def _prepare(vectors: np.ndarray, metric: str) -> np.ndarray:
        """Vectors as the graph holds and is queried with: unit vectors for angular."""
        if metric == "angular":
            return unit_vectors(vectors)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _distances(self, scores: np.ndarray) -> np.ndarray:
        """faiss's scores as smaller-is-nearer distances, on the other backends' scales."""
        if self.metric == "angular":
            return np.sqrt(np.maximum(2.0 - 2.0 * scores, 0.0))
        if self.metric == "euclidean":
            return np.sqrt(np.maximum(scores, 0.0))
        if self.metric == "dot":
            return -scores
        return scores  # manhattan

    def nearest(self, n: int, vector: np.ndarray | None = None, position: int | None = None
                ) -> tuple[list[int], list[float]]:
        if vector is None:
            query = self.graph.reconstruct(position)  # as stored: already prepared
        else:
            query = self._prepare(np.asarray(vector).reshape(-1), self.metric)
        # At least n candidates, as hnswlib does: faiss keeps only ef_search and returns fewer than n otherwise.
        params = import_faiss().SearchParametersHNSW(efSearch=n) if n > self.ef_search else None
        scores, labels = self.graph.search(query.reshape(1, -1), n, params=params)
        found = labels[0] >= 0  # faiss pads with -1 when fewer than n are found
        return labels[0][found].tolist(), self._distances(scores[0][found]).tolist()

    def nbytes(self) -> int:
        """The size of the saved graph (its vectors included)."""
        return int(import_faiss().serialize_index(self.graph).nbytes)

    def save(self, directory: Path) -> list[Path]:
        """Write ``<category>.faiss`` and ``<category>.json`` (kind, item ids, metric, ef_search)."""
        faiss = import_faiss()
        directory.mkdir(parents=True, exist_ok=True)
        graph_path = directory / f"{self.category}.faiss"
        faiss.write_index(self.graph, str(graph_path))
        return [graph_path, self._write_meta(directory, ef_search=self.ef_search)]

    @classmethod
    def load(cls, directory: Path, meta: dict) -> HnswCategoryIndex:
        """The graph ``save`` wrote, searching as wide as it did."""
        graph = import_faiss().read_index(str(directory / f"{meta['category']}.faiss"))
        index = cls(meta["category"], graph, np.asarray(meta["item_ids"]), meta["metric"])
        index.ef_search = meta["ef_search"]
        return index
