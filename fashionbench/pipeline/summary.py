"""What a finished run prints: its headline beside the reference ladder, and where to see the rest."""

from __future__ import annotations

from dataclasses import dataclass, field

from fashionbench.artifacts import (
    BALANCED_ACCURACY,
    EVAL_PAIRS,
    HEADLINE_METRIC,
    MAJORITY_RATE,
    NORMALISED_HEADLINE,
    TEST_ACCURACY,
    TRAIN_SECONDS,
    ladder_metric,
    metric_column,
)
from fashionbench.evaluation.references import LADDER, MODEL, ORACLE, RANDOM

# MLflow 3.17's UI opens an experiment on its GenAI view unless the browser last chose "Model
# training"; this query parameter picks the training runs' view (and the browser remembers it).
MODEL_TRAINING_VIEW = "?workflowType=machine_learning"


@dataclass
class RunSummary:
    """What a finished run reports: its MLflow id and headline metrics."""

    run_id: str
    tracking_uri: str
    experiment_id: str
    headline_k: int
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def objective(self) -> float:
        """What a sweeper maximises: overall precision@k."""
        return self.metrics[HEADLINE_METRIC]

    def text(self) -> str:
        """The run's headline, its reference ladder floor to ceiling, and where to see the rest."""
        m = self.metrics
        k = self.headline_k

        def precision(recommender: str) -> str:
            return ladder_metric(metric_column("precision", k), recommender)

        lines = [
            f"test accuracy      {m[TEST_ACCURACY]:.3f}   (balanced {m[BALANCED_ACCURACY]:.3f}; always the most "
            f"frequent category: {m[MAJORITY_RATE]:.3f})",
            f"train seconds      {m[TRAIN_SECONDS]:.1f}",
            f"precision@{k} by recommender, {int(m.get(EVAL_PAIRS, 0))} (user, category) pairs:",
        ]
        for recommender in LADDER:
            value = m.get(precision(recommender))
            if value is not None:
                note = "   <- the fine-tuned model" if recommender == MODEL else ""
                lines.append(f"  {recommender:<16} {value:.3f}{note}")
        if NORMALISED_HEADLINE in m:
            window = m[precision(ORACLE)] - m[precision(RANDOM)]
            lines.append(f"normalised         {m[NORMALISED_HEADLINE]:.3f}   (model - random) / (oracle - random), "
                         f"on a window of {window:.3f}")
        lines += [
            f"MLflow run         {self.run_id}",
            f"open it with       mlflow ui --backend-store-uri {self.tracking_uri}",
            f"                   then http://127.0.0.1:5000/#/experiments/{self.experiment_id}/runs/{self.run_id}"
            f"{MODEL_TRAINING_VIEW}",
        ]
        return "\n".join(lines)
