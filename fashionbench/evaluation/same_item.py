"""Same-item retrieval: a second ground truth that no taste simulation shapes.

Where the catalogue holds several photos of each garment (``data=deepfashion_inshop``, or the
synthetic source with ``data.views`` >= 2), the shop's images are marked ``view`` query or
gallery. As in the In-shop Clothes Retrieval Benchmark's published protocol (Liu et al.,
"DeepFashion", CVPR 2016), each query image ranks the whole gallery (every category) by its
embedding, and Recall@k is the share of queries with an image of the same garment
(``product_id``) among the k nearest. Queries whose garment has no gallery image are counted
(``same_item/queries_without_match``) and left out.

Scored for the model's embeddings and, on the same queries and gallery, for the ladder's
recommenders that rank by a vector: ``untrained`` (the weights before fine-tuning), ``pixels``
(colour thumbnails) and ``random``, by its exact expectation 1 − C(G − m, k) / C(G, k) for a
gallery of G images of which m show the query's garment. Exact search under ``index.metric``.
Logged as ``same_item/recall_at_<k>/<recommender>``, with one row per query and recommender in
``eval/same_item.csv`` (columns ``user_id`` = the query's item id, ``category``,
``recommender``, ``n_gallery``, ``n_matches``, ``rank``, ``same_item_recall_at_<k>``), which
``compare --metric same_item_recall_at_10`` compares query by query.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fashionbench.artifacts import SAME_ITEM, SAME_ITEM_COLUMN_PREFIX, SAME_ITEM_SECTION
from fashionbench.data import Catalogue
from fashionbench.data.catalogue import GALLERY_VIEW, PRODUCT_COLUMN, QUERY_VIEW, VIEW_COLUMN
from fashionbench.evaluation.metrics import random_expectations
from fashionbench.evaluation.references import LADDER, MODEL, PIXELS, RANDOM, UNTRAINED, thumbnail_vectors
from fashionbench.evaluation.schema import EvalConfig
from fashionbench.index.base import ItemEmbeddings
from fashionbench.index.exact import ExactSearch
from fashionbench.stage import StageResult


def recall_column(k: int) -> str:
    return f"{SAME_ITEM_COLUMN_PREFIX}recall_at_{k}"


def has_views(shop: Catalogue) -> bool:
    """Whether the shop marks same-item queries and a gallery to find them in."""
    if VIEW_COLUMN not in shop.items.columns:
        return False
    views = set(shop.items[VIEW_COLUMN])
    return QUERY_VIEW in views and GALLERY_VIEW in views


def random_recall(n_gallery: int, n_matches: int, k: int) -> float:
    """P(at least one of ``n_matches`` of ``n_gallery`` images in a uniformly random top k): the
    hit rate of a random list (``metrics.random_expectations``), the gallery its candidates."""
    return random_expectations(n_gallery, n_matches, k)["hit"]


@dataclass(frozen=True)
class SameItemResults(StageResult):
    """Every recommender's rank of each query's garment in the gallery, and the queries left out."""

    table: pd.DataFrame
    ks: tuple[int, ...]
    n_gallery: int
    without_match: int

    stage = "same item"

    def recalls(self) -> dict[str, dict[int, float]]:
        """Recommender -> k -> Recall@k, in ladder order."""
        means = self.table.groupby("recommender")[[recall_column(k) for k in self.ks]].mean()
        names = sorted(means.index, key=LADDER.index)
        return {name: {k: float(means.loc[name, recall_column(k)]) for k in self.ks} for name in names}

    def summary(self) -> str:
        queries = self.table["user_id"].nunique()
        shown = ", ".join(f"{name} {' / '.join(f'{value:.3f}' for value in recalls.values())}"
                          for name, recalls in self.recalls().items())
        return (f"Recall@{'/'.join(map(str, self.ks))} of the same garment, {queries} queries against "
                f"{self.n_gallery} gallery images: {shown}")

    def metrics(self) -> dict[str, float]:
        metrics = {SAME_ITEM_SECTION + "queries": float(self.table["user_id"].nunique()),
                   SAME_ITEM_SECTION + "gallery": float(self.n_gallery),
                   SAME_ITEM_SECTION + "queries_without_match": float(self.without_match)}
        for name, recalls in self.recalls().items():
            for k, value in recalls.items():
                metrics[f"{SAME_ITEM_SECTION}recall_at_{k}/{name}"] = value
        return metrics

    def write_artifacts(self, directory: Path) -> None:
        path = directory / SAME_ITEM
        path.parent.mkdir(parents=True, exist_ok=True)
        self.table.to_csv(path, index=False)


def same_item_retrieval(shop: Catalogue, vectors: Mapping[str, np.ndarray], metric: str,
                        ks: Sequence[int]) -> SameItemResults:
    """Rank the gallery for each query with each recommender's ``vectors`` (one row per shop
    item, in the shop's order) and the random expectation. ``shop`` must have views (``has_views``)."""
    items = shop.items
    view, product = items[VIEW_COLUMN].to_numpy(), items[PRODUCT_COLUMN].astype(str).to_numpy()
    queries, gallery = np.flatnonzero(view == QUERY_VIEW), np.flatnonzero(view == GALLERY_VIEW)
    gallery_products = product[gallery]
    matches = {position: np.flatnonzero(gallery_products == product[position]) for position in queries}
    answerable = [position for position in queries if len(matches[position])]
    ks = tuple(sorted(set(ks)))
    rows = []
    for name, table in vectors.items():
        search = ExactSearch(np.asarray(table)[gallery], metric)
        for position in answerable:
            scores = search.scores(np.asarray(table)[position])
            best = scores[matches[position]].min()
            rank = 1 + int((scores < best).sum())  # ties with the best match count in its favour
            rows.append((position, name, rank, *(float(rank <= k) for k in ks)))
    for position in answerable:
        rows.append((position, RANDOM, np.nan,
                     *(random_recall(len(gallery), len(matches[position]), k) for k in ks)))
    frame = pd.DataFrame(rows, columns=["position", "recommender", "rank", *map(recall_column, ks)])
    frame.insert(0, "user_id", items["item_id"].to_numpy()[frame["position"]])
    frame.insert(1, "category", items["category"].to_numpy()[frame["position"]])
    frame.insert(3, "n_gallery", len(gallery))
    frame.insert(4, "n_matches", [len(matches[position]) for position in frame["position"]])
    frame = frame.drop(columns="position")
    order = frame["recommender"].map(LADDER.index)
    frame = frame.assign(order=order).sort_values(["order", "user_id"], kind="stable").drop(columns="order")
    return SameItemResults(frame.reset_index(drop=True), ks, len(gallery), len(queries) - len(answerable))


def ladder_vectors(shop: Catalogue, embeddings: ItemEmbeddings, untrained: ItemEmbeddings | None,
                   options: EvalConfig) -> dict[str, np.ndarray]:
    """The vectors each recommender ranks the gallery by: the model's embeddings, the untrained
    network's (when scored) and colour thumbnails (when ``pixels`` is among ``eval.references``)."""
    vectors = {MODEL: embeddings.vectors}
    if untrained is not None:
        vectors[UNTRAINED] = untrained.vectors
    if PIXELS in options.references:
        vectors[PIXELS] = thumbnail_vectors(shop.images, options.pixels_size)
    return vectors
