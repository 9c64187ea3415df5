"""The recommendation metrics, one registry: each metric's value on a ranked list, its exact
expectation under random recommendation, its direction and the source of its definition.

As RecBole's evaluator keeps a metric as one object that declares what it needs and whether
smaller is better, ``METRICS`` holds one ``Metric`` per name; the per-pair table's columns, the
logged ladder, the random reference and the direction ``promote`` ranks by are all read from it.

Definitions follow RecBole's ``recbole.evaluator.metrics`` (Zhao et al., CIKM 2021), which Elliot
(Anelli et al., SIGIR 2021) shares, for one user with held-out items H and a ranked list L:

- precision@k = |L[:k] ∩ H| / k  (RecBole ``Precision``: divided by k even when fewer than k
  items could be recommended);
- recall@k = |L[:k] ∩ H| / |H|  (``Recall``);
- hit@k = 1 if L[:k] ∩ H is not empty, else 0  (``Hit``);
- MRR@k = 1 / rank of the first held-out item in L[:k], 0 if none  (``MRR``);
- nDCG@k = DCG / IDCG with binary relevance, DCG = Σ_{i ≤ k, L[i] ∈ H} 1 / log2(i + 1) and
  IDCG = Σ_{i ≤ min(|H|, k)} 1 / log2(i + 1)  (``NDCG``);
- MAP@k: the mean over pairs of AP@k = (1 / min(|H|, k)) Σ_{i ≤ k, L[i] ∈ H} precision@i, the H&M
  Personalized Fashion Recommendations competition's definition (Kaggle, 2022; MAP@12 there,
  over a customer's purchases in the week after the cut; here over a pair's held-out items).

The random recommender needs no draw: it ranks a uniformly random permutation of the n
candidates (the category's shop items minus the user's queries), so for k' = min(k, n) slots,
each holding a held-out item with probability |H| / n, the expectations are exact
(``random_expectations``): E[hits] = k'·|H|/n, E[hit] = 1 − C(n − |H|, k') / C(n, k'),
E[DCG] = (|H|/n)·Σ_{i ≤ k'} 1/log2(i + 1), E[MRR] = Σ_{i ≤ k'} P(first hit at i) / i, and
E[Σ precision@i at the hits] = Σ_{i ≤ k'} (|H|/n)·(1 + (i − 1)(|H| − 1)/(n − 1)) / i (slot i holds a
held-out item, and each of the i − 1 slots before it another with probability (|H| − 1)/(n − 1)).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fashionbench.artifacts import HEADLINE_SECTION, MODEL_SECTION, parse_metric_name


@functools.lru_cache(maxsize=1024)
def _ideal_dcg(n_relevant: int, k: int) -> float:
    return sum(1.0 / math.log2(i + 1) for i in range(1, min(n_relevant, k) + 1))


@dataclass(frozen=True)
class RankedList:
    """What every list metric is computed from: one list's top k against the held-out items."""

    k: int
    n_relevant: int  # |H|
    hits: int  # |L[:k] ∩ H|
    first: int | None  # rank of the first hit in L[:k]
    dcg: float
    precision_sum: float  # Σ precision@i over the ranks i ≤ k that hold a held-out item


@dataclass(frozen=True)
class RandomList:
    """The same quantities' exact expectations when the list is a uniformly random permutation of
    ``n`` candidates, k' = min(k, n) slots each holding a held-out item with probability |H| / n."""

    k: int
    n_relevant: int
    hits: float  # E[hits] = k'·|H|/n
    no_hit: float  # P(no hit) = C(n − |H|, k') / C(n, k')
    dcg: float  # E[DCG] = (|H|/n)·Σ_{i ≤ k'} 1/log2(i + 1)
    mrr: float  # Σ_{i ≤ k'} P(first hit at i) / i
    precision_sum: float  # E[Σ precision@i at the hits]


@dataclass(frozen=True)
class Metric:
    """One metric: its direction, where its definition comes from, and (for a list metric) its value
    on a list and its expectation under random recommendation."""

    name: str
    source: str
    higher_is_better: bool = True
    of_list: Callable[[RankedList], float] | None = None  # None: a metric of a recommender's lists together
    of_random: Callable[[RandomList], float] | None = None
    logged: bool = True  # averaged over pairs and logged as ladder/<name>_at_<k>/<recommender>


METRICS: dict[str, Metric] = {metric.name: metric for metric in (
    Metric("hits", "|L[:k] ∩ H|", of_list=lambda r: float(r.hits), of_random=lambda r: r.hits, logged=False),
    Metric("precision", "RecBole Precision: |L[:k] ∩ H| / k",
           of_list=lambda r: r.hits / r.k, of_random=lambda r: r.hits / r.k),
    Metric("recall", "RecBole Recall: |L[:k] ∩ H| / |H|",
           of_list=lambda r: r.hits / r.n_relevant, of_random=lambda r: r.hits / r.n_relevant),
    Metric("ndcg", "RecBole NDCG, binary relevance: DCG / IDCG",
           of_list=lambda r: r.dcg / _ideal_dcg(r.n_relevant, r.k),
           of_random=lambda r: r.dcg / _ideal_dcg(r.n_relevant, r.k)),
    Metric("hit", "RecBole Hit: 1 if L[:k] ∩ H is not empty",
           of_list=lambda r: float(r.hits > 0), of_random=lambda r: 1.0 - r.no_hit),
    Metric("mrr", "RecBole MRR: 1 / rank of the first hit in L[:k]",
           of_list=lambda r: 1.0 / r.first if r.first else 0.0, of_random=lambda r: r.mrr),
    Metric("map", "H&M competition MAP@k: mean of (1 / min(|H|, k)) Σ precision@i at each hit i ≤ k",
           of_list=lambda r: r.precision_sum / min(r.n_relevant, r.k),
           of_random=lambda r: r.precision_sum / min(r.n_relevant, r.k)),
    Metric("coverage", "RecBole ItemCoverage: distinct recommended items / shop items"),
    Metric("ild", "intra-list diversity: mean pairwise attribute distance (Ziegler et al., WWW 2005)"),
)}
# The metrics every (user, category) pair gets, per k, in this order: the per-pair table's columns.
LIST_METRICS = tuple(name for name, metric in METRICS.items() if metric.of_list is not None)
# Averaged over pairs and logged as ladder/<metric>_at_<k>/<recommender> ("hits" stays in the table).
LOGGED_METRICS = tuple(name for name in LIST_METRICS if METRICS[name].logged)


def list_metrics(recommended: Sequence[str], held_out: Sequence[str] | set[str], k: int) -> dict[str, float]:
    """Every list metric at k for one ranked list (see the module docstring)."""
    return list_metrics_at(recommended, held_out, [k])[k]


def list_metrics_at(recommended: Sequence[str], held_out: Sequence[str] | set[str], ks: Sequence[int]
                    ) -> dict[int, dict[str, float]]:
    """``list_metrics`` at every k of ``ks``, from one pass over the list's top max(ks).

    The sums are running sums in rank order, read at rank k, so each k's values are the same
    floats, bit for bit, as summing the top k alone.
    """
    relevant = set(held_out)
    top = list(recommended)[:max(ks)]
    hits, first, dcg, precision_sum = 0, None, 0.0, 0.0
    after = [(hits, first, dcg, precision_sum)]  # after[r]: the sums over ranks 1..r
    for rank, item in enumerate(top, start=1):
        if item in relevant:
            hits += 1
            first = first or rank
            dcg += 1.0 / math.log2(rank + 1)
            precision_sum += hits / rank  # precision@rank at a rank that holds a held-out item
        after.append((hits, first, dcg, precision_sum))
    values = {}
    for k in ks:
        ranked = RankedList(k, len(relevant), *after[min(k, len(top))])
        values[k] = {name: METRICS[name].of_list(ranked) for name in LIST_METRICS}
    return values


def random_expectations(n_candidates: int, n_held_out: int, k: int) -> dict[str, float]:
    """The exact expectation of every list metric at k when k' = min(k, n) of the
    ``n_candidates`` are drawn uniformly without replacement and ``n_held_out`` of them are relevant."""
    return dict(_random_expectations(n_candidates, n_held_out, k))


@functools.lru_cache(maxsize=4096)  # an evaluation asks for the same few (n, |H|, k) for every pair
def _random_expectations(n_candidates: int, n_held_out: int, k: int) -> dict[str, float]:
    n, h = n_candidates, n_held_out
    slots = min(k, n)
    share = h / n
    mrr, none_yet = 0.0, 1.0  # none_yet: P(no held-out item in the first i - 1 slots)
    for i in range(1, slots + 1):
        mrr += none_yet * h / (n - i + 1) / i
        none_yet *= (n - h - i + 1) / (n - i + 1)
    others = (h - 1) / (n - 1) if n > 1 else 0.0  # P(another held-out item in a given other slot)
    precision_sum = sum(share * (1 + (i - 1) * others) / i for i in range(1, slots + 1))
    draw = RandomList(k, h, slots * share, math.comb(n - h, slots) / math.comb(n, slots),
                      share * sum(1.0 / math.log2(i + 1) for i in range(1, slots + 1)), mrr, precision_sum)
    return {name: METRICS[name].of_random(draw) for name in LIST_METRICS}


def higher_is_better(logged_name: str) -> bool | None:
    """Whether a larger value of a logged metric is better: a recommendation metric's by the registry
    (``ladder/ndcg_at_10/model``, ``headline/precision_at_k``), the classifier's test scores yes,
    seconds no; None for a name it cannot tell (``promote --direction`` then says)."""
    parsed = parse_metric_name(logged_name)
    if parsed is not None and parsed.metric in METRICS:
        return METRICS[parsed.metric].higher_is_better
    leaf = logged_name.rpartition("/")[2]
    if leaf.endswith("_seconds"):
        return False
    if logged_name.startswith(HEADLINE_SECTION) or (logged_name.startswith(MODEL_SECTION) and leaf.startswith("test_")):
        return True
    return None


def intra_list_diversity(positions: Sequence[int], distances: np.ndarray) -> float:
    """Mean pairwise distance between the items of one list (Ziegler et al., WWW 2005,
    "Improving recommendation lists through topic diversification"); NaN for fewer than two items.
    ``distances`` is the category's item-by-item distance matrix, ``positions`` index it."""
    positions = np.asarray(positions, dtype=int)
    if len(positions) < 2:
        return float("nan")
    block = distances[np.ix_(positions, positions)]
    return float(block.sum() / (len(positions) * (len(positions) - 1)))


def intra_list_diversities(lists: Sequence[Sequence[int]], distances: np.ndarray) -> np.ndarray:
    """``intra_list_diversity`` of each list, as an array: the lists of one length at once. Each
    list's block is summed as one contiguous row, as numpy sums a lone block, so the values are
    the same floats."""
    values = np.full(len(lists), np.nan)
    lengths = np.array([len(positions) for positions in lists], dtype=int)
    for length in np.unique(lengths[lengths >= 2]):
        members = np.flatnonzero(lengths == length)
        positions = np.array([lists[i] for i in members], dtype=int)  # (lists, length)
        blocks = distances[positions[:, :, None], positions[:, None, :]]  # (lists, length, length)
        values[members] = blocks.reshape(len(members), -1).sum(axis=1) / (length * (length - 1))
    return values


def random_intra_list_diversity(distances: np.ndarray, excluded: Sequence[int],
                                row_sums: np.ndarray | None = None) -> float:
    """The expected intra-list diversity of a uniformly random list of two or more of a
    category's items, every item but those at ``excluded`` (a pair's queries) a candidate:
    every pair of candidates is equally likely to be in it, so it is their mean pairwise
    distance; NaN for fewer than two candidates. Computed from the matrix's row sums (the
    candidates' pairwise sum is the whole matrix's, less the excluded items' rows and columns,
    their shared block added back once), so a pair costs O(excluded x items) rather than
    O(items^2). The diagonal must be zero (an item's distance to itself). ``row_sums``:
    ``distances.sum(axis=1)``, when the caller has it."""
    row_sums = distances.sum(axis=1) if row_sums is None else row_sums
    excluded = np.unique(np.asarray(excluded, dtype=int))
    candidates = len(distances) - len(excluded)
    if candidates < 2:
        return float("nan")
    total = row_sums.sum() - 2 * row_sums[excluded].sum() + distances[np.ix_(excluded, excluded)].sum()
    return float(total / (candidates * (candidates - 1)))


def random_coverage(n_items: int, candidate_sets: Sequence[np.ndarray], slots: Sequence[int]) -> float:
    """The expected share of a category's ``n_items`` that at least one random list holds, when
    list j draws ``slots[j]`` of the positions ``candidate_sets[j]`` uniformly (RecBole's
    ``ItemCoverage``: distinct recommended items / all items)."""
    missed = np.ones(n_items)  # P(the item is in no list so far)
    for candidates, slot in zip(candidate_sets, slots, strict=True):
        if len(candidates):
            missed[np.asarray(candidates, dtype=int)] *= 1.0 - min(slot, len(candidates)) / len(candidates)
    return float(np.mean(1.0 - missed)) if n_items else float("nan")
