"""Evaluation's options (``eval.*``, ``configs/eval/default.yaml``): classification on the test split
(``evaluation.classification``), and the recommendations of the model and the reference ladder on
every (user, category) pair (``evaluation.pairs``)."""

from __future__ import annotations

from dataclasses import dataclass

from fashionbench.evaluation.references import REFERENCES
from fashionbench.model.schema import PREDICTION_BATCH_SIZE
from fashionbench.options import ConfigError, Stage, option


class EvalConfigError(ConfigError):
    """An invalid ``eval.*`` option."""


@dataclass
class EvalConfig:
    """Evaluation: classification on the test split (fashionbench.evaluation.classification), and recommendations
    of the model and the reference ladder on every (user, category) pair (fashionbench.evaluation.pairs)."""

    k: int = option(5, decides=Stage.EVALUATION)  # the headline: precision@k (precision_at_k)
    ks: list[int] = option(factory=lambda: [5, 10], decides=Stage.EVALUATION)  # every metric at each of these too
    # of each user's favourites per category, hidden and to be found
    holdout_fraction: float = option(0.5, decides=Stage.USERS)
    batch_size: int = option(PREDICTION_BATCH_SIZE, decides=Stage.EMBEDDING)  # for prediction and embedding
    # Reference recommenders scored on the same pairs (fashionbench.evaluation.references), floor to ceiling.
    references: list[str] = option(factory=lambda: list(REFERENCES), decides=Stage.EVALUATION)
    # the pixels reference: thumbnails of this many pixels a side
    pixels_size: int = option(8, decides=Stage.EVALUATION)
    # Same-item retrieval's cutoffs (evaluation.same_item; a catalogue with several photos of a
    # garment): the In-shop benchmark's published Recall@1/10/20.
    same_item_ks: list[int] = option(factory=lambda: [1, 10, 20], decides=Stage.EVALUATION)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise EvalConfigError(f"eval.k must be >= 1, got {self.k}")
        if not self.ks or min(self.ks) < 1:
            raise EvalConfigError(f"eval.ks must list cutoffs >= 1, got {list(self.ks)}")
        unknown = sorted(set(self.references) - set(REFERENCES))
        if unknown:
            raise EvalConfigError(f"eval.references: unknown {unknown}; expected some of {list(REFERENCES)}")
        if not self.same_item_ks or min(self.same_item_ks) < 1:
            raise EvalConfigError(f"eval.same_item_ks must list cutoffs >= 1, got {list(self.same_item_ks)}")
        if self.pixels_size < 1:
            raise EvalConfigError(f"eval.pixels_size must be >= 1, got {self.pixels_size}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise EvalConfigError(f"eval.holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        if self.batch_size < 1:
            raise EvalConfigError(f"eval.batch_size must be >= 1, got {self.batch_size}")
