"""Every way a run can end is recorded, and commands that read runs never create or break a store:
real signals sent to real `python -m fashionbench.run` processes."""

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from fashionbench import compare, promote, recommend, report
from fashionbench.artifacts import TAG_BACKBONE_STORE
from fashionbench.runtime import interrupts
from fashionbench.runtime.interrupts import Terminated
from fashionbench.tracking.runs import tracked_run
from fashionbench.tracking.settings import tracking_settings
from fashionbench.tracking.store import ensure_experiment
from fashionbench.tracking.sweep_callback import SweepCallback
from fashionbench.training.fit import EpochProgress
from tests.conftest import TINY_RUN

pytestmark = pytest.mark.slow


def start_run(tmp_path: Path) -> subprocess.Popen:
    """A run long enough to be interrupted while training (tiny data, many epochs)."""
    return subprocess.Popen([sys.executable, "-m", "fashionbench.run", *TINY_RUN, "train.epochs=400",
                             "train.cache=false", "tracking.log_model=false"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HYDRA_FULL_ERROR": "0"})


def wait_until_running(tmp_path: Path, process: subprocess.Popen, timeout: float = 240):
    """The run's id once its MLflow run is RUNNING and it is training."""
    client = MlflowClient("sqlite:///" + str(tmp_path / "mlflow.db"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if (tmp_path / "mlflow.db").exists():
            experiment = client.get_experiment_by_name("fashionbench")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            if runs and "model/trainable_backbone_layers" in runs[0].data.metrics:  # built: training comes next
                return client, runs[0].info.run_id
        time.sleep(0.5)
    raise AssertionError("the run never started")


def test_sigterm_ends_the_run_killed_with_the_reason(tmp_path):
    process = start_run(tmp_path)
    client, run_id = wait_until_running(tmp_path, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] == "Terminated: terminated by SIGTERM"
    assert "the MLflow run is marked KILLED" in stderr and "Traceback" not in stderr
    assert run.data.tags["pid"] == str(process.pid) and run.data.tags["host"] == os.uname().nodename


def test_a_sigterm_that_native_code_turns_into_another_error_still_ends_the_run_killed(tmp_path):
    """SIGTERM raises Terminated in whatever Python frame runs; unwinding through TensorFlow's C++ it
    can come out as a SystemError. Sent here to this very process, and replaced as TensorFlow does."""
    settings = tracking_settings("sqlite:///" + str(tmp_path / "mlflow.db"), "sigterm")
    with pytest.raises(Terminated, match="terminated by SIGTERM"):
        with tracked_run(settings) as run:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises Terminated here, at once
            except Terminated as terminated:
                raise SystemError("Objects/listobject.c:338: bad argument to internal function") from terminated
    ended = MlflowClient(settings.uri).get_run(run.run_id)
    assert ended.info.status == "KILLED" and ended.data.tags["error"] == "Terminated: terminated by SIGTERM"
    with pytest.raises(ValueError):  # the next run's errors are its own: FAILED
        with tracked_run(settings) as failing:
            raise ValueError("an error of the run itself")
    assert MlflowClient(settings.uri).get_run(failing.run_id).info.status == "FAILED"


class SlowFinalizer:
    def __del__(self):
        time.sleep(5)  # the signal's handler raises here, in a finalizer: Python drops the exception


def test_a_sigterm_dropped_in_a_finalizer_ends_the_run_killed_without_a_traceback(tmp_path, capsys, monkeypatch):
    """TensorFlow frees objects all the time; a SIGTERM whose exception a finalizer drops is raised
    again when the run ends, and Python's "Exception ignored in ..." traceback is not printed."""
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # Python's own (pytest has one)
    settings = tracking_settings("sqlite:///" + str(tmp_path / "mlflow.db"), "sigterm")
    with pytest.raises(Terminated, match="terminated by SIGTERM"):
        with tracked_run(settings) as run:
            finalized = SlowFinalizer()
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
            del finalized  # its __del__ runs now, and the signal lands in it
    assert MlflowClient(settings.uri).get_run(run.run_id).info.status == "KILLED"
    err = capsys.readouterr().err
    assert "Exception ignored" not in err and "Traceback" not in err


@pytest.mark.parametrize("signum, error", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, Terminated)])
def test_a_signal_while_the_store_creates_the_run_still_ends_it_killed(tmp_path, signum, error):
    """Ctrl-C right as a job starts: the store has written the run, mlflow.start_run has not yet
    returned it. The signal is sent to this process at that very moment (when MlflowClient.create_run
    returns); the run must not stay RUNNING with nobody to end it."""
    settings = tracking_settings("sqlite:///" + str(tmp_path / "mlflow.db"), "early signal")
    sent = []

    def signal_when_the_run_exists(frame, event, arg):
        if event == "return" and frame.f_code.co_name == "create_run" and not sent and \
                frame.f_code.co_filename.endswith(os.path.join("mlflow", "tracking", "client.py")):
            sent.append(arg.info.run_id)
            os.kill(os.getpid(), signum)

    body_ran = []
    # Ctrl-C as Python's own handler takes it (a test process may have been given another).
    previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    sys.setprofile(signal_when_the_run_exists)
    try:
        with pytest.raises(error):
            with tracked_run(settings):
                body_ran.append(True)
        sys.setprofile(None)
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # the handlers are back
    finally:
        sys.setprofile(None)
        signal.signal(signal.SIGINT, previous_sigint)
    assert sent and not body_ran
    run = MlflowClient(settings.uri).get_run(sent[0])
    assert run.info.status == "KILLED"
    assert run.data.tags["error"] in ("interrupted (KeyboardInterrupt: Ctrl-C)", "Terminated: terminated by SIGTERM")


class SwallowsCtrlC:
    """An object whose finalizer takes a Ctrl-C: Python runs signal handlers between any two
    bytecodes, and the KeyboardInterrupt raised inside a finalizer is printed and dropped. During
    training TensorFlow's own finalizers took about one Ctrl-C in twenty this way."""

    def __del__(self) -> None:
        signal.raise_signal(signal.SIGINT)  # its handler runs here, inside the finalizer


@contextmanager
def swallowed_exceptions() -> Iterator[list]:
    """Collect what Python drops as "Exception ignored in", and give SIGINT Python's own handler for
    the block (a test process may have been given another)."""
    dropped, previous_hook = [], sys.unraisablehook
    previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.unraisablehook = lambda unraisable: dropped.append(unraisable.exc_type)
    try:
        yield dropped
    finally:
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGINT, previous_sigint)
        interrupts.taken()


def test_a_ctrl_c_that_a_finalizer_swallows_still_ends_the_run_killed(tmp_path, caplog):
    settings = tracking_settings("sqlite:///" + str(tmp_path / "mlflow.db"), "swallowed")
    body_ended = []
    with swallowed_exceptions(), caplog.at_level(logging.DEBUG, logger="fashionbench.runtime.interrupts"):
        with pytest.raises(KeyboardInterrupt):
            with tracked_run(settings) as run:
                SwallowsCtrlC()  # made and freed at once
                body_ended.append(True)
    # The premise: the interrupt was dropped (the run's hook says so in one line), the body went on.
    assert "KeyboardInterrupt raised in" in caplog.text and "was dropped there" in caplog.text and body_ended
    ended = MlflowClient(settings.uri).get_run(run.run_id)
    assert ended.info.status == "KILLED"
    assert ended.data.tags["error"] == "interrupted (KeyboardInterrupt: Ctrl-C)"


def test_a_ctrl_c_that_a_finalizer_swallows_stops_training_at_the_end_of_the_epoch():
    inputs, labels = np.zeros((8, 3), "float32"), np.zeros(8, "int64")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    epochs_ended = []

    class CtrlCInTheFirstEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 0:
                SwallowsCtrlC()

        def on_epoch_end(self, epoch, logs=None):
            epochs_ended.append(epoch)

    with swallowed_exceptions() as dropped:
        signal.signal(signal.SIGINT, interrupts.noting(signal.default_int_handler))  # as during a run
        with pytest.raises(KeyboardInterrupt):
            model.fit(inputs, labels, epochs=5, verbose=0, callbacks=[CtrlCInTheFirstEpoch(), EpochProgress(5)])
    assert dropped == [KeyboardInterrupt] and epochs_ended == [0]


def test_a_sweep_whose_ctrl_c_was_swallowed_starts_no_further_job():
    callback = SweepCallback()
    with swallowed_exceptions() as dropped:
        callback._previous_handlers[signal.SIGINT] = signal.signal(signal.SIGINT, callback._note_signal)
        SwallowsCtrlC()  # between two jobs, in Hydra's code
        assert dropped == [KeyboardInterrupt]
        with pytest.raises(KeyboardInterrupt):
            callback.on_job_start(config=None, task_function=None)


def test_ctrl_c_while_a_new_store_is_migrated_leaves_no_half_migrated_store(tmp_path):
    """Ctrl-C in the middle of MLflow's migrations of a fresh SQLite file (the 10th of its dozens):
    the next command found a half-migrated file and every later one failed on it ("table ...
    already exists"). The store is created beside its place and renamed into it when complete."""
    settings = tracking_settings("sqlite:///" + str(tmp_path / "mlflow.db"), "fresh")
    upgrades = []

    def ctrl_c_at_the_tenth_migration(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "upgrade" and \
                os.path.join("db_migrations", "versions") in frame.f_code.co_filename:
            upgrades.append(frame.f_code.co_filename)
            if len(upgrades) == 10:
                os.kill(os.getpid(), signal.SIGINT)

    with swallowed_exceptions():  # Python's own Ctrl-C handler for the test's duration
        sys.setprofile(ctrl_c_at_the_tenth_migration)
        try:
            with pytest.raises(KeyboardInterrupt):
                ensure_experiment(settings)
        finally:
            sys.setprofile(None)
    assert len(upgrades) == 10  # the signal came half-way through the migrations
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mlflow.db.lock"]  # no half-migrated store
    ensure_experiment(settings)  # the next command creates it whole
    assert MlflowClient(settings.uri).get_experiment_by_name("fresh") is not None


def test_ctrl_c_inside_a_store_query_still_ends_the_run_killed(tmp_path):
    """Ctrl-C between SQLite executing a query and its cursor being read (found by sending SIGINT at
    each of the store client's calls in turn): the frames the interrupt unwinds through hold the
    cursor, whose open statement locks the file; ending the run waited 20 s for it, failed and
    left the run RUNNING. Here the same state, made directly: a query half read when Ctrl-C comes,
    its cursor held by a frame and by a comprehension's closure."""
    settings = tracking_settings("sqlite:///" + str(tmp_path / "mlflow.db"), "interrupted query")

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    def read_the_store_when_ctrl_c_comes(database: Path) -> None:
        cursor = sqlite3.connect(database).execute("SELECT key FROM tags")
        assert cursor.fetchone() is not None  # more rows to come: the statement is open, the file locked
        # As in SQLAlchemy's row loading: a comprehension whose function closes over the cursor.
        [ctrl_c() for _ in range(1) if cursor]

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with tracked_run(settings, tags={"a": 1, "b": 2}) as run:
            read_the_store_when_ctrl_c_comes(tmp_path / "mlflow.db")
    ended = MlflowClient(settings.uri).get_run(run.run_id)
    assert ended.info.status == "KILLED", f"left {ended.info.status} after {time.monotonic() - start:.0f} s"
    assert ended.data.tags["error"] == "interrupted (KeyboardInterrupt: Ctrl-C)"


def test_a_job_past_its_schedulers_time_limit_ends_killed_naming_the_limit(tmp_path):
    """Under SLURM, submitit's USR2 handler raises UncompletedJobError inside the job at the time
    limit (when it does not requeue it): the run was cut short, not broken."""
    from submitit.core.utils import UncompletedJobError

    settings = tracking_settings("sqlite:///" + str(tmp_path / "mlflow.db"), "time limit")
    with pytest.raises(UncompletedJobError):
        with tracked_run(settings) as run:
            raise UncompletedJobError("Job not requeued because: timed-out too many times.")
    ended = MlflowClient(settings.uri).get_run(run.run_id)
    assert ended.info.status == "KILLED"
    assert ended.data.tags["error"] == ("the scheduler's time limit or a preemption (SLURM's USR2) ended the job: "
                                        "UncompletedJobError: Job not requeued because: timed-out too many times.")


def test_a_run_whose_process_was_killed_is_found_and_marked_killed(tmp_path, caplog):
    process = start_run(tmp_path)
    client, run_id = wait_until_running(tmp_path, process)
    process.kill()  # SIGKILL: nothing in the process can react
    process.communicate(timeout=60)
    assert client.get_run(run_id).info.status == "RUNNING"
    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    assert promote.main(["--tracking-uri", uri]) == 1  # nothing to promote, but the orphan is found
    run = client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["error"].startswith(f"orphaned: its process {process.pid} on ")
    assert f"marked 1 orphaned run(s) KILLED (their process on this host is gone): {run_id}" in caplog.text


@pytest.mark.parametrize("command", [
    lambda uri, out: promote.main(["--tracking-uri", uri]),
    lambda uri, out: report.main(["--tracking-uri", uri, "--out", str(out / "r.md")]),
    lambda uri, out: compare.main(["--tracking-uri", uri, "--out", str(out / "c.md")]),
    lambda uri, out: recommend.main(["--tracking-uri", uri, "--user", "user-0000", "--out", str(out / "g.png")]),
], ids=["promote", "report", "compare", "recommend"])
def test_reading_commands_never_create_a_store_and_name_a_damaged_one(command, tmp_path, capsys):
    missing = tmp_path / "typo_dir" / "mlflow.db"
    assert command(f"sqlite:///{missing}", tmp_path) == 1
    error = capsys.readouterr().err
    assert f"no MLflow store at {missing}" in error and error.count("\n") == 1
    assert not (tmp_path / "typo_dir").exists()
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"this is not a database" * 100)
    assert command(str(damaged), tmp_path) == 1  # a plain path is a SQLite file
    error = capsys.readouterr().err
    assert f"the MLflow store sqlite:///{damaged} cannot be read" in error and error.count("\n") == 1
    assert not list(tmp_path.glob("*.md")) and not list(tmp_path.glob("*.png"))


FULL_DISK_RUN = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writing past the limit raises OSError (EFBIG)
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000_000, 20_000_000))  # room for all but the ~94 MB backbone
sys.argv = ["fashionbench.run", *sys.argv[1:]]
runpy.run_module("fashionbench.run", run_name="__main__")
"""


def test_a_full_disk_fails_the_run_with_one_message_and_removes_its_partial_artifacts(tmp_path):
    result = subprocess.run([sys.executable, "-c", FULL_DISK_RUN, *TINY_RUN], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("fashionbench.run failed: the disk is full") and "marked FAILED" in last_line
    assert "Traceback" not in result.stderr
    client = MlflowClient("sqlite:///" + str(tmp_path / "mlflow.db"))
    runs = client.search_runs([client.get_experiment_by_name("fashionbench").experiment_id])
    (run,) = [run for run in runs if TAG_BACKBONE_STORE not in run.data.tags]  # the store may have been opened
    assert run.info.status == "FAILED" and "File too large" in run.data.tags["error"]
    assert not [p for p in (tmp_path / "mlartifacts").rglob("*") if p.is_file()]  # nothing partial kept
