"""The Hydra callback that groups a multirun's jobs under one MLflow parent run."""

from __future__ import annotations

import logging
import os
from typing import Any

from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from fashionbench.artifacts import SWEEP_PARENT, TAG_GIT_COMMIT, TAG_OVERRIDES, TAG_SWEEP
from fashionbench.tracking.runs import SWEEP_RUN_ENV, git_commit, this_process
from fashionbench.tracking.store import ensure_experiment, tracking_settings

log = logging.getLogger(__name__)


class SweepCallback(Callback):
    """Hydra callback: before a multirun, create the store and experiment once (parallel jobs
    on a fresh SQLite store corrupt it) and a parent run that groups the sweep's runs."""

    def __init__(self) -> None:
        self._parent: tuple[str, str] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        settings = tracking_settings(config.tracking.uri, config.tracking.experiment_name,
                                     config.tracking.artifact_location)
        experiment_id = ensure_experiment(settings)
        client = MlflowClient(settings.uri)
        overrides = " ".join(config.hydra.overrides.task)
        run = client.create_run(experiment_id, run_name=f"sweep {overrides}".strip(),
                                tags={TAG_SWEEP: SWEEP_PARENT, TAG_OVERRIDES: overrides,
                                      TAG_GIT_COMMIT: git_commit(), **this_process()})
        os.environ[SWEEP_RUN_ENV] = run.info.run_id
        self._parent = (settings.uri, run.info.run_id)
        log.info("sweep parent run %s in experiment %r", run.info.run_id, settings.experiment_name)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._parent is None:
            return
        uri, run_id = self._parent
        client = MlflowClient(uri)
        children = client.search_runs(
            [client.get_run(run_id).info.experiment_id], filter_string=f"tags.sweep_id = '{run_id}'"
        )
        failed = sum(child.info.status == "FAILED" for child in children)
        client.log_metric(run_id, "runs_failed", failed)
        client.log_metric(run_id, "runs", len(children))
        client.set_terminated(run_id, "FINISHED")
        os.environ.pop(SWEEP_RUN_ENV, None)
