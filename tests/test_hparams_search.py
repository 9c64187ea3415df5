"""``-m hparams_search=precision_optuna``: a real Optuna study over tiny runs, one trial forced to fail."""

import math
import os
import re
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from fashionbench.artifacts import HEADLINE_METRIC, TAG_SWEEP, TAG_SWEEP_ID
from tests.conftest import TINY_RUN

pytestmark = pytest.mark.slow

# Everything but the embedding layer is fixed on the command line, so the study samples only
# model.embedding_layer: fc7 is no layer of the model (that run fails inside MLflow), pool works.
# With the preset's seed, TPE's first three trials ask for pool, fc7 and pool: the third shows the
# study going on after a failed trial, and, as it repeats the first trial's config, resume answers
# it with the first run's value instead of running it again.
STUDY = ["-m", "hparams_search=precision_optuna", "hydra.sweeper.n_trials=3", "model.embedding_layer=choice(fc7,pool)",
         "freeze=2", "train.learning_rate=0.001", "index.metric=angular", "index.n_trees=5",
         *TINY_RUN, "tracking.log_model=false"]


def test_a_study_records_a_failed_trial_as_failed_and_reports_the_best(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run([sys.executable, "-m", "fashionbench.run", *STUDY, f"hydra.sweep.dir={sweep_dir}"],
                            cwd=tmp_path, env={**os.environ, "HYDRA_FULL_ERROR": "0"}, capture_output=True,
                            text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output

    client = MlflowClient("sqlite:///" + str(tmp_path / "mlflow.db"))
    runs = client.search_runs([client.get_experiment_by_name("fashionbench").experiment_id],
                              order_by=["attributes.start_time ASC"])
    (parent,) = [r for r in runs if r.data.tags.get(TAG_SWEEP) == "parent"]
    trials = [r for r in runs if r.data.tags.get(TAG_SWEEP_ID) == parent.info.run_id]
    assert [(t.data.params["model.embedding_layer"], t.info.status) for t in trials] == [
        ("pool", "FINISHED"), ("fc7", "FAILED")]
    assert parent.info.status == "FINISHED"
    assert re.search(r"skipped .*model.embedding_layer=pool.*: run \w+ FINISHED with this config", output), output

    # The sweeper told Optuna the failed trial as FAIL, with the job's own error, and nothing else.
    failed = re.findall(r"Failed experiment: job failed .*: (\w+): model.embedding_layer 'fc7'", output)
    assert failed == ["ModelConfigError"], output
    assert "float-castable" not in output and "max_failure_rate" not in output
    # The best trial is the best finished run, maximised.
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    finished = [t.data.metrics[HEADLINE_METRIC] for t in trials if t.info.status == "FINISHED"]
    assert best.best_params["model.embedding_layer"] == "pool"
    assert math.isclose(best.best_value, max(finished))
    assert f"Best value: {best.best_value}" in output
