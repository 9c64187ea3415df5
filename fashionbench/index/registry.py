"""Every index backend, registered once, by kind: its config (the options and ``build``), its index
class (``load``), and the package it needs where a recommender using it is served.

As ann-benchmarks keeps its algorithms, a backend is one module (``index/annoy.py``, ``exact.py``,
``hnsw.py``) beside the small interface of ``index/base.py``, one config file
(``configs/index/<kind>.yaml``) and one line here; the config store (``fashionbench.config``), the
index reader (``index.store``) and the served model's requirements (``tracking.registry``) all read
this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from fashionbench.index.annoy import AnnoyCategoryIndex, AnnoyIndexConfig
from fashionbench.index.base import CategoryIndex, IndexConfig
from fashionbench.index.exact import ExactCategoryIndex, ExactIndexConfig
from fashionbench.index.hnsw import PACKAGE as FAISS_PACKAGE
from fashionbench.index.hnsw import HnswCategoryIndex, HnswIndexConfig


@dataclass(frozen=True)
class Backend:
    """One index backend: ``index=<kind>``."""

    kind: str
    config: type[IndexConfig]  # the schema of configs/index/<kind>.yaml; its build() makes an index
    index: type[CategoryIndex]  # its load() reads a saved one back
    requirement: str  # the pip package that provides it, for a served recommender's environment


BACKENDS: dict[str, Backend] = {backend.kind: backend for backend in (
    Backend("annoy", AnnoyIndexConfig, AnnoyCategoryIndex, "annoy"),
    Backend("exact", ExactIndexConfig, ExactCategoryIndex, "numpy"),
    Backend("hnsw", HnswIndexConfig, HnswCategoryIndex, FAISS_PACKAGE),
)}
# An index saved before backends had names is Annoy's.
DEFAULT_KIND = "annoy"


def backend(kind: str) -> Backend:
    """The backend of ``kind``; KeyError naming the kinds there are."""
    try:
        return BACKENDS[kind]
    except KeyError:
        raise KeyError(f"no index backend {kind!r}; the backends are {sorted(BACKENDS)}") from None
