"""The Hydra callback that groups a multirun's jobs under one MLflow parent run."""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any

from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from fashionbench.artifacts import (
    HEADLINE_METRIC,
    RANDOM_PREFIX,
    SWEEP_PARENT,
    TAG_GIT_COMMIT,
    TAG_OVERRIDES,
    TAG_SWEEP,
    TAG_SWEEP_ID,
    TEST_ACCURACY,
)
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
        experiment_id = client.get_run(run_id).info.experiment_id
        children, token = [], None
        while True:  # every child, however many: search_runs pages at 1,000
            page = client.search_runs([experiment_id], filter_string=f"tags.{TAG_SWEEP_ID} = '{run_id}'",
                                      order_by=["attributes.start_time ASC"], max_results=1000, page_token=token)
            children += list(page)
            token = page.token
            if not token:
                break
        statuses = Counter(child.info.status for child in children)
        client.log_metric(run_id, "runs", len(children))
        for status in ("FINISHED", "FAILED", "KILLED"):
            client.log_metric(run_id, f"runs_{status.lower()}", statuses[status])
        client.log_metric(run_id, "runs_unfinished", len(children) - sum(statuses[s] for s in ("FINISHED", "FAILED",
                                                                                               "KILLED")))
        client.set_terminated(run_id, "FINISHED")
        os.environ.pop(SWEEP_RUN_ENV, None)
        print(sweep_table(children, run_id))


def sweep_table(children: list, parent_id: str) -> str:
    """The sweep's jobs, one line each: swept values, status, headline metrics."""
    lines = [f"sweep {parent_id}: {len(children)} run(s)",
             f"  {'job':<36} {'status':<9} {'test_accuracy':>13} {HEADLINE_METRIC:>15} {'random':>7}"]
    for child in children:
        m = child.data.metrics
        cells = [f"{m[name]:.3f}" if name in m else "-" for name in (TEST_ACCURACY, HEADLINE_METRIC,
                                                                      RANDOM_PREFIX + HEADLINE_METRIC)]
        lines.append(f"  {(child.info.run_name or child.info.run_id)[:36]:<36} {child.info.status:<9} "
                     f"{cells[0]:>13} {cells[1]:>15} {cells[2]:>7}")
    return "\n".join(lines)
