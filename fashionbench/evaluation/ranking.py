"""Top-k metrics of one recommendation list, and their exact expectation under random recommendation.

Definitions follow RecBole's ``recbole.evaluator.metrics`` (Zhao et al., CIKM 2021), which Elliot
(Anelli et al., SIGIR 2021) shares, for one user with held-out items H and a ranked list L:

- precision@k = |L[:k] ∩ H| / k  (RecBole ``Precision``: divided by k even when fewer than k
  items could be recommended);
- recall@k = |L[:k] ∩ H| / |H|  (``Recall``);
- hit@k = 1 if L[:k] ∩ H is not empty, else 0  (``Hit``);
- MRR@k = 1 / rank of the first held-out item in L[:k], 0 if none  (``MRR``);
- nDCG@k = DCG / IDCG with binary relevance, DCG = Σ_{i ≤ k, L[i] ∈ H} 1 / log2(i + 1) and
  IDCG = Σ_{i ≤ min(|H|, k)} 1 / log2(i + 1)  (``NDCG``).

The random recommender needs no draw: it ranks a uniformly random permutation of the n
candidates (the category's shop items minus the user's queries), so for k' = min(k, n) slots,
each holding a held-out item with probability |H| / n, the expectations are exact
(``random_expectations``): E[hits] = k'·|H|/n, E[hit] = 1 − C(n − |H|, k') / C(n, k'),
E[DCG] = (|H|/n)·Σ_{i ≤ k'} 1/log2(i + 1), and E[MRR] = Σ_{i ≤ k'} P(first hit at i) / i.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# The metrics every (user, category) pair gets, per k, in this order.
METRICS = ("hits", "precision", "recall", "ndcg", "hit", "mrr")


def metric_column(metric: str, k: int) -> str:
    """The name of a metric at k: a per-pair column and (with ``/<recommender>``) a logged metric."""
    return f"{metric}_at_{k}"


def _ideal_dcg(n_relevant: int, k: int) -> float:
    return sum(1.0 / math.log2(i + 1) for i in range(1, min(n_relevant, k) + 1))


def list_metrics(recommended: Sequence[str], held_out: Sequence[str] | set[str], k: int) -> dict[str, float]:
    """Every metric of METRICS at k for one ranked list (see the module docstring)."""
    relevant = set(held_out)
    top = list(recommended)[:k]
    flags = [item in relevant for item in top]
    hits = sum(flags)
    first = next((rank for rank, hit in enumerate(flags, start=1) if hit), None)
    dcg = sum(1.0 / math.log2(rank + 1) for rank, hit in enumerate(flags, start=1) if hit)
    return {
        "hits": float(hits),
        "precision": hits / k,
        "recall": hits / len(relevant),
        "ndcg": dcg / _ideal_dcg(len(relevant), k),
        "hit": float(hits > 0),
        "mrr": 1.0 / first if first else 0.0,
    }


def random_expectations(n_candidates: int, n_held_out: int, k: int) -> dict[str, float]:
    """The exact expectation of every metric of METRICS at k when k' = min(k, n) of the
    ``n_candidates`` are drawn uniformly without replacement and ``n_held_out`` of them are relevant."""
    n, h = n_candidates, n_held_out
    slots = min(k, n)
    share = h / n
    hits = slots * share
    no_hit = math.comb(n - h, slots) / math.comb(n, slots)
    dcg = share * sum(1.0 / math.log2(i + 1) for i in range(1, slots + 1))
    mrr, none_yet = 0.0, 1.0  # none_yet: P(no held-out item in the first i - 1 slots)
    for i in range(1, slots + 1):
        mrr += none_yet * h / (n - i + 1) / i
        none_yet *= (n - h - i + 1) / (n - i + 1)
    return {"hits": hits, "precision": hits / k, "recall": hits / h, "ndcg": dcg / _ideal_dcg(h, k),
            "hit": 1.0 - no_hit, "mrr": mrr}


def intra_list_diversity(positions: Sequence[int], distances: np.ndarray) -> float:
    """Mean pairwise distance between the items of one list (Ziegler et al., WWW 2005,
    "Improving recommendation lists through topic diversification"); NaN for fewer than two items.
    ``distances`` is the category's item-by-item distance matrix, ``positions`` index it."""
    positions = np.asarray(positions, dtype=int)
    if len(positions) < 2:
        return float("nan")
    block = distances[np.ix_(positions, positions)]
    return float(block.sum() / (len(positions) * (len(positions) - 1)))


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
