"""Every mean a run logs about recommendations, derived from its per-pair table.

``summary_table`` averages the table's pairs per recommender and category (``eval/summary.csv``);
``summarise`` names those numbers as the run's metrics (the ladder, the headline, the pairs
evaluated). Coverage and intra-list diversity are metrics of a recommender's lists together, with
the random recommender's exact expectations (``evaluation.metrics``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fashionbench.artifacts import (
    EVAL_PAIRS,
    HEADLINE_METRIC,
    HEADLINE_RECALL,
    NORMALISED_HEADLINE,
    ladder_metric,
    metric_column,
    random_counterpart,
)
from fashionbench.data import CATEGORIES
from fashionbench.evaluation.metrics import (
    LOGGED_METRICS,
    intra_list_diversities,
    random_coverage,
    random_intra_list_diversity,
)
from fashionbench.evaluation.references import MODEL, ORACLE, RANDOM


def metric_name(metric: str, k: int, recommender: str, category: str | None = None) -> str:
    """The logged name: ``ladder/precision_at_5/model``, ``ladder/precision_at_5/model/Dresses``."""
    return ladder_metric(metric_column(metric, k), recommender, category)


ALL = "all"  # the summary table's row over every category


def summary_table(table: pd.DataFrame, headline_k: int, ks: Sequence[int], shop_items: Mapping[str, list[str]],
                  distances: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Means over pairs per recommender and category (and over all categories, ``category="all"``):
    ``pairs``, every metric at every k, ``coverage_at_<k>`` and ``ild_at_<k>`` at the headline k.
    Logged as ``eval/summary.csv``; ``summarise`` names its numbers for the run's metrics."""
    rows = []
    for recommender, of_recommender in table.groupby("recommender", sort=False):
        # Each pair's lists are read, and each category's coverage and each pair's diversity
        # computed, once; the "all" scope and the category's own scope both use them.
        lists = _PairLists.of(of_recommender, headline_k)
        coverage = _coverage_by_category(lists, headline_k, shop_items)
        diversity = _diversity_by_pair(lists, shop_items, distances) if distances is not None else None
        scopes = [(ALL, np.ones(len(lists.categories), dtype=bool)),
                  *((c, lists.categories == c) for c in CATEGORIES)]
        for category, in_scope in scopes:
            if not in_scope.any():
                continue
            rows_in_scope = of_recommender if category == ALL else of_recommender[in_scope]
            row = {"recommender": recommender, "category": category, "pairs": len(rows_in_scope)}
            row.update({metric_column(m, k): float(rows_in_scope[metric_column(m, k)].mean())
                        for k in ks for m in LOGGED_METRICS})
            row[metric_column("coverage", headline_k)] = _coverage(coverage, lists.categories[in_scope])
            if diversity is not None:
                row[metric_column("ild", headline_k)] = _diversity(diversity[in_scope], lists.categories[in_scope])
            rows.append(row)
    columns = ["recommender", "category", "pairs", *(metric_column(m, k) for k in ks for m in LOGGED_METRICS),
               metric_column("coverage", headline_k), *([metric_column("ild", headline_k)] if distances else [])]
    return pd.DataFrame(rows, columns=columns)


def summarise(table: pd.DataFrame, headline_k: int, ks: Sequence[int], shop_items: Mapping[str, list[str]],
              distances: Mapping[str, np.ndarray] | None = None, summary: pd.DataFrame | None = None
              ) -> dict[str, float]:
    """Every logged recommendation metric, read off ``summary_table`` (so: means over the table's pairs):

    - ``ladder/<metric>_at_<k>/<recommender>`` for every metric and k, ``coverage_at_<k>``
      (distinct items recommended / shop items) and ``ild_at_<k>`` (mean intra-list attribute
      distance) at the headline k, and ``ladder/precision_at_<headline k>/<recommender>/<Category>``;
    - the headline at the headline k: ``headline/precision_at_k`` and ``headline/recall_at_k`` (the
      model), ``headline/random_precision_at_k`` (the floor) and ``headline/normalised_precision_at_k``
      = (model − random) / (oracle − random);
    - ``pipeline/users/eval_pairs`` (and ``/<Category>``): the pairs evaluated.
    """
    if table.empty:
        return {HEADLINE_METRIC: float("nan"), random_counterpart(HEADLINE_METRIC): float("nan"), EVAL_PAIRS: 0.0}
    if summary is None:
        summary = summary_table(table, headline_k, ks, shop_items, distances)
    headline, recall = metric_column("precision", headline_k), metric_column("recall", headline_k)
    metrics: dict[str, float] = {}
    for row in summary.to_dict("records"):
        recommender, category = row["recommender"], row["category"]
        if category == ALL:
            for column, value in row.items():
                if "_at_" in column:
                    metric, k = column.rsplit("_at_", 1)
                    metrics[metric_name(metric, int(k), recommender)] = value
            if recommender == MODEL:
                metrics.update({HEADLINE_METRIC: row[headline], HEADLINE_RECALL: row[recall],
                                EVAL_PAIRS: float(row["pairs"])})
            elif recommender == RANDOM:
                metrics[random_counterpart(HEADLINE_METRIC)] = row[headline]
        else:
            metrics[metric_name("precision", headline_k, recommender, category)] = row[headline]
            if recommender == MODEL:
                metrics[f"{EVAL_PAIRS}/{category}"] = float(row["pairs"])
    at = lambda recommender: metrics.get(metric_name("precision", headline_k, recommender))  # noqa: E731
    if at(ORACLE) is not None and at(RANDOM) is not None and at(ORACLE) != at(RANDOM):
        metrics[NORMALISED_HEADLINE] = (at(MODEL) - at(RANDOM)) / (at(ORACLE) - at(RANDOM))
    return metrics


@dataclass(frozen=True)
class _PairLists:
    """One recommender's pairs, in the table's order: category, queries (JSON), and top-k list
    (None for the random recommender, whose ``recommended`` is empty)."""

    categories: np.ndarray
    queries: list[str]
    top: list[list[str] | None]

    @classmethod
    def of(cls, rows: pd.DataFrame, k: int) -> _PairLists:
        return cls(rows["category"].to_numpy(dtype=object), rows["queries"].tolist(),
                   [json.loads(ranked)[:k] if ranked != "" else None for ranked in rows["recommended"].tolist()])


def _coverage_by_category(lists: _PairLists, k: int, shop_items: Mapping[str, list[str]]
                          ) -> dict[str, tuple[float, int]]:
    """Per category: the distinct items in its top-k lists (for random, the expected number), and
    its shop items (RecBole ``ItemCoverage``)."""
    by_category = {}
    for category in dict.fromkeys(lists.categories):
        items = shop_items[category]
        pairs = np.flatnonzero(lists.categories == category)
        if all(lists.top[i] is None for i in pairs):  # the random recommender: expected coverage
            candidates = [_candidate_positions(items, lists.queries[i]) for i in pairs]
            covered = len(items) * random_coverage(len(items), candidates, [k] * len(candidates))
        else:
            covered = len({item for i in pairs for item in lists.top[i]})
        by_category[category] = (covered, len(items))
    return by_category


def _coverage(by_category: Mapping[str, tuple[float, int]], categories: np.ndarray) -> float:
    """Distinct items in the top-k lists / all shop items (RecBole ``ItemCoverage``), over the
    categories with evaluated pairs; for random, its exact expectation."""
    covered, total = 0.0, 0
    for category in sorted(set(categories)):  # summed in category order, as ever (same floats)
        covered += by_category[category][0]
        total += by_category[category][1]
    return covered / total if total else float("nan")


def _diversity_by_pair(lists: _PairLists, shop_items: Mapping[str, list[str]],
                       distances: Mapping[str, np.ndarray]) -> np.ndarray:
    """Each pair's intra-list attribute distance of its top-k list (random: expected)."""
    values = np.full(len(lists.categories), np.nan)
    for category in dict.fromkeys(lists.categories):
        items, matrix = shop_items[category], distances[category]
        position = {item: i for i, item in enumerate(items)}
        pairs = np.flatnonzero(lists.categories == category)
        ranked = [i for i in pairs if lists.top[i] is not None]
        values[ranked] = intra_list_diversities([[position[item] for item in lists.top[i]] for i in ranked], matrix)
        row_sums = matrix.sum(axis=1)
        for i in pairs:
            if lists.top[i] is None:
                excluded = [position[item] for item in json.loads(lists.queries[i]) if item in position]
                values[i] = random_intra_list_diversity(matrix, excluded, row_sums)
    return values


def _diversity(values: np.ndarray, categories: np.ndarray) -> float:
    """Mean over pairs of the intra-list attribute distance, NaNs left out; the pairs taken
    category by category (in name order, as ever, so the mean is the same float)."""
    values = values[np.argsort(categories, kind="stable")]
    values = values[~np.isnan(values)]
    return float(np.mean(values)) if len(values) else float("nan")


def _candidate_positions(items: list[str], queries: str) -> np.ndarray:
    """Positions in ``items`` (a category's shop items) of a pair's candidates: every item but its
    ``queries`` (the pair's JSON list)."""
    excluded = set(json.loads(queries))
    return np.array([i for i, item in enumerate(items) if item not in excluded], dtype=int)


def attribute_distances(attribute_vectors: np.ndarray, item_categories: np.ndarray,
                        shop_items: Mapping[str, list[str]]) -> dict[str, np.ndarray]:
    """Per category, 1 − cosine similarity of the items' one-hot attributes: the share of
    attributes on which two items differ (every item has one value of each attribute)."""
    distances = {}
    for category in shop_items:
        vectors = attribute_vectors[item_categories == category].astype(np.float64)
        norms = np.linalg.norm(vectors, axis=1)
        cosine = (vectors @ vectors.T) / np.outer(norms, norms)
        distances[category] = 1.0 - cosine
    return distances
