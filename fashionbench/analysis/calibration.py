"""Training noise, measured once and kept: a calibration run of the experiment.

``python -m fashionbench.run -m model.seed=0,1,2,3,4,5,6,7`` trains one configuration eight times on
the same users and splits; ``python -m fashionbench.compare --calibrate --sweep latest`` measures how
far its trainings spread (``variance.TrainingNoise``) for a per-pair metric and stores it as a run
of the experiment, tagged ``calibration``. A later study that trains each configuration only once
or twice on those users and splits is then tested against that noise
(``variance.calibrated_test``) instead of never being able to call a best; ``compare --plan`` reads
it to say how many trainings and users a study needs.

A calibration serves only a comparison of the same metric, recommender, and users and splits (the
``eval_fingerprint``): one measured elsewhere is refused, naming what differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fashionbench.analysis.comparison import RunPairs, pair_values
from fashionbench.analysis.design import configuration_label, configuration_params
from fashionbench.analysis.variance import TrainingNoise, user_shares
from fashionbench.artifacts import (
    CALIBRATION_SECTION,
    TAG_CALIBRATED_CONFIGURATION,
    TAG_CALIBRATED_RUNS,
    TAG_CALIBRATION,
    TAG_EVAL_FINGERPRINT,
)
from fashionbench.evaluation.references import MODEL
from fashionbench.stage import StageResult
from fashionbench.tracking.records import RunRecord


class CalibrationError(ValueError):
    """Runs that cannot calibrate training noise; the message says what they lack."""


def measure_training_noise(runs: Sequence[RunPairs], metric: str, recommender: str = MODEL) -> TrainingNoise:
    """The training noise of the one configuration ``runs`` trained several times on one stratum.
    Raises CalibrationError naming the configurations or strata when there are several, and the
    trainings needed when there are too few."""
    records = [run.run for run in runs]
    designs = configuration_params(records)
    if designs:
        labels = sorted({configuration_label(record, designs) for record in records})
        raise CalibrationError(f"a calibration measures one configuration's trainings; these runs are "
                               f"{len(labels)} configurations ({', '.join(labels)}): pass --runs of one of them")
    strata = sorted({run.stratum for run in runs})
    if len(strata) > 1:
        raise CalibrationError(f"a calibration's trainings must share users and splits; these runs have "
                               f"{len(strata)} (eval_fingerprint {', '.join(strata)}): vary model.seed only, "
                               f"e.g. -m model.seed=0,1,2,3,4,5,6,7")
    shares = []
    for run in runs:
        values = pair_values([run], metric, recommender)
        shares.append(user_shares(values))
    per_user = np.array([s.reindex(shares[0].index).to_numpy() for s in shares])
    try:
        return TrainingNoise.measure(per_user, metric, recommender, strata[0], _configuration_text(records[0]),
                                     [record.run_id for record in records])
    except ValueError as error:
        raise CalibrationError(str(error)) from None


def _configuration_text(run: RunRecord) -> str:
    """A calibrated configuration in words: its freeze, embedding layer and index, and its run name."""
    keys = ("freeze", "model.embedding_layer", "index.metric", "train.epochs", "data.name")
    return " ".join(f"{key}={run.params[key]}" for key in keys if key in run.params) or run.run_name


@dataclass(frozen=True)
class CalibrationResult(StageResult):
    """A calibration as a run logs it (tags and metrics: ``noise_from_run`` reads it back)."""

    noise: TrainingNoise
    stage = "calibrate"

    def summary(self) -> str:
        n = self.noise
        return (f"{n.metric} of {n.recommender}: {n.trainings} trainings on {n.users} users, mean {n.mean:.4f}, "
                f"trainings' sd {n.training_sd:.4f}")

    def metrics(self) -> dict[str, float]:
        n = self.noise
        return {CALIBRATION_SECTION + "trainings": float(n.trainings), CALIBRATION_SECTION + "users": float(n.users),
                CALIBRATION_SECTION + "mean": n.mean, CALIBRATION_SECTION + "mean_variance": n.mean_variance,
                CALIBRATION_SECTION + "wobble": n.wobble, CALIBRATION_SECTION + "training_sd": n.training_sd}

    def tags(self) -> dict[str, str]:
        n = self.noise
        return {TAG_CALIBRATION: f"{n.metric} of {n.recommender}", TAG_EVAL_FINGERPRINT: n.stratum,
                TAG_CALIBRATED_CONFIGURATION: n.configuration, TAG_CALIBRATED_RUNS: ",".join(n.runs)}


def noise_from_run(run: RunRecord) -> TrainingNoise:
    """The calibration a run stores (``CalibrationResult``)."""
    metric, _, recommender = run.tags[TAG_CALIBRATION].partition(" of ")
    m = run.metrics
    return TrainingNoise(metric, recommender, run.tags[TAG_EVAL_FINGERPRINT], run.tags[TAG_CALIBRATED_CONFIGURATION],
                         int(m[CALIBRATION_SECTION + "trainings"]), int(m[CALIBRATION_SECTION + "users"]),
                         m[CALIBRATION_SECTION + "mean"], m[CALIBRATION_SECTION + "mean_variance"],
                         m[CALIBRATION_SECTION + "wobble"], tuple(run.tags.get(TAG_CALIBRATED_RUNS, "").split(",")),
                         run.run_id)


def calibrations(runs: Sequence[RunRecord]) -> list[TrainingNoise]:
    """The FINISHED calibration runs among ``runs``, newest first."""
    stored = [run for run in runs if TAG_CALIBRATION in run.tags and run.status == "FINISHED"]
    return [noise_from_run(run) for run in sorted(stored, key=lambda run: -run.start_time)]
