"""Per-pair results: one row per (user, category) pair and recommender, every mean derived from them.

As ann-benchmarks keeps every query's neighbours and RecBole/Elliot keep per-user results for
significance tests, a run keeps its raw results as the artifact ``eval/pairs.csv``:

    user_id, category, recommender, n_queries, n_held_out, n_candidates,
    hits_at_5, precision_at_5, recall_at_5, ndcg_at_5, hit_at_5, mrr_at_5, ... (each k),
    queries, held_out, recommended   (JSON lists of item ids; recommended is empty for random)

``n_candidates`` is the category's shop items minus the user's queries. The random
recommender's rows hold exact expectations (fractional hits). Every metric the run logs about
recommendations is computed from this table by ``summarise``, so two runs can be compared pair
by pair later (``fashionbench.compare``) without re-running anything.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fashionbench.artifacts import (
    EVAL_PAIRS,
    HEADLINE_METRIC,
    HEADLINE_RECALL,
    LADDER_PLOT,
    NORMALISED_HEADLINE,
    PAIR_SUMMARY,
    PAIRS,
    TAG_EVAL_FINGERPRINT,
    TAG_ORACLE,
    ladder_metric,
    random_counterpart,
)
from fashionbench.data import CATEGORIES, Catalogue
from fashionbench.data.catalogue import ATTRIBUTE_PREFIX
from fashionbench.data.measured_attributes import attribute_vectors, item_attributes
from fashionbench.evaluation.ranking import (
    METRICS,
    intra_list_diversity,
    list_metrics,
    metric_column,
    random_coverage,
    random_expectations,
    random_intra_list_diversity,
)
from fashionbench.evaluation.references import (
    LADDER,
    MODEL,
    ORACLE,
    RANDOM,
    IndexRecommender,
    RandomRecommender,
    reference_ladder,
)
from fashionbench.evaluation.schema import EvalConfig, EvalConfigError
from fashionbench.index.base import ItemEmbeddings
from fashionbench.index.shop import ShopIndex
from fashionbench.runtime.console import progress
from fashionbench.stage import StageResult
from fashionbench.users.simulation import HeldOutFavourites, SimulatedUsers

ID_COLUMNS = ("user_id", "category", "recommender")
COUNT_COLUMNS = ("n_queries", "n_held_out", "n_candidates")
LIST_COLUMNS = ("queries", "held_out", "recommended")
# Averaged over pairs and logged as <metric>_at_<k>/<recommender> ("hits" stays in the table).
LOGGED_METRICS = ("precision", "recall", "ndcg", "hit", "mrr")


def metric_name(metric: str, k: int, recommender: str, category: str | None = None) -> str:
    """The logged name: ``ladder/precision_at_5/model``, ``ladder/precision_at_5/model/Dresses``."""
    return ladder_metric(metric_column(metric, k), recommender, category)


@dataclass(frozen=True)
class PairResults(StageResult):
    """Every recommender's results on every evaluable (user, category) pair, and what the means need.

    ``shop_items``: the category's item ids (coverage and diversity are over them);
    ``distances``: per category, the item-by-item attribute distance matrix (intra-list
    diversity), in ``shop_items`` order; None when the catalogue's items have no attributes.
    """

    table: pd.DataFrame
    headline_k: int
    ks: tuple[int, ...]
    shop_items: Mapping[str, list[str]]
    distances: Mapping[str, np.ndarray] | None = None
    notes: Mapping[str, str] = field(default_factory=dict)  # tag -> what the references used or why skipped

    stage = "recommend"

    def summary(self) -> str:
        recommenders = list(dict.fromkeys(self.table["recommender"]))
        pairs = self.table.drop_duplicates(["user_id", "category"]).shape[0]
        return f"{len(recommenders)} recommenders ({', '.join(recommenders)}) on {pairs} pairs, k in {list(self.ks)}"

    def summary_table(self) -> pd.DataFrame:
        """``summary_table`` of this table, computed once (the run logs it, its metrics and its plot)."""
        if "_summary" not in self.__dict__:  # frozen dataclass: memoise in __dict__
            self.__dict__["_summary"] = summary_table(self.table, self.headline_k, self.ks, self.shop_items,
                                                      self.distances)
        return self.__dict__["_summary"]

    def metrics(self) -> dict[str, float]:
        return summarise(self.table, self.headline_k, self.ks, self.shop_items, self.distances,
                         summary=self.summary_table())

    def tags(self) -> dict[str, str]:
        return {TAG_EVAL_FINGERPRINT: eval_fingerprint(self.table, self.shop_items), **self.notes}

    def write_artifacts(self, directory: Path) -> None:
        save_pairs(self.table, directory / PAIRS)
        self.summary_table().to_csv(directory / PAIR_SUMMARY, index=False)

    def write_diagnostics(self, directory: Path) -> None:
        summary = self.summary_table()
        if not summary.empty:  # no evaluable pair: nothing to draw
            plot_ladder(summary, self.headline_k, directory / LADDER_PLOT)


def evaluate_recommenders(recommenders: Sequence, splits: Sequence[HeldOutFavourites],
                          shop_items: Mapping[str, list[str]], ks: Sequence[int], headline_k: int,
                          distances: Mapping[str, np.ndarray] | None = None,
                          notes: Mapping[str, str] | None = None) -> PairResults:
    """Score every recommender on every split at every k (``fashionbench.evaluation.ranking``).

    Each recommender is asked once per split for max(ks) items; the random recommender is
    scored by its exact expectation. Raises ValueError for a k < 1.
    """
    ks = tuple(sorted(set(ks) | {headline_k}))
    if ks[0] < 1:
        raise ValueError(f"eval.ks must all be >= 1, got {list(ks)}")
    longest = ks[-1]
    rows = []
    for split in progress(splits, "recommend", len(splits)):
        pair = {"user_id": split.user_id, "category": split.category, "n_queries": len(split.queries),
                "n_held_out": len(split.held_out),
                "n_candidates": len(shop_items[split.category]) - len(split.queries),
                "queries": json.dumps(list(split.queries)), "held_out": json.dumps(list(split.held_out))}
        for recommender in recommenders:
            if isinstance(recommender, RandomRecommender):
                values = {k: random_expectations(pair["n_candidates"], pair["n_held_out"], k) for k in ks}
                recommended = ""
            else:
                ranked = recommender.recommend(split, longest)
                values = {k: list_metrics(ranked, split.held_out, k) for k in ks}
                recommended = json.dumps(ranked)
            rows.append({**pair, "recommender": recommender.name, "recommended": recommended,
                         **{metric_column(m, k): values[k][m] for k in ks for m in METRICS}})
    columns = [*ID_COLUMNS, *COUNT_COLUMNS, *(metric_column(m, k) for k in ks for m in METRICS), *LIST_COLUMNS]
    return PairResults(pd.DataFrame(rows, columns=columns), headline_k, ks, dict(shop_items), distances,
                       dict(notes or {}))


ALL = "all"  # the summary table's row over every category


def summary_table(table: pd.DataFrame, headline_k: int, ks: Sequence[int], shop_items: Mapping[str, list[str]],
                  distances: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Means over pairs per recommender and category (and over all categories, ``category="all"``):
    ``pairs``, every metric at every k, ``coverage_at_<k>`` and ``ild_at_<k>`` at the headline k.
    Logged as ``eval/summary.csv``; ``summarise`` names its numbers for the run's metrics."""
    rows = []
    for recommender, of_recommender in table.groupby("recommender", sort=False):
        scopes = [(ALL, of_recommender), *((c, of_recommender[of_recommender["category"] == c]) for c in CATEGORIES)]
        for category, rows_in_scope in scopes:
            if rows_in_scope.empty:
                continue
            row = {"recommender": recommender, "category": category, "pairs": len(rows_in_scope)}
            row.update({metric_column(m, k): float(rows_in_scope[metric_column(m, k)].mean())
                        for k in ks for m in LOGGED_METRICS})
            row[metric_column("coverage", headline_k)] = _coverage(rows_in_scope, headline_k, shop_items)
            if distances is not None:
                row[metric_column("ild", headline_k)] = _diversity(rows_in_scope, headline_k, shop_items, distances)
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


def _coverage(rows: pd.DataFrame, k: int, shop_items: Mapping[str, list[str]]) -> float:
    """Distinct items in the top-k lists / all shop items (RecBole ``ItemCoverage``), over the
    categories with evaluated pairs; for random, its exact expectation."""
    covered, total = 0.0, 0
    for category, in_category in rows.groupby("category"):
        items = shop_items[category]
        total += len(items)
        if (in_category["recommended"] == "").all():  # the random recommender: expected coverage
            candidates = [_candidate_positions(items, queries) for queries in in_category["queries"]]
            covered += len(items) * random_coverage(len(items), candidates, [k] * len(candidates))
        else:
            covered += len({item for ranked in in_category["recommended"] for item in json.loads(ranked)[:k]})
    return covered / total if total else float("nan")


def _diversity(rows: pd.DataFrame, k: int, shop_items: Mapping[str, list[str]],
               distances: Mapping[str, np.ndarray]) -> float:
    """Mean over pairs of the intra-list attribute distance of the top-k list (random: expected)."""
    values = []
    for category, in_category in rows.groupby("category"):
        items, matrix = shop_items[category], distances[category]
        position = {item: i for i, item in enumerate(items)}
        row_sums = None
        for row in in_category.itertuples():
            if row.recommended == "":
                if row_sums is None:
                    row_sums = matrix.sum(axis=1)
                excluded = [position[item] for item in json.loads(row.queries) if item in position]
                values.append(random_intra_list_diversity(matrix, excluded, row_sums))
            else:
                ranked = json.loads(row.recommended)[:k]
                values.append(intra_list_diversity([position[item] for item in ranked], matrix))
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


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


def eval_fingerprint(table: pd.DataFrame, shop_items: Mapping[str, list[str]]) -> str:
    """A short hash of who is evaluated on what: the pairs, their queries and held-out items,
    and the shop's items per category. Runs with the same fingerprint can be compared pair by pair."""
    pairs = table.drop_duplicates(["user_id", "category"])[["user_id", "category", "queries", "held_out"]]
    digest = hashlib.sha256()
    for row in pairs.sort_values(["user_id", "category"]).itertuples(index=False):
        digest.update(json.dumps([row.user_id, row.category, sorted(json.loads(row.queries)),
                                  sorted(json.loads(row.held_out))]).encode())
    digest.update(json.dumps({c: sorted(map(str, items)) for c, items in sorted(shop_items.items())}).encode())
    return digest.hexdigest()[:16]


def save_pairs(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)


def load_pairs(path: Path) -> pd.DataFrame:
    """The table ``save_pairs`` wrote: ids and lists as text, counts and metrics as numbers."""
    return pd.read_csv(path, dtype={"user_id": str, "category": str, "recommender": str, "queries": str,
                                    "held_out": str, "recommended": str}, keep_default_na=False)


def check_cutoffs(options: EvalConfig, shop: Catalogue) -> None:
    """EvalConfigError naming ``eval.k`` when the headline cutoff is larger than any category of the
    shop can fill: a user's list holds at most the category's items minus one query. (A larger
    k of ``eval.ks`` is allowed: its metrics are defined, a short list counting as misses.)"""
    largest = int(shop.items["category"].value_counts().max()) if len(shop) else 0
    if options.k > largest - 1:
        raise EvalConfigError(f"eval.k={options.k} is larger than any category's candidates: the largest category "
                              f"of the shop (the test split) has {largest} items, so a list holds at most "
                              f"{max(largest - 1, 0)}; use eval.k <= {max(largest - 1, 0)}")


def evaluate_shop(shop_index: ShopIndex, users: SimulatedUsers, splits: Sequence[HeldOutFavourites],
                  untrained: ItemEmbeddings | None, index_config, options: EvalConfig) -> PairResults:
    """The model's recommendations (``shop_index``) and the reference ladder's, on the same pairs.

    ``untrained``: the shop embedded before fine-tuning (None leaves that reference out);
    ``index_config``: the model's index backend, which the untrained reference uses too.
    The oracle and intra-list diversity compare items by their attributes (the catalogue's,
    else measured from the pixels); with no informative attribute both are left out, and the
    reason is the ``oracle_attributes`` tag.
    """
    shop = shop_index.shop
    shop_items = shop_index.item_ids()
    attributes, measured = item_attributes(shop)
    informative = [c for c in attributes.columns if attributes[c].nunique() > 1]
    if informative:
        vectors = attribute_vectors(attributes[informative])
        source = "measured from the pixels" if measured else "the catalogue's"
        note = f"{source}: {', '.join(c.removeprefix(ATTRIBUTE_PREFIX) for c in informative)}"
    else:
        vectors, note = None, "skipped: the items have no attribute that differs between them"
    references = reference_ladder(shop, users, shop_items, untrained, index_config, vectors, options.pixels_size,
                                  tuple(options.references))
    recommenders = sorted([IndexRecommender(MODEL, shop_index.indexes), *references],
                          key=lambda recommender: LADDER.index(recommender.name))
    distances = (attribute_distances(vectors, shop.items["category"].to_numpy(), shop_items)
                 if vectors is not None else None)
    return evaluate_recommenders(recommenders, splits, shop_items, options.ks, options.k, distances,
                                 {TAG_ORACLE: note})


def plot_ladder(summary: pd.DataFrame, k: int, path: Path) -> Path:
    """The run at a glance: precision@k of every recommender, floor to ceiling, per category and
    over all pairs (``summary_table``'s rows), each bar labelled with its value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    column = metric_column("precision", k)
    scopes = [ALL, *(c for c in CATEGORIES if c in set(summary["category"]))]
    recommenders = [r for r in LADDER if r in set(summary["recommender"])]
    values = summary.set_index(["recommender", "category"])[column]
    figure, axes = plt.subplots(figsize=(1.9 * len(scopes) + 1.5, 3.8))
    width = 0.8 / len(recommenders)
    colours = plt.cm.viridis(np.linspace(0.05, 0.9, len(recommenders)))
    for i, (recommender, colour) in enumerate(zip(recommenders, colours)):
        heights = [values.get((recommender, scope), np.nan) for scope in scopes]
        xs = np.arange(len(scopes)) + (i - (len(recommenders) - 1) / 2) * width
        bars = axes.bar(xs, heights, width, color="crimson" if recommender == MODEL else colour, label=recommender)
        axes.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
    pairs = summary.groupby("category")["pairs"].max()
    axes.set_xticks(np.arange(len(scopes)), [f"{scope}\n({int(pairs[scope])} pairs)" for scope in scopes], fontsize=8)
    axes.set_ylabel(f"precision@{k}")
    axes.set_title(f"precision@{k} by recommender, floor (random) to ceiling (oracle); the model in red", fontsize=9)
    axes.margins(y=0.2)
    axes.legend(fontsize=7, ncols=3, loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
