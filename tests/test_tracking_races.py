"""Logging that survives concurrency: processes that log the same thing into one store at the same
moment all finish, and a diagnostic that cannot be logged never fails the run."""

import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fashionbench.stage import Dataset, StageResult
from fashionbench.tracking import races
from fashionbench.tracking.races import lost_race, retry_lost_race
from fashionbench.tracking.runs import tracked_run
from fashionbench.tracking.settings import tracking_settings
from fashionbench.tracking.store import ensure_experiment

WORKERS = 4


# One of WORKERS processes: start a run, say so, wait for the signal to go (a file), then log the
# dataset every worker logs, at the same moment as the others.
WORKER = """
import sys, time
from pathlib import Path
import pandas as pd
from fashionbench.stage import Dataset, StageResult
from fashionbench.tracking import races
from fashionbench.tracking.runs import tracked_run
from fashionbench.tracking.settings import tracking_settings

uri, experiment, folder, name, attempts = sys.argv[1:]
races.ATTEMPTS = int(attempts)
shared = Dataset(pd.DataFrame({"item_id": ["a", "b"], "split": ["train", "test"]}), "catalogue", "d1g3st",
                 "fashionbench.data.synthetic", "training")

class LogsTheSharedDataset(StageResult):
    def datasets(self):
        return [shared]

with tracked_run(tracking_settings(uri, experiment), run_name=name) as run:
    Path(folder, name).touch()
    deadline = time.monotonic() + 120
    while not Path(folder, "go").exists() and time.monotonic() < deadline:
        time.sleep(0.001)
    run.record(LogsTheSharedDataset())
"""


def race(tmp_path: Path, attempts: int, rounds: int) -> tuple[list, list]:
    """``rounds`` bursts of WORKERS processes logging one dataset into a fresh experiment each; the
    runs' statuses and the tags that say a dataset input failed."""
    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    statuses, failures = [], []
    for number in range(rounds):
        settings = tracking_settings(uri, experiment_name=f"race {number}")
        ensure_experiment(settings)  # the store and experiment exist: only the dataset row is raced for
        folder = tmp_path / f"round {number}"
        folder.mkdir()
        workers = [subprocess.Popen([sys.executable, "-c", WORKER, uri, settings.experiment_name, str(folder),
                                     f"worker {n}", str(attempts)], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
                   for n in range(WORKERS)]
        deadline = time.monotonic() + 180
        while len(list(folder.iterdir())) < WORKERS:  # every run started
            assert time.monotonic() < deadline and all(w.poll() is None for w in workers), \
                [w.communicate()[1][-2000:] for w in workers if w.poll() is not None]
            time.sleep(0.05)
        (folder / "go").touch()
        for worker in workers:
            worker.communicate(timeout=180)
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name(settings.experiment_name)
        for run in client.search_runs([experiment.experiment_id]):
            statuses.append(run.info.status)
            failures += [key for key in run.data.tags if key.startswith("diagnostic_failed/")]
    return statuses, failures


@pytest.mark.slow
def test_processes_logging_the_same_dataset_at_once_all_log_it(tmp_path):
    statuses, failures = race(tmp_path, races.ATTEMPTS, rounds=1)
    assert statuses == ["FINISHED"] * WORKERS
    assert failures == []  # not one input given up: every loser of the race tried again


def test_a_lost_race_is_told_apart_from_a_real_error():
    assert lost_race(Exception("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id"))
    assert lost_race(Exception('duplicate key value violates unique constraint "dataset_pk"'))
    assert not lost_race(ValueError("no such column: datasets.digest"))
    calls = []

    def loses_twice():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("BAD_REQUEST: (sqlite3.IntegrityError) UNIQUE constraint failed: datasets.name")
        return "logged"

    assert retry_lost_race(loses_twice, "dataset") == "logged" and len(calls) == 3
    with pytest.raises(ValueError, match="not a race"):
        retry_lost_race(lambda: (_ for _ in ()).throw(ValueError("not a race")), "dataset")


class BrokenDiagnostics(StageResult):
    stage = "broken"

    def metrics(self):
        return {"broken/value": 1.0}

    def datasets(self):  # not a table: MLflow's from_pandas cannot describe it
        return [Dataset("not a data frame", "catalogue", "x", "fashionbench.data.synthetic", "training")]

    def write_artifacts(self, directory: Path) -> None:
        (directory / "kept.txt").write_text("the results a run must keep")

    def write_diagnostics(self, directory: Path) -> None:
        raise RuntimeError("the plot could not be drawn")


def test_a_diagnostic_that_cannot_be_logged_is_a_warning_on_a_finished_run(tmp_path, caplog):
    settings = tracking_settings("sqlite:///" + str(tmp_path / "mlflow.db"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tracked_run(settings) as run:
            run.record(BrokenDiagnostics())
    finished = MlflowClient(settings.uri).get_run(run.run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.metrics == {"broken/value": 1.0}
    assert finished.data.tags["diagnostic_failed/plots_broken"] == "RuntimeError: the plot could not be drawn"
    assert "diagnostic_failed/dataset_training" in finished.data.tags
    # kept.txt and its checksums, no plot
    assert [a.path for a in MlflowClient(settings.uri).list_artifacts(run.run_id)] == ["checksums", "kept.txt"]
    assert "plots_broken was not logged (the run goes on)" in caplog.text


class SlowPlot(StageResult):
    stage = "slow"

    def __init__(self, drawn: list) -> None:
        self.drawn = drawn

    def write_diagnostics(self, directory: Path) -> None:
        time.sleep(0.3)
        (directory / "slow.txt").write_text("drawn")
        self.drawn.append("drawn")


def test_plots_are_drawn_beside_the_stages_and_done_before_a_timing_and_the_end(tmp_path):
    """A stage's plots are drawn on the run's own thread; ``wait_idle`` (before the index's queries
    per second are timed) and the run's end wait for them."""
    settings = tracking_settings("sqlite:///" + str(tmp_path / "mlflow.db"))
    drawn: list = []
    with tracked_run(settings) as run:
        run.record(SlowPlot(drawn))
        assert drawn == []  # still drawing: the stage's record did not wait for it
        run.wait_idle()
        assert drawn == ["drawn"]
        run.record(SlowPlot(drawn))
    assert drawn == ["drawn", "drawn"]  # the run ended once its second plot was logged
    finished = MlflowClient(settings.uri).get_run(run.run_id)
    assert finished.info.status == "FINISHED"
    assert [a.path for a in MlflowClient(settings.uri).list_artifacts(run.run_id)] == ["slow.txt"]
