"""The Hydra callback that groups a multirun's jobs under one MLflow parent run."""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from typing import Any

from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from fashionbench.artifacts import (
    HEADLINE_METRIC,
    SWEEP_PARENT,
    TAG_GIT_COMMIT,
    TAG_OVERRIDES,
    TAG_SWEEP,
    TEST_ACCURACY,
    random_counterpart,
)
from fashionbench.tracking.records import RunRecord
from fashionbench.tracking.runs import SWEEP_RUN_ENV, git_commit, this_process
from fashionbench.tracking.store import (
    StoreNotFoundError,
    TrackingSettings,
    ensure_experiment,
    experiment_runs,
    tracking_settings,
)

log = logging.getLogger(__name__)

# A run name is at most 250 characters in MLflow's PostgreSQL and MySQL stores (SQLite does not
# check): a longer one fails to create the sweep's parent run. The TAG_OVERRIDES tag keeps them all.
RUN_NAME_LIMIT = 250


class SweepCallback(Callback):
    """Hydra callback: before a multirun, create the store and experiment once (parallel jobs
    on a fresh SQLite store corrupt it) and a parent run that groups the sweep's runs."""

    def __init__(self) -> None:
        self._parent: tuple[TrackingSettings, str] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        settings = tracking_settings(config.tracking.uri, config.tracking.experiment_name,
                                     config.tracking.artifact_location)
        try:
            experiment_id = ensure_experiment(settings)
        except StoreNotFoundError as error:  # a server that does not answer: no job could log anything
            # Hydra turns a callback's exception into a warning and starts every job anyway; SystemExit
            # stops the sweep with one line.
            sys.exit(f"fashionbench.run: {error}")
        client = MlflowClient(settings.uri)
        overrides = " ".join(config.hydra.overrides.task)
        run = client.create_run(experiment_id, run_name=_fitting(f"sweep {overrides}".strip(), RUN_NAME_LIMIT),
                                tags={TAG_SWEEP: SWEEP_PARENT, TAG_OVERRIDES: overrides,
                                      TAG_GIT_COMMIT: git_commit(), **this_process()})
        os.environ[SWEEP_RUN_ENV] = run.info.run_id
        self._parent = (settings, run.info.run_id)
        log.info("sweep parent run %s in experiment %r", run.info.run_id, settings.experiment_name)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._parent is None:
            return
        settings, run_id = self._parent
        children = experiment_runs(settings, run_id)
        statuses = Counter(child.status for child in children)
        client = MlflowClient(settings.uri)
        client.log_metric(run_id, "runs", len(children))
        for status in ("FINISHED", "FAILED", "KILLED"):
            client.log_metric(run_id, f"runs_{status.lower()}", statuses[status])
        client.log_metric(run_id, "runs_unfinished", len(children) - sum(statuses[s] for s in ("FINISHED", "FAILED",
                                                                                               "KILLED")))
        client.set_terminated(run_id, "FINISHED")
        os.environ.pop(SWEEP_RUN_ENV, None)
        print(sweep_table(children, run_id))


def _fitting(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters with a trailing "..." when it is longer."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def sweep_table(children: list[RunRecord], parent_id: str) -> str:
    """The sweep's jobs, one line each: swept values, status, headline metrics."""
    lines = [f"sweep {parent_id}: {len(children)} run(s)",
             f"  {'job':<36} {'status':<9} {'test_accuracy':>13} {'precision_at_k':>15} {'random':>7}"]
    for child in children:
        m = child.metrics
        cells = [f"{m[name]:.3f}" if name in m else "-" for name in (TEST_ACCURACY, HEADLINE_METRIC,
                                                                      random_counterpart(HEADLINE_METRIC))]
        lines.append(f"  {(child.run_name or child.run_id)[:36]:<36} {child.status:<9} "
                     f"{cells[0]:>13} {cells[1]:>15} {cells[2]:>7}")
    return "\n".join(lines)
