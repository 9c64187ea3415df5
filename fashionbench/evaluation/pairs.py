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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fashionbench.artifacts import (
    LADDER_PLOT,
    PAIR_SUMMARY,
    PAIRS,
    TAG_EVAL_FINGERPRINT,
    TAG_ORACLE,
    ArtifactError,
    metric_column,
)
from fashionbench.data import Catalogue
from fashionbench.data.catalogue import ATTRIBUTE_PREFIX
from fashionbench.data.measured_attributes import attribute_vectors, item_attributes
from fashionbench.evaluation.metrics import LIST_METRICS, list_metrics_at, random_expectations
from fashionbench.evaluation.plots import plot_ladder
from fashionbench.evaluation.references import (
    LADDER,
    MODEL,
    IndexRecommender,
    RandomRecommender,
    reference_ladder,
)
from fashionbench.evaluation.schema import EvalConfig, EvalConfigError
from fashionbench.evaluation.summaries import attribute_distances, summarise, summary_table
from fashionbench.index.base import ItemEmbeddings
from fashionbench.index.shop import ShopIndex
from fashionbench.runtime.console import progress
from fashionbench.stage import StageResult
from fashionbench.users.simulation import HeldOutFavourites, SimulatedUsers

ID_COLUMNS = ("user_id", "category", "recommender")
COUNT_COLUMNS = ("n_queries", "n_held_out", "n_candidates")
LIST_COLUMNS = ("queries", "held_out", "recommended")


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
    """Score every recommender on every split at every k (``fashionbench.evaluation.metrics``).

    Each recommender ranks max(ks) items for every split (an index recommender answers them all
    at once, ``recommend_all``); the random recommender is scored by its exact expectation.
    Raises ValueError for a k < 1.
    """
    ks = tuple(sorted(set(ks) | {headline_k}))
    if ks[0] < 1:
        raise ValueError(f"eval.ks must all be >= 1, got {list(ks)}")
    splits = list(splits)
    # Every recommender's lists first (an index answers all its splits at once), then the rows,
    # split by split and in the recommenders' order, as the table has always been laid out.
    rankings = [None if isinstance(recommender, RandomRecommender) else _ranked_lists(recommender, splits, ks[-1])
                for recommender in progress(recommenders, "recommend", len(recommenders))]
    rows = []
    for s, split in enumerate(splits):
        pair = {"user_id": split.user_id, "category": split.category, "n_queries": len(split.queries),
                "n_held_out": len(split.held_out),
                "n_candidates": len(shop_items[split.category]) - len(split.queries),
                "queries": json.dumps(list(split.queries)), "held_out": json.dumps(list(split.held_out))}
        for recommender, ranked in zip(recommenders, rankings, strict=True):
            if ranked is None:
                values = {k: random_expectations(pair["n_candidates"], pair["n_held_out"], k) for k in ks}
                recommended = ""
            else:
                values = list_metrics_at(ranked[s], split.held_out, ks)
                recommended = json.dumps(ranked[s])
            rows.append({**pair, "recommender": recommender.name, "recommended": recommended,
                         **{metric_column(m, k): values[k][m] for k in ks for m in LIST_METRICS}})
    columns = [*ID_COLUMNS, *COUNT_COLUMNS, *(metric_column(m, k) for k in ks for m in LIST_METRICS), *LIST_COLUMNS]
    return PairResults(pd.DataFrame(rows, columns=columns), headline_k, ks, dict(shop_items), distances,
                       dict(notes or {}))


def _ranked_lists(recommender, splits: list[HeldOutFavourites], k: int) -> list[list[str]]:
    """The recommender's top k for every split: ``recommend_all`` where it has one (an index
    recommender asks each shared neighbour search once), else one ``recommend`` per split."""
    if hasattr(recommender, "recommend_all"):
        return recommender.recommend_all(splits, k)
    return [recommender.recommend(split, k) for split in splits]


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


_METRIC_AT_K = re.compile(r"(?P<metric>\w+?)_at_(?P<k>\d+)")


def load_pairs(path: Path, name: str | None = None) -> pd.DataFrame:
    """The table ``save_pairs`` wrote (or ``same_item``'s): ids and lists as text, counts and metrics
    as numbers. Raises ArtifactError (the file's name and what is wrong) for a file that is not such a
    table: unreadable, without the ids, a unit twice for one recommender, or a metric that is missing,
    not a number or out of its range (hits in 0..k, every other metric in 0..1). ``name``: what the
    messages call the file (default: its name)."""
    name = name or path.name
    try:
        table = pd.read_csv(path, dtype={"user_id": str, "category": str, "recommender": str, "queries": str,
                                         "held_out": str, "recommended": str}, keep_default_na=False)
    except (OSError, ValueError) as error:  # UnicodeDecodeError, pandas' ParserError and EmptyDataError
        raise ArtifactError(f"{name} is unreadable ({type(error).__name__}: {error})") from None
    missing = [column for column in ID_COLUMNS if column not in table.columns]
    if missing:
        raise ArtifactError(f"{name} lacks the column(s) {missing}")
    twice = table.duplicated(list(ID_COLUMNS))
    if twice.any():
        row = table[twice].iloc[0]
        raise ArtifactError(f"{name} holds {int(twice.sum())} row(s) twice, e.g. user {row['user_id']!r}, "
                            f"category {row['category']!r}, recommender {row['recommender']!r}")
    for column in table.columns:
        match = _METRIC_AT_K.fullmatch(column)
        if match is None:
            continue
        values = pd.to_numeric(table[column].replace("", np.nan), errors="coerce")
        top = int(match["k"]) if match["metric"] == "hits" else 1
        bad = ~values.between(-1e-9, top + 1e-9)  # NaN (empty, not a number) is out of range too
        if bad.any():
            example = table[column][bad].iloc[0]
            shown = repr(example) if isinstance(example, str) else str(example)
            raise ArtifactError(f"{name}: {int(bad.sum())} value(s) of {column} are missing, not numbers or "
                                f"outside 0..{top}, e.g. {shown}")
        if not pd.api.types.is_numeric_dtype(table[column]):
            table[column] = values
    return table


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


