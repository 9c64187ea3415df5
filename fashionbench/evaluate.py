"""Evaluation: classification on the test split, and precision@k / recall@k of recommendations."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import ConfusionMatrixDisplay, accuracy_score, confusion_matrix, precision_recall_fscore_support

from fashionbench.artifacts import CONFUSION_MATRIX
from fashionbench.data import CATEGORIES, Catalogue
from fashionbench.model import predict_in_batches
from fashionbench.stage import StageResult
from fashionbench.users import HeldOutFavourites

# recommend(category, query item ids, k) -> k recommended item ids
Recommender = Callable[[str, list[str], int], list[str]]


@dataclass(frozen=True)
class ClassificationReport(StageResult):
    """Test-split accuracy, per-class precision/recall/F1/support and the confusion matrix."""

    accuracy: float
    per_class: dict[str, dict[str, float]]  # category -> precision, recall, f1, support
    confusion: np.ndarray  # rows: true category, columns: predicted (CATEGORIES order)

    def metrics(self) -> dict[str, float]:
        """Flat metric names as logged: test_accuracy, test_f1_Skirts, ..."""
        flat = {"test_accuracy": self.accuracy}
        for category, scores in self.per_class.items():
            for name, value in scores.items():
                flat[f"test_{name}_{category}"] = value
        return flat

    def write_artifacts(self, directory: Path) -> None:
        path = directory / CONFUSION_MATRIX
        path.parent.mkdir(parents=True, exist_ok=True)
        self.plot_confusion_matrix(path)

    def plot_confusion_matrix(self, path: Path) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(5, 4.5))
        ConfusionMatrixDisplay(self.confusion, display_labels=list(CATEGORIES)).plot(ax=axes, colorbar=False)
        axes.set_title(f"Test split, accuracy {self.accuracy:.3f}")
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
        return path


def evaluate_classifier(model, test: Catalogue, batch_size: int) -> ClassificationReport:
    """Classify the test split with ``model`` (a Keras classifier) and score it."""
    return classification_report(test.labels, predict_in_batches(model, test.images, batch_size))


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
    return ClassificationReport(
        float(accuracy_score(true_labels, predicted)),
        per_class,
        confusion_matrix(true_labels, predicted, labels=labels),
    )


@dataclass(frozen=True)
class RecommendationReport:
    """precision@k and recall@k, mean over (user, category) pairs, per category and overall."""

    k: int
    precision: dict[str, float]  # category -> mean precision@k ("overall" included)
    recall: dict[str, float]
    pairs: dict[str, int]  # category -> (user, category) pairs evaluated

    def metrics(self, prefix: str = "") -> dict[str, float]:
        flat = {}
        for scope in self.precision:
            suffix = "" if scope == "overall" else f"_{scope}"
            flat[f"{prefix}precision_at_k{suffix}"] = self.precision[scope]
            flat[f"{prefix}recall_at_k{suffix}"] = self.recall[scope]
            flat[f"{prefix}eval_pairs{suffix}"] = float(self.pairs[scope])
        return flat


def evaluate_recommendations(
    recommend: Recommender, splits: Sequence[HeldOutFavourites], k: int
) -> RecommendationReport:
    """precision@k = hits in top-k / k and recall@k = hits / |held-out|, as RecBole's
    ``Precision`` and ``Recall`` define them, averaged over the (user, category) pairs."""
    if k < 1:
        raise ValueError(f"eval.k must be >= 1, got {k}")
    precision: dict[str, list[float]] = {}
    recall: dict[str, list[float]] = {}
    for split in splits:
        recommended = recommend(split.category, split.queries, k)
        hits = len(set(recommended[:k]) & set(split.held_out))
        precision.setdefault(split.category, []).append(hits / k)
        recall.setdefault(split.category, []).append(hits / len(split.held_out))
    every_pair = [v for values in precision.values() for v in values]
    every_recall = [v for values in recall.values() for v in values]
    categories = [c for c in CATEGORIES if c in precision]
    return RecommendationReport(
        k,
        {**{c: float(np.mean(precision[c])) for c in categories}, "overall": _mean(every_pair)},
        {**{c: float(np.mean(recall[c])) for c in categories}, "overall": _mean(every_recall)},
        {**{c: len(precision[c]) for c in categories}, "overall": len(every_pair)},
    )


def random_recommender(shop_item_ids: dict[str, list[str]], seed: int = 0) -> Recommender:
    """The floor: k shop items of the category drawn uniformly, the queries excluded."""
    rng = np.random.default_rng(seed)

    def recommend(category: str, queries: list[str], k: int) -> list[str]:
        excluded = set(queries)
        candidates = [item for item in shop_item_ids[category] if item not in excluded]
        return [candidates[i] for i in rng.permutation(len(candidates))[:k]]

    return recommend


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


@dataclass(frozen=True)
class RecommendationResults(StageResult):
    """The shop index's recommendations and the random recommender's, on the same held-out splits."""

    model: RecommendationReport
    random: RecommendationReport

    def metrics(self) -> dict[str, float]:
        return {**self.model.metrics(), **self.random.metrics(prefix="random_")}


def evaluate_shop(shop_index, splits: Sequence[HeldOutFavourites], k: int, seed: int) -> RecommendationResults:
    """precision@k and recall@k of ``shop_index``'s recommendations (``CategoryIndex.recommend``)
    and of a random recommender drawn with ``seed``, on the same ``splits``."""

    def recommend(category: str, queries: list[str], k: int) -> list[str]:
        return [item for item, _ in shop_index[category].recommend(queries, k)]

    return RecommendationResults(evaluate_recommendations(recommend, splits, k),
                                 evaluate_recommendations(random_recommender(shop_index.item_ids(), seed), splits, k))
