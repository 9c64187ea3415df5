"""One run's lifecycle and logging: start it (under a sweep's parent), record what each stage
measured, and end it FINISHED or FAILED with the error."""

from __future__ import annotations

import errno
import gc
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.sources import CodeDatasetSource, LocalArtifactDatasetSource
from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from fashionbench.artifacts import (
    CHECKSUMS,
    CONFIG,
    ERROR,
    SWEEP_JOBS_NOT_RUN,
    SWEEP_PARENT,
    SWEEP_RUNS,
    SWEEP_RUNS_FAILED,
    SWEEP_RUNS_FINISHED,
    SWEEP_RUNS_KILLED,
    SWEEP_RUNS_SKIPPED,
    SWEEP_RUNS_UNFINISHED,
    TAG_DIAGNOSTIC_FAILED_PREFIX,
    TAG_ERROR,
    TAG_GIT_COMMIT,
    TAG_HOST,
    TAG_PID,
    TAG_PID_START,
    TAG_SWEEP,
    TAG_SWEEP_ID,
    TAG_SWEEP_JOBS,
)
from fashionbench.data.checksums import write_checksums
from fashionbench.options import flatten
from fashionbench.runtime import interrupts
from fashionbench.runtime.interrupts import Terminated
from fashionbench.runtime.processes import process_alive, process_start
from fashionbench.stage import Dataset, StageResult
from fashionbench.tracking.races import retry_lost_race
from fashionbench.tracking.settings import TrackingSettings
from fashionbench.tracking.store import ensure_experiment, sweep_runs, writable_store

log = logging.getLogger(__name__)
stages = logging.getLogger("fashionbench.stages")  # one line per stage: what the console shows by default

_ALIAS = re.compile(r"^\$\{[A-Za-z_][\w.]*\}$")  # a value that is another key's value: ${freeze}


def flatten_config(config: Mapping[str, Any]) -> dict[str, str]:
    """Nested config -> {"model.freeze": "4", ...}, the form MLflow params take."""
    return {name: str(value) for name, value in flatten(config).items()}


def log_dataset(dataset: Dataset) -> None:
    """Log ``dataset`` as an input of the active run. Parallel runs logging the same dataset into one
    experiment race in MLflow's get-or-create of the dataset row: the loser tries again."""
    # A folder is a local source; a generator (no folder) is code. Passed as objects: a plain path
    # string is ambiguous to MLflow's source registry, which warns about it.
    source = (LocalArtifactDatasetSource(dataset.source) if Path(dataset.source).is_absolute()
              else CodeDatasetSource({"generator": dataset.source}))
    logged = mlflow.data.from_pandas(dataset.table, source=source, name=dataset.name, digest=dataset.digest)
    retry_lost_race(lambda: mlflow.log_input(logged, context=dataset.context), f"dataset {dataset.name}")


def git_commit() -> str:
    """The checkout's HEAD commit, or "unknown" outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class TrackedRun:
    """Logging into one active MLflow run.

    Two things run on a thread of the run's own while the next stages run: drawing and logging a
    stage's plots (they are for a person reading the run) and splitting the trained classifier into
    what the run stores (``prepare_classifier``); together 0.8 s of a cached default run's critical
    path. ``finish`` waits for them before the run ends."""

    def __init__(self, run_id: str, experiment_id: str) -> None:
        self.run_id = run_id
        self.experiment_id = experiment_id
        # Explicit run and store: MLflow's active run is per thread, and the plots are logged from another.
        self._client = MlflowClient(mlflow.get_tracking_uri())
        self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fashionbench-run")
        self._split: tuple[Any, Future] | None = None  # a classifier and its split_classifier, being made
        self._backbones = None  # the experiment's backbone store (run_models.BackboneStore), once looked up
        self._since = time.perf_counter()  # the previous stage ended here

    def record(self, result: StageResult, seconds: float | None = None) -> None:
        """Log what a stage measured: its metrics, stepped metrics and tags (one request), its artifact
        files, and its plots (drawn on the run's thread); and print the stage's one-line summary with
        its seconds: the time since the previous record, or ``seconds`` for a stage that ran before the
        run started."""
        seconds = time.perf_counter() - self._since if seconds is None else seconds
        if result.stage:
            stages.info("%-10s %6.1f s   %s", result.stage, seconds, result.summary())
        self._log_batch(result.metrics(), result.stepped_metrics(), result.tags())
        for dataset in result.datasets():
            self.diagnostic(f"dataset_{dataset.context}", lambda dataset=dataset: log_dataset(dataset))
        with tempfile.TemporaryDirectory() as scratch:
            result.write_artifacts(Path(scratch))
            if any(Path(scratch).iterdir()):
                _log_with_checksums(Path(scratch), type(result).__name__)
        if type(result).write_diagnostics is not StageResult.write_diagnostics:
            self._background.submit(self.diagnostic, f"plots_{result.stage or type(result).__name__}",
                                 lambda: self._log_diagnostics(result))
        self._since = time.perf_counter()  # logging is the harness's time, not the next stage's

    def wait_idle(self) -> None:
        """Wait until nothing runs or waits on the run's thread: before a timing the run logs (the
        index's queries per second), which must not share the processor with a plot being drawn."""
        self._background.submit(lambda: None).result()  # one worker, first in first out

    def finish(self, *, cancel: bool = False) -> None:
        """Wait for the work still running on the run's thread: the run is not complete before.
        ``cancel`` (the run failed or was interrupted): drop what has not started, and wait for what
        has (at most a plot), so that nothing is written to the run once it has ended: a second
        Ctrl-C during that wait stops the waiting, not the run's ending."""
        try:
            self._background.shutdown(wait=True, cancel_futures=cancel)
        except KeyboardInterrupt:
            if not cancel:
                raise

    def diagnostic(self, what: str, log_it: Callable[[], object]) -> bool:
        """``log_it()``, for what only helps a person read the run (a dataset input, a plot): when it
        fails, a warning and the run's ``diagnostic_failed/<what>`` tag say why, and the run goes on.
        Returns whether it was logged."""
        try:
            log_it()
            return True
        except Exception as error:  # noqa: BLE001 - whatever MLflow, matplotlib or the disk raised
            reason = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0][:300]}"
            log.warning("%s was not logged (the run goes on): %s", what, reason)
            try:
                self._client.set_tag(self.run_id, TAG_DIAGNOSTIC_FAILED_PREFIX + what, reason)
            except Exception:  # noqa: BLE001 - a store that refuses this too will fail the run's next call
                log.debug("could not record that %s failed", what, exc_info=True)
            return False

    def _log_diagnostics(self, result: StageResult) -> None:
        with tempfile.TemporaryDirectory() as scratch:
            result.write_diagnostics(Path(scratch))
            if any(Path(scratch).iterdir()):
                self._client.log_artifacts(self.run_id, scratch)

    def _log_batch(self, metrics: Mapping[str, float], series: Mapping[str, list[float]],
                   tags: Mapping[str, Any]) -> None:
        """A stage's metrics, every value of its curves (one per epoch: ``step=i``) and its tags in one
        request (MLflow splits it where a store's batch limits need): a call per value cost 120 round
        trips (0.66 s on a local store) for a run's four 30-epoch curves."""
        stamp = int(time.time() * 1000)
        logged = [Metric(name, float(value), stamp, 0) for name, value in metrics.items()]
        logged += [Metric(name, float(value), stamp, step) for name, values in series.items()
                   for step, value in enumerate(values)]
        if logged or tags:
            self._client.log_batch(self.run_id, metrics=logged, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_config(self, config: DictConfig) -> None:
        """The resolved config as ``config.yaml``, and as params (flattened: ``data.scale``) without
        the keys that only repeat another key (``model.freeze: ${freeze}``): a param per knob, so the
        compare view does not plot ``freeze`` twice. A key set on its own (``model.seed=3``) is logged."""
        resolved = flatten_config(OmegaConf.to_container(config, resolve=True))
        raw = flatten_config(OmegaConf.to_container(config, resolve=False))
        self.log_params({name: value for name, value in resolved.items() if not _ALIAS.match(raw.get(name, ""))})
        with tempfile.TemporaryDirectory() as scratch:
            (Path(scratch) / CONFIG).write_text(OmegaConf.to_yaml(config, resolve=True))
            _log_with_checksums(Path(scratch), "Config")

    def log_params(self, params: Mapping[str, Any]) -> None:
        mlflow.log_params(dict(params))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if tags:
            mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        mlflow.log_artifact(str(path), artifact_path)

    def prepare_classifier(self, classifier: Any) -> None:
        """Start splitting the trained ``classifier`` into what ``log_classifier`` stores (a copy
        and a hash of every weight, its architecture as JSON: 0.3-0.5 s for ResNet50) on the run's
        own thread, while the next stages run; its weights must not change after this."""
        from fashionbench.model.parts import split_classifier  # Keras: imported where a model is logged

        self._split = (classifier, self._background.submit(split_classifier, classifier))

    def backbone_stored(self, fingerprint: str) -> bool:
        """Whether the experiment's backbone store holds backbone ``fingerprint``: a classifier built
        without its backbone (``model.built_tail``) can be logged only then."""
        return self._backbone_store().has(fingerprint)

    def _backbone_store(self):
        """The experiment's backbone store, looked up once per run (three requests)."""
        from fashionbench.tracking.run_models import BackboneStore  # Keras: imported where a model is logged

        if self._backbones is None:
            self._backbones = BackboneStore.of_experiment(self._client, self.experiment_id)
        return self._backbones

    def log_classifier(self, classifier: Any) -> str:
        """Log the run's classifier lean (``fashionbench.tracking.run_models``): its trainable
        layers under ``model/``, its frozen backbone once per experiment; return the model's URI,
        also set as the run's ``model_uri`` tag. ``run_models.load_run_model`` loads it back.
        Uses the split ``prepare_classifier`` started for this classifier (its error, if it failed)."""
        from fashionbench.tracking.run_models import log_run_model  # Keras: imported where a model is logged

        prepared, split = self._split or (None, None)
        return log_run_model(self._client, self.run_id, self.experiment_id, classifier,
                             split.result() if prepared is classifier else None, self._backbone_store())


def _log_with_checksums(directory: Path, name: str) -> None:
    """Log the files in ``directory`` into the active run with their sizes and hashes, as
    ``checksums/<name>.json`` in the same upload: promote checks what it takes against them."""
    (directory / CHECKSUMS).mkdir()
    write_checksums(directory, directory / CHECKSUMS / f"{name}.json", exclude=(CHECKSUMS,))
    mlflow.log_artifacts(str(directory))


def this_process() -> dict[str, str]:
    """Tags that let a later process tell whether this run's process is still alive."""
    return {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid()), TAG_PID_START: process_start(os.getpid())}


def reap_orphaned_runs(settings: TrackingSettings) -> list[str]:
    """Mark KILLED the RUNNING runs of the experiment that were started on this host by a process
    that no longer exists (killed with SIGKILL, out of memory, a crash, a reboot), with the reason
    in the ``error`` tag; return their ids. Runs of other hosts cannot be checked and are left alone."""
    client = writable_store(settings)  # the first touch of a fresh SQLite store: created under its lock
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        return []
    host = socket.gethostname()
    running = client.search_runs([experiment.experiment_id],
                                 f"attributes.status = 'RUNNING' and tags.{TAG_HOST} = '{host}'", max_results=1000)
    # Sweep parents last, so that the counts they are closed with include their reaped jobs.
    running = sorted(running, key=lambda run: run.data.tags.get(TAG_SWEEP) == SWEEP_PARENT)
    reaped = []
    for run in running:
        tags = run.data.tags
        if not tags.get(TAG_PID, "").isdigit() or process_alive(int(tags[TAG_PID]), tags.get(TAG_PID_START, "")):
            continue
        client.set_tag(run.info.run_id, TAG_ERROR, f"orphaned: its process {tags[TAG_PID]} on {host} is gone "
                                                    "(killed with SIGKILL, out of memory, a crash or a reboot)")
        if tags.get(TAG_SWEEP) == SWEEP_PARENT:
            end_sweep(settings, run.info.run_id, completed=False, interrupted=True)
        else:
            client.set_terminated(run.info.run_id, "KILLED")
        reaped.append(run.info.run_id)
    if reaped:
        log.warning("marked %d orphaned run(s) KILLED (their process on this host is gone): %s",
                    len(reaped), ", ".join(reaped))
    return reaped


def end_sweep(settings: TrackingSettings, parent_id: str, *, completed: bool, interrupted: bool = False) -> str:
    """Close a sweep's parent run with how its jobs ended (``SWEEP_RUNS``...: finished, failed,
    killed, unfinished, and skipped by a resume) and return the status it was given.

    ``completed``: every job was launched and returned; the sweep is FINISHED unless none of
    its jobs finished (every trial failed: FAILED). Otherwise the sweep was cut short: KILLED
    when it was ``interrupted`` (a signal) or one of its jobs was killed, FAILED otherwise (an
    error in the sweeper or launcher)."""
    children, reused = sweep_runs(settings, parent_id)
    counts = Counter(child.status for child in children)
    if completed:
        status = "FAILED" if children and not counts["FINISHED"] and not reused else "FINISHED"
    else:
        status = "KILLED" if interrupted or counts["KILLED"] else "FAILED"
    ended = counts["FINISHED"] + counts["FAILED"] + counts["KILLED"]
    metrics = {SWEEP_RUNS: len(children), SWEEP_RUNS_FINISHED: counts["FINISHED"], SWEEP_RUNS_FAILED: counts["FAILED"],
               SWEEP_RUNS_KILLED: counts["KILLED"], SWEEP_RUNS_UNFINISHED: len(children) - ended,
               SWEEP_RUNS_SKIPPED: len(reused)}
    client = MlflowClient(settings.uri)
    planned = client.get_run(parent_id).data.tags.get(TAG_SWEEP_JOBS, "")
    if planned.isdigit():
        metrics[SWEEP_JOBS_NOT_RUN] = max(0, int(planned) - len(children) - len(reused))
    now = int(time.time() * 1000)
    client.log_batch(parent_id, metrics=[Metric(name, float(value), now, 0) for name, value in metrics.items()])
    client.set_terminated(parent_id, status)
    return status


@contextmanager
def tracked_run(settings: TrackingSettings, run_name: str | None = None, tags: Mapping[str, Any] | None = None,
                parent_run_id: str | None = None) -> Iterator[TrackedRun]:
    """Start a run (under a sweep's parent run, ``tracking.parent_run_id``), tagged with this host and
    process; end it FINISHED, KILLED when interrupted (Ctrl-C, SIGTERM, an exit) or FAILED on an error,
    with the traceback logged as ``error.txt`` and the message as tag ``error``."""
    experiment_id = ensure_experiment(settings)
    all_tags = {TAG_GIT_COMMIT: git_commit(), **this_process(), **(tags or {})}
    if parent_run_id:
        all_tags[TAG_SWEEP_ID] = parent_run_id
    handles_signals = threading.current_thread() is threading.main_thread()
    previous = {}
    previous_hook = sys.unraisablehook
    if handles_signals:  # each signal is noted as it arrives (runtime.interrupts), so that none is lost
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, interrupts.raise_terminated),
                    signal.SIGINT: signal.getsignal(signal.SIGINT)}
        signal.signal(signal.SIGINT, interrupts.noting(previous[signal.SIGINT]))
        # One that lands in a finalizer is dropped there and raised again later: no traceback printed.
        previous_hook = interrupts.install_unraisable_hook()
    try:
        with _signals_deferred(handles_signals) as deliver_deferred:
            active = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, parent_run_id=parent_run_id,
                                      tags={k: str(v) for k, v in all_tags.items()})
        with active as run:
            interrupts.taken()  # a signal from before this run is not this run's
            tracked = TrackedRun(run.info.run_id, experiment_id)
            try:
                deliver_deferred()
                yield tracked
                tracked.finish()  # its plots, drawn while the last stages ran
                interrupts.raise_pending()  # a Ctrl-C whose exception a finalizer swallowed: KILLED, not FINISHED
            except BaseException as error:
                tracked.finish(cancel=True)
                if handles_signals:  # a second SIGTERM must not interrupt the bookkeeping
                    signal.signal(signal.SIGTERM, signal.SIG_IGN)
                # SystemExit: the process is told to exit from outside the pipeline; submitit does so
                # in its signal handler after requeueing a preempted or timed-out job (SLURM's USR2).
                received = interrupts.pending()
                interrupts.taken()
                signalled = isinstance(error, (KeyboardInterrupt, Terminated, SystemExit)) or received is not None
                trace = _release_frames(error, signalled)
                if received is not None and not isinstance(error, (KeyboardInterrupt, Terminated)):
                    # The signal's exception, replaced on its way out of native code (TensorFlow turns
                    # it into a SystemError): the run was still interrupted.
                    interruption = interrupts.exception_for(received)
                    _end_with_error(interruption, "KILLED", trace)
                    raise interruption from error
                _end_with_error(error, "KILLED" if signalled or time_limit(error) else "FAILED", trace)
                raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sys.unraisablehook = previous_hook


def _release_frames(error: BaseException, interrupted: bool) -> str:
    """Return the error's traceback as text, then let go of what its frames hold, so that the run
    can be ended.

    A Ctrl-C that lands inside the store's client, between SQLite executing a query and its
    cursor being consumed, leaves the cursor reachable from the traceback (a frame's variables,
    or the closure of a comprehension's function, which a cleared frame still keeps). Its open
    statement locks the SQLite file, so the writes that end the run waited 20 s each and failed
    (the run stayed RUNNING). An ``interrupted`` run's traceback therefore goes once it is text;
    an error's stays (for the console), with its frames' variables cleared (SQLAlchemy closes its
    cursors on errors, not on interruptions)."""
    trace = "".join(traceback.format_exception(error))
    for link in _causes(error):
        traceback.clear_frames(link.__traceback__)
        if interrupted:
            _cut(link)
    gc.collect()  # what those frames held in reference cycles (a cursor and its result)
    return trace


def _cut(error: BaseException) -> None:
    """Unlink every entry of the error's traceback: the ``with`` statements it passed through hold
    its tail too (``__exit__``'s ``traceback`` argument), so dropping the head alone frees nothing."""
    entries = []
    entry = error.__traceback__
    while entry is not None:
        entries.append(entry)
        entry = entry.tb_next
    for entry in entries:
        entry.tb_next = None
    error.__traceback__ = None


@contextmanager
def _signals_deferred(enabled: bool) -> Iterator[Callable[[], None]]:
    """Hold back Ctrl-C and SIGTERM while a run is being created, and yield a function that
    delivers the held-back signals once the run can be ended KILLED.

    A signal that lands inside ``mlflow.start_run``, after the store wrote the run but before the
    caller has its id, would leave that run RUNNING with nobody to end it (only the next
    command's reaping would). The handlers are swapped at Python level, not masked: TensorFlow's
    threads would take a masked process signal. Only the main thread can set handlers."""
    held: list[int] = []
    if not enabled:
        yield lambda: None
        return
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda signum, frame: held.append(signum)) for signum in handled}
    restored = False

    def deliver() -> None:
        nonlocal restored
        if not restored:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            restored = True
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)  # handled by the handler just restored, as if it came now
        held.clear()

    try:
        yield deliver
    except BaseException:
        deliver()  # no run to end: restore the handlers (and send any held-back signal) on the way out
        raise


def time_limit(error: BaseException) -> bool:
    """The scheduler's time limit (or a preemption) ended the job: submitit's handler of SLURM's
    USR2 raises UncompletedJobError inside the job when it does not requeue it."""
    return type(error).__name__ == "UncompletedJobError" and type(error).__module__.startswith("submitit")


def disk_full(error: BaseException | None) -> bool:
    """An error that says the disk (or a quota, or a file-size limit) has no room left: an OSError
    with that errno, or a store's error saying so (SQLite: "database or disk is full"), anywhere
    in the exception's chain of causes."""
    for link in _causes(error):
        if isinstance(link, OSError) and link.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        if any(words in str(link) for words in ("database or disk is full", "No space left on device")):
            return True
    return False


def _causes(error: BaseException | None) -> Iterator[BaseException]:
    """The error, then what it was raised from or during, each once (a chain can loop)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _end_with_error(error: BaseException, status: str, trace: str) -> None:
    """Record why the run ended and end it with ``status``; what the store can no longer take
    (a full disk) is skipped so that the status, at least, is written where possible. On a full
    disk the run's local artifacts, partial ones included, are removed to give the space back."""
    message = "interrupted (KeyboardInterrupt: Ctrl-C)" if isinstance(error, KeyboardInterrupt) else \
        f"{type(error).__name__}: {error}"
    if time_limit(error):
        message = f"the scheduler's time limit or a preemption (SLURM's USR2) ended the job: {message}"
    if disk_full(error):
        _remove_local_artifacts(mlflow.active_run())
    records = [lambda: mlflow.set_tag(TAG_ERROR, message[:5000])]
    if not disk_full(error):
        records.append(lambda: mlflow.log_text(trace, ERROR))
    for record in records:
        try:
            record()
        except Exception as failure:  # noqa: BLE001 - a full disk or a lost server: keep going to the status
            log.warning("could not record the error on the run: %s", failure)
    try:
        mlflow.end_run(status=status)
    except Exception as failure:  # noqa: BLE001
        log.error("could not mark the run %s: %s", status, failure)


def _remove_local_artifacts(run: Any) -> None:
    """Delete a run's artifact folder, and the files of the models it was logging, when they are
    on this machine (file:// or a plain path): on a full disk, partial files only take space."""
    if run is None:
        return
    locations = [run.info.artifact_uri]
    try:
        client = MlflowClient()
        locations += [model.artifact_location for model in client.search_logged_models(
            [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")]
    except Exception as failure:  # noqa: BLE001 - the store is the full disk's too: the run's folder still goes
        log.warning("could not list the models the run was logging: %s", failure)
    for location in locations:
        path = Path(location[len("file://"):] if location.startswith("file://") else location)
        if "://" not in location.replace("file://", "", 1) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            log.warning("the disk is full: removed the run's partial artifacts in %s", path)
