"""Work already done is not done again: a run reuses the trained weights of a FINISHED run that
trained what it would train (``tracking.reuse_training``), and a process keeps the last run's
classifier and results for the next job of a sweep (the basic launcher runs them in one process).

Which settings decide the trained weights is declared on the schemas (``fashionbench.options``);
``pipeline.fingerprints`` turns them into the tags a later run searches for.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from fashionbench.artifacts import (
    FIT_SECONDS,
    TAG_MODEL_URI,
    TAG_TRAINING_FINGERPRINT,
    TAG_TRAINING_REUSED_FROM,
    TRAIN_SECONDS,
)
from fashionbench.config import ExperimentConfig
from fashionbench.data import Catalogue
from fashionbench.evaluation.references import UNTRAINED
from fashionbench.model.classifier import Classifier, build_classifier
from fashionbench.tracking.records import RunRecord
from fashionbench.tracking.settings import TrackingSettings
from fashionbench.tracking.store import StoredRun, finished_runs_with
from fashionbench.training.fit import ReusedTraining
from fashionbench.training.shop_pass import shop_outputs
from fashionbench.training.trunk_cache import TrunkCache


def trained_run(settings: TrackingSettings, training_fingerprint: str) -> RunRecord | None:
    """The newest FINISHED run with a logged model that trained what this config would train."""
    return next((run for run in finished_runs_with(settings, TAG_TRAINING_FINGERPRINT, training_fingerprint)
                 if TAG_MODEL_URI in run.tags and TRAIN_SECONDS in run.metrics), None)


@dataclass
class KeptTraining:
    """The last trained (or reused) classifier of this process, by the run that trained its
    weights, with what the run computed from it and the shop: the sweep's next job that reuses
    that run's training takes them from here instead of loading the model, retracing its predict
    functions and predicting the same shop again. One at a time."""

    weights_of: str  # the run that trained these weights
    # The options of the embedding stage (the embedding layer, the prediction batch size): what the
    # kept results depend on besides the weights, whose run's training fingerprint covers the data.
    key: str
    classifier: Classifier
    results: dict = field(default_factory=dict)

    def remember(self, what, compute):
        """``compute()``, or its value from an earlier job with this classifier; ``what`` names
        the result and every setting besides the weights and the shop that it depends on."""
        if what not in self.results:
            self.results[what] = compute()
        return self.results[what]


class ProcessMemory:
    """What this process keeps from its last run for the next: that run's ``KeptTraining``, set
    only once the run has done its work (a run that failed half-way leaves nothing behind)."""

    def __init__(self) -> None:
        self._kept: KeptTraining | None = None

    def keep(self, kept: KeptTraining) -> None:
        self._kept = kept

    def forget(self) -> None:
        """Keep nothing: the next run starts as in a new process."""
        self._kept = None

    def find(self, weights_of: str, key: str) -> KeptTraining | None:
        kept = self._kept
        return kept if kept is not None and (kept.weights_of, kept.key) == (weights_of, key) else None


MEMORY = ProcessMemory()


def reuse_training(settings: TrackingSettings, source: RunRecord, x: ExperimentConfig, shop: Catalogue,
                   embedding_key: str, shop_cache: TrunkCache | None = None) -> tuple[KeptTraining, ReusedTraining]:
    """The classifier with ``source``'s trained weights (loaded as ``promote`` loads a run's model)
    and, when the untrained reference is scored, the untrained classifier's shop embeddings (on the
    trunk's activations from ``shop_cache``, when given), kept from an earlier job of this process
    when it had them; and the training stage's result: the run that trained the weights and its times."""
    trained_by = source.tags.get(TAG_TRAINING_REUSED_FROM, source.run_id)  # the run that did train
    kept = MEMORY.find(trained_by, embedding_key)
    if kept is None:
        initial = build_classifier(x.model, x.data.image_size)  # what the source started from
        trained = replace(initial, model=StoredRun(settings, source).keras_model())
        kept = KeptTraining(trained_by, embedding_key, trained)
        if UNTRAINED in x.eval.references:
            kept.remember("untrained", lambda: shop_outputs(initial, shop, x.eval.batch_size, shop_cache)[1])
    return kept, ReusedTraining(trained_by, source.metrics[TRAIN_SECONDS], source.metrics.get(FIT_SECONDS, 0.0))
