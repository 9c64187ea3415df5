"""Classification on the test split: accuracy against the majority class, per-class scores, confusion.

(Recommendations are evaluated pair by pair in ``fashionbench.evaluation.pairs``.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from fashionbench.artifacts import (
    BALANCED_ACCURACY,
    CLASSIFICATION_TABLE,
    CONFUSION_MATRIX,
    MAJORITY_RATE,
    MODEL_SECTION,
    TAG_CLASSIFIER_WARNING,
    TEST_ACCURACY,
    TEST_F1,
)
from fashionbench.data import CATEGORIES, Catalogue
from fashionbench.model.classifier import predict_in_batches
from fashionbench.stage import StageResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassificationReport(StageResult):
    """Test-split accuracy, per-class precision/recall/F1/support and the confusion matrix."""

    accuracy: float
    per_class: dict[str, dict[str, float]]  # category -> precision, recall, f1, support
    confusion: np.ndarray  # rows: true category, columns: predicted (CATEGORIES order)
    balanced_accuracy: float  # mean per-class recall: 1 / classes for any constant prediction
    majority_rate: float  # the accuracy of always predicting the most frequent true category

    @property
    def beats_majority(self) -> bool:
        """Better than always answering the most frequent category: more accurate than that,
        and better than chance on average over the classes (a constant answer is neither)."""
        present = int((self.confusion.sum(axis=1) > 0).sum())
        return self.accuracy > self.majority_rate and self.balanced_accuracy > 1 / max(present, 1)

    def warning(self) -> str | None:
        """Why the classifier is not worth reading, or None."""
        if self.beats_majority:
            return None
        predicted = self.confusion.sum(axis=0)
        top = CATEGORIES[int(predicted.argmax())]
        return (f"the classifier does not beat the majority class: accuracy {self.accuracy:.3f} vs "
                f"{self.majority_rate:.3f} for always answering the most frequent category, balanced accuracy "
                f"{self.balanced_accuracy:.3f}; {predicted.max() / predicted.sum():.0%} of the test items are "
                f"predicted {top}")

    def metrics(self) -> dict[str, float]:
        """The headline scores and F1 per category (``model/test_f1/Skirts``); precision, recall and
        support per category are in the run's ``eval/classification.csv``."""
        flat = {TEST_ACCURACY: self.accuracy, BALANCED_ACCURACY: self.balanced_accuracy,
                MAJORITY_RATE: self.majority_rate, MODEL_SECTION + "beats_majority": float(self.beats_majority)}
        flat.update({TEST_F1 + category: scores["f1"] for category, scores in self.per_class.items()})
        return flat

    stage = "classify"

    def summary(self) -> str:
        return (f"test accuracy {self.accuracy:.3f}, balanced {self.balanced_accuracy:.3f} (always the most "
                f"frequent category: {self.majority_rate:.3f})")

    def tags(self) -> dict[str, str]:
        warning = self.warning()
        return {TAG_CLASSIFIER_WARNING: warning} if warning else {}

    def write_diagnostics(self, directory: Path) -> None:
        path = directory / CONFUSION_MATRIX
        path.parent.mkdir(parents=True, exist_ok=True)
        self.plot_confusion_matrix(path)

    def write_artifacts(self, directory: Path) -> None:
        table = directory / CLASSIFICATION_TABLE
        table.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame.from_dict(self.per_class, orient="index").rename_axis("category").to_csv(table)

    def plot_confusion_matrix(self, path: Path) -> Path:
        from matplotlib.figure import Figure  # the object API: no pyplot state, so any thread may draw

        figure = Figure(figsize=(5, 4.5))
        axes = figure.subplots()
        ConfusionMatrixDisplay(self.confusion, display_labels=list(CATEGORIES)).plot(ax=axes, colorbar=False)
        axes.set_title(f"Test split, accuracy {self.accuracy:.3f}")
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        return path


def evaluate_classifier(model, test: Catalogue, batch_size: int) -> ClassificationReport:
    """Classify the test split with ``model`` (a Keras classifier) and score it; log a warning
    when it does not beat the majority class."""
    return score_classification(test, predict_in_batches(model, test.images, batch_size))


def score_classification(test: Catalogue, probabilities: np.ndarray) -> ClassificationReport:
    """Score the classifier's ``probabilities`` for the test split; log a warning when it does not
    beat the majority class."""
    report = classification_report(test.labels, probabilities)
    if report.warning():
        log.warning("%s", report.warning())
    return report


def classification_report(true_labels: np.ndarray, probabilities: np.ndarray) -> ClassificationReport:
    """Score softmax outputs against category indices (positions in CATEGORIES)."""
    predicted = probabilities.argmax(axis=1)
    labels = list(range(len(CATEGORIES)))
    precision, recall, f1, support = precision_recall_fscore_support(
        true_labels, predicted, labels=labels, zero_division=0
    )
    per_class = {
        category: {"precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i]), "support": float(support[i])}
        for i, category in enumerate(CATEGORIES)
    }
    counts = np.bincount(true_labels, minlength=len(CATEGORIES))
    return ClassificationReport(
        float(accuracy_score(true_labels, predicted)),
        per_class,
        confusion_matrix(true_labels, predicted, labels=labels),
        float(balanced_accuracy_score(true_labels, predicted)),
        float(counts.max() / counts.sum()),
    )

