"""Metrics: classification scores and precision@k / recall@k on planted inputs."""

import numpy as np
import pytest

from fashionbench.evaluate import classification_report, evaluate_recommendations, random_recommender
from fashionbench.users import HeldOutFavourites


def test_classification_report_on_planted_predictions(tmp_path):
    # Skirts=0, Dresses=1, Shorts=2, Blouses=3
    truth = np.array([0, 0, 1, 1, 2, 3, 3, 3])
    predicted = np.array([0, 1, 1, 1, 2, 3, 3, 0])
    report = classification_report(truth, np.eye(4)[predicted])
    assert report.accuracy == pytest.approx(6 / 8)
    assert report.per_class["Skirts"]["precision"] == pytest.approx(1 / 2)
    assert report.per_class["Skirts"]["recall"] == pytest.approx(1 / 2)
    assert report.per_class["Dresses"]["precision"] == pytest.approx(2 / 3)
    assert report.per_class["Blouses"]["recall"] == pytest.approx(2 / 3)
    assert report.confusion[0].tolist() == [1, 1, 0, 0]
    assert report.metrics()["test_f1_Shorts"] == pytest.approx(1.0)
    path = report.plot_confusion_matrix(tmp_path / "cm.png")
    assert path.stat().st_size > 1000


def test_precision_and_recall_at_k_count_hits_among_held_out():
    splits = [
        HeldOutFavourites("u1", "Skirts", queries=["q"], held_out=["a", "b"]),
        HeldOutFavourites("u2", "Skirts", queries=["q"], held_out=["c"]),
        HeldOutFavourites("u1", "Dresses", queries=["q"], held_out=["d", "e", "f", "g"]),
    ]
    planted = {("Skirts", "u1"): ["a", "x", "b", "y"], ("Skirts", "u2"): ["x", "y", "z", "w"],
               ("Dresses", "u1"): ["d", "e", "f", "h"]}
    calls = iter(planted[(s.category, s.user_id)] for s in splits)
    report = evaluate_recommendations(lambda category, queries, k: next(calls), splits, k=4)
    assert report.precision["Skirts"] == pytest.approx((2 / 4 + 0) / 2)
    assert report.recall["Skirts"] == pytest.approx((2 / 2 + 0) / 2)
    assert report.precision["Dresses"] == pytest.approx(3 / 4)
    assert report.precision["overall"] == pytest.approx((0.5 + 0 + 0.75) / 3)
    assert report.pairs == {"Skirts": 2, "Dresses": 1, "overall": 3}
    assert report.metrics(prefix="random_")["random_precision_at_k_Dresses"] == pytest.approx(0.75)


def test_random_recommender_draws_k_distinct_non_query_items():
    recommend = random_recommender({"Shorts": [f"s{i}" for i in range(10)]}, seed=0)
    picks = recommend("Shorts", ["s0", "s1"], 5)
    assert len(set(picks)) == 5 and not {"s0", "s1"} & set(picks)
