"""Classification scores on planted predictions, and the warning when a classifier learned nothing."""

import numpy as np
import pytest

from fashionbench.evaluation.classification import classification_report


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
    assert report.metrics()["model/test_f1/Shorts"] == pytest.approx(1.0)
    path = report.plot_confusion_matrix(tmp_path / "cm.png")
    assert path.stat().st_size > 1000


def test_a_classifier_that_answers_one_category_is_flagged():
    truth = np.array([3, 3, 3, 3, 3, 0, 1, 2, 1, 3])  # Blouses are 6 of 10
    everything_blouses = classification_report(truth, np.eye(4)[np.full(10, 3)])
    assert everything_blouses.accuracy == pytest.approx(0.6) == everything_blouses.majority_rate
    assert everything_blouses.balanced_accuracy == pytest.approx(0.25)
    assert not everything_blouses.beats_majority
    assert "does not beat the majority class" in everything_blouses.tags()["classifier_warning"]
    assert "100% of the test items are predicted Blouses" in everything_blouses.warning()
    assert everything_blouses.metrics()["model/beats_majority"] == 0.0
    learned = classification_report(truth, np.eye(4)[np.array([3, 3, 3, 3, 0, 0, 1, 2, 1, 3])])
    assert learned.beats_majority and learned.tags() == {} and learned.metrics()["model/test_balanced_accuracy"] > 0.8
