"""Top-k metrics as RecBole defines them, and the random recommender's exact expectations,
checked against hand computations and against enumerating every possible random list."""

import math
from itertools import permutations

import numpy as np
import pytest

from fashionbench.evaluation.metrics import (
    LIST_METRICS,
    METRICS,
    higher_is_better,
    intra_list_diversities,
    intra_list_diversity,
    list_metrics,
    list_metrics_at,
    random_coverage,
    random_expectations,
    random_intra_list_diversity,
)


def test_metrics_of_a_planted_list():
    # Held-out a, b, c; the list finds b at rank 2 and a at rank 4.
    metrics = list_metrics(["x", "b", "y", "a", "z", "c"], ["a", "b", "c"], k=5)
    assert metrics["hits"] == 2
    assert metrics["precision"] == pytest.approx(2 / 5)
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["hit"] == 1.0
    assert metrics["mrr"] == pytest.approx(1 / 2)
    assert metrics["map"] == pytest.approx((1 / 2 + 2 / 4) / 3)  # the competition's AP@5: min(|H|, 5) = 3
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics["ndcg"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / ideal)


def test_a_short_list_is_still_divided_by_k_and_a_miss_scores_zero():
    assert list_metrics(["a"], ["a"], k=5)["precision"] == pytest.approx(1 / 5)  # RecBole's Precision
    assert list_metrics(["a"], ["a"], k=5)["ndcg"] == 1.0  # one relevant item, found first
    miss = list_metrics(["x", "y"], ["a"], k=2)
    assert miss == {"hits": 0.0, "precision": 0.0, "recall": 0.0, "ndcg": 0.0, "hit": 0.0, "mrr": 0.0, "map": 0.0}


@pytest.mark.parametrize("n, h, k", [(6, 2, 3), (5, 1, 5), (7, 3, 2), (4, 2, 6), (6, 5, 4)])
def test_random_expectations_equal_the_average_over_every_possible_list(n, h, k):
    items = [f"i{j}" for j in range(n)]
    held_out = items[:h]
    lists = list(permutations(items, min(k, n)))  # every ordered list is equally likely
    for metric in LIST_METRICS:
        brute = np.mean([list_metrics(list(ranked), held_out, k)[metric] for ranked in lists])
        assert random_expectations(n, h, k)[metric] == pytest.approx(brute), metric


def test_the_registry_gives_every_metric_its_direction_source_and_random_expectation():
    assert LIST_METRICS == ("hits", "precision", "recall", "ndcg", "hit", "mrr", "map")  # the per-pair table's columns
    assert set(list_metrics(["a"], ["a"], 1)) == set(random_expectations(3, 1, 1)) == set(LIST_METRICS)
    assert all(metric.source and metric.higher_is_better for metric in METRICS.values())
    assert higher_is_better("ladder/ndcg_at_10/pixels") is True
    assert higher_is_better("headline/precision_at_k") is True
    assert higher_is_better("model/test_accuracy") is True
    assert higher_is_better("model/training/train_seconds") is False
    assert higher_is_better("pipeline/index/bytes") is None  # promote asks for --direction


def test_random_coverage_and_diversity_equal_their_enumerations():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(6, 3))
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    candidates = [0, 2, 3, 5]
    brute = np.mean([intra_list_diversity(list(ranked), distances) for ranked in permutations(candidates, 2)])
    # The candidates are every item but the queries 1 and 4, as the pair summary passes them.
    assert random_intra_list_diversity(distances, [4, 1]) == pytest.approx(brute)
    assert np.isnan(random_intra_list_diversity(distances, [0, 1, 2, 3, 4]))  # one candidate: no pair
    # Two lists of 2 from {0,1,2} and {1,2,3} over 5 items: enumerate both draws.
    sets = [np.array([0, 1, 2]), np.array([1, 2, 3])]
    draws = [(set(a), set(b)) for a in permutations(sets[0], 2) for b in permutations(sets[1], 2)]
    brute = np.mean([len(a | b) / 5 for a, b in draws])
    assert random_coverage(5, sets, [2, 2]) == pytest.approx(brute)
    assert random_coverage(5, sets, [3, 3]) == pytest.approx(4 / 5)  # lists as long as the candidates


def one_k_metrics(recommended, held_out, k):
    """list_metrics as it was first written: every sum over the top k alone."""
    relevant = set(held_out)
    flags = [item in relevant for item in list(recommended)[:k]]
    first = next((rank for rank, hit in enumerate(flags, start=1) if hit), None)
    dcg = sum(1.0 / math.log2(rank + 1) for rank, hit in enumerate(flags, start=1) if hit)
    cumulative = np.cumsum(flags)
    precision_sum = sum(cumulative[rank - 1] / rank for rank, hit in enumerate(flags, start=1) if hit)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(relevant), k) + 1))
    hits = sum(flags)
    return {"hits": float(hits), "precision": hits / k, "recall": hits / len(relevant), "ndcg": dcg / ideal,
            "hit": float(hits > 0), "mrr": 1.0 / first if first else 0.0,
            "map": float(precision_sum) / min(len(relevant), k)}


def test_metrics_at_several_k_are_the_same_floats_as_each_k_alone():
    # One pass serves every k of a run's eval.ks; the per-pair table must not change by a bit.
    rng = np.random.default_rng(0)
    for _ in range(500):
        items = [f"i{n}" for n in rng.permutation(40)]
        recommended = items[:rng.integers(0, 30)]
        held_out = rng.choice(items, size=rng.integers(1, 15), replace=False).tolist()
        ks = sorted({int(k) for k in rng.integers(1, 35, size=3)})
        by_k = list_metrics_at(recommended, held_out, ks)
        for k in ks:
            assert by_k[k] == one_k_metrics(recommended, held_out, k) == list_metrics(recommended, held_out, k)


def test_diversity_of_many_lists_is_the_same_floats_as_of_each_list():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(70, 5))
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    lists = [rng.choice(70, size=rng.integers(0, 30), replace=False).tolist() for _ in range(400)]
    batched = intra_list_diversities(lists, distances)
    one_by_one = np.array([intra_list_diversity(positions, distances) for positions in lists])
    np.testing.assert_array_equal(batched, one_by_one)  # bit for bit, NaN for lists shorter than two
