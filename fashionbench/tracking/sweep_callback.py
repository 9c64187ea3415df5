"""A multirun as one MLflow parent run: the Hydra callback that opens it and always closes it.

Hydra instantiates its callbacks for a single run too, so this module imports nothing of MLflow:
the store is opened (and MLflow imported) when a multirun starts, and a config error or ``--help``
answers without it.
"""

from __future__ import annotations

import atexit
import logging
import signal
import sys
import threading
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from fashionbench.artifacts import (
    SWEEP_JOBS_NOT_RUN,
    SWEEP_PARENT,
    TAG_GIT_COMMIT,
    TAG_OVERRIDES,
    TAG_SWEEP,
    TAG_SWEEP_JOBS,
)
from fashionbench.runtime import interrupts
from fashionbench.tracking.records import sweep_table
from fashionbench.tracking.settings import TrackingSettings, tracking_settings

log = logging.getLogger(__name__)

# A run name is at most 250 characters in MLflow's PostgreSQL and MySQL stores (SQLite does not
# check): a longer one fails to create the sweep's parent run. The TAG_OVERRIDES tag keeps them all.
RUN_NAME_LIMIT = 250
PARENT_RUN_KEY = "tracking.parent_run_id"  # the job's config key the callback fills


class SweepCallback(Callback):
    """Hydra callback: before a multirun, create the store and experiment once (parallel jobs
    on a fresh SQLite store corrupt it) and a parent run that groups the sweep's runs; after it,
    close the parent with its jobs' counts.

    Hydra calls ``on_multirun_end`` only when every job returned. When the sweep is cut short
    (Ctrl-C, SIGTERM, an error in the sweeper or launcher, a killed worker) the process exits
    instead, and an ``atexit`` hook closes the parent, KILLED or FAILED; a sweep process killed
    with SIGKILL leaves it to the next command's orphan reaping (``reap_orphaned_runs``)."""

    def __init__(self) -> None:
        self._open: tuple[TrackingSettings, str] | None = None
        self._interrupted = False
        self._previous_handlers: dict[int, Any] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient

        from fashionbench.tracking.runs import git_commit, reap_orphaned_runs, this_process
        from fashionbench.tracking.store import StoreNotFoundError, ensure_experiment

        settings = tracking_settings(config.tracking.uri, config.tracking.experiment_name,
                                     config.tracking.artifact_location)
        try:
            experiment_id = ensure_experiment(settings)
        except StoreNotFoundError as error:  # a server that does not answer: no job could log anything
            # Hydra turns a callback's exception into a warning and starts every job anyway; SystemExit
            # stops the sweep with one line.
            sys.exit(f"fashionbench.run: {error}")
        reap_orphaned_runs(settings)  # an earlier sweep killed outright is closed, with its counts
        overrides = [o for o in config.hydra.overrides.task if override_key(o) != PARENT_RUN_KEY]
        planned = planned_jobs(config, overrides)
        run = MlflowClient(settings.uri).create_run(
            experiment_id, run_name=_fitting(f"sweep {' '.join(overrides)}".strip(), RUN_NAME_LIMIT),
            tags={TAG_SWEEP: SWEEP_PARENT, TAG_OVERRIDES: " ".join(overrides), TAG_GIT_COMMIT: git_commit(),
                  **({TAG_SWEEP_JOBS: str(planned)} if planned is not None else {}), **this_process()})
        with read_write(config.hydra), open_dict(config.hydra):
            # The sweeper reads the sweep's overrides after this callback: each job gets this one.
            config.hydra.overrides.task = [*overrides, f"{PARENT_RUN_KEY}='{run.info.run_id}'"]
        self._open = (settings, run.info.run_id)
        atexit.register(self._close_cut_short)
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous_handlers[signum] = signal.signal(signum, self._note_signal)
        log.info("sweep parent run %s in experiment %r", run.info.run_id, settings.experiment_name)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._close(completed=True)
        self._stop_if_interrupted()  # every job had ended when the swallowed signal came: it still ends the process

    def _note_signal(self, signum: int, frame: Any) -> None:
        """Remember that the sweep was interrupted, then stop as the signal would have."""
        previous = self._previous_handlers.get(signum)
        if previous == signal.SIG_IGN:  # started ignoring it (nohup): go on ignoring it
            return
        self._interrupted = True
        interrupts.note(signum)
        if callable(previous):
            previous(signum, frame)  # SIGINT's default raises KeyboardInterrupt
            return
        raise interrupts.exception_for(signum)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._stop_if_interrupted()  # no further job

    def _stop_if_interrupted(self) -> None:
        """Raise the signal the sweep noted, if any: its exception was swallowed (runtime.interrupts)."""
        if self._interrupted:
            raise interrupts.exception_for(interrupts.pending() or signal.SIGINT)

    def _close_cut_short(self) -> None:
        try:
            self._close(completed=False)
        except Exception as error:  # noqa: BLE001 - at exit: the store may be gone; the next command reaps it
            log.error("could not close the sweep's parent run: %s: %s", type(error).__name__, error)

    def _close(self, completed: bool) -> None:
        if self._open is None:
            return
        from mlflow.tracking import MlflowClient

        from fashionbench.tracking.runs import end_sweep, reap_orphaned_runs
        from fashionbench.tracking.store import sweep_runs

        settings, run_id = self._open
        self._open = None
        atexit.unregister(self._close_cut_short)
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        reap_orphaned_runs(settings)  # jobs whose worker died are KILLED before they are counted
        status = end_sweep(settings, run_id, completed=completed, interrupted=self._interrupted)
        children, reused = sweep_runs(settings, run_id)
        print(sweep_table(children, reused, run_id, status))
        not_run = int(MlflowClient(settings.uri).get_run(run_id).data.metrics.get(SWEEP_JOBS_NOT_RUN, 0))
        if not_run:
            print(f"  {not_run} planned job(s) not run: the sweep was cut short before it launched them "
                  "(the same command runs them, and skips the FINISHED ones)")


def planned_jobs(config: DictConfig, overrides: list[str]) -> int | None:
    """How many jobs Hydra's basic sweeper will launch for these overrides (and ``hydra.sweeper.params``):
    the product of each swept key's number of values. None for another sweeper (Optuna decides as it
    goes) or a glob sweep (its values are the config group's files)."""
    sweeper = config.hydra.sweeper
    if not str(sweeper.get("_target_", "")).endswith(".BasicSweeper"):
        return None
    params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    count = 1
    for override in OverridesParser.create().parse_overrides([*params, *overrides]):
        if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
            return None
        if override.is_sweep_override():
            count *= sum(1 for _ in override.sweep_string_iterator())
    return count


def _fitting(text: str, limit: int) -> str:
    """``text``, cut to ``limit`` characters with a trailing "..." when it is longer."""
    return text if len(text) <= limit else text[:limit - 3] + "..."


def override_key(override: str) -> str:
    """The key an override sets: ``freeze`` of ``freeze=2,4``, ``data.categories.x`` of ``+data.categories.x=1``."""
    return override.split("=", 1)[0].lstrip("+~")
