"""Sweeps as one parent run that always ends, resumed sweeps that skip finished jobs, and runs
that reuse an earlier run's training: real `python -m fashionbench.run -m` processes, real
signals, a real MLflow store."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_module
from mlflow.tracking import MlflowClient

from fashionbench.artifacts import TEST_ACCURACY, TRAIN_SECONDS, TRAINING_SECTION
from fashionbench.config import CONFIG_MODULE, CONFIG_NAME
from fashionbench.pipeline.experiment import run_experiment
from fashionbench.pipeline.fingerprints import job_fingerprint, training_fingerprint
from fashionbench.tracking.run_models import load_run_model
from fashionbench.tracking.runs import end_sweep, reap_orphaned_runs
from fashionbench.tracking.settings import tracking_settings
from fashionbench.tracking.store import ensure_experiment, experiment_runs, resolve_sweep
from fashionbench.tracking.sweep import job_name
from fashionbench.tracking.sweep_callback import planned_jobs
from tests.conftest import TINY_RUN, compose_config

EPOCH_LOSS = TRAINING_SECTION + "epoch_loss"
SWEEP = ["-m", "train.learning_rate=0.001,0.002", *TINY_RUN, "train.cache=false", "tracking.log_model=false"]


def start_sweep(tmp_path: Path) -> subprocess.Popen:
    """The sweep as a terminal starts it: SIGINT (Ctrl-C) not ignored, even where this test runs in
    the background (a background job of a non-interactive shell inherits SIGINT ignored)."""
    return subprocess.Popen([sys.executable, "-m", "fashionbench.run", *SWEEP], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "HYDRA_FULL_ERROR": "0"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def runs_by_role(client: MlflowClient) -> tuple[list, list]:
    """The experiment's sweep parents and their jobs, oldest first."""
    experiment = client.get_experiment_by_name("fashionbench")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"]) if experiment else []
    return ([r for r in runs if r.data.tags.get("sweep") == "parent"],
            [r for r in runs if r.data.tags.get("sweep") != "parent"])


def interrupt_during_second_job(tmp_path: Path, process: subprocess.Popen, client: MlflowClient) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if len(runs_by_role(client)[1]) == 2:
            process.send_signal(signal.SIGINT)  # what Ctrl-C sends
            return
        time.sleep(0.3)
    raise AssertionError("the sweep never reached its second job")


@pytest.mark.slow
def test_an_interrupted_sweep_is_closed_killed_and_its_rerun_skips_the_finished_job(tmp_path):
    client = MlflowClient("sqlite:///" + str(tmp_path / "mlflow.db"))
    client.search_experiments()  # the store exists before the sweep: no two processes create it at once
    process = start_sweep(tmp_path)
    interrupt_during_second_job(tmp_path, process, client)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    (parent,), jobs = runs_by_role(client)
    assert parent.info.status == "KILLED", stderr
    assert parent.data.metrics == {"sweep/runs": 2.0, "sweep/runs_finished": 1.0, "sweep/runs_failed": 0.0,
                                   "sweep/runs_killed": 1.0, "sweep/runs_unfinished": 0.0, "sweep/runs_skipped": 0.0,
                                   "sweep/jobs_not_run": 0.0}
    assert [(j.info.run_name, j.info.status) for j in jobs] == [("train.learning_rate=0.001", "FINISHED"),
                                                                ("train.learning_rate=0.002", "KILLED")]
    # The parent's id reached each job through its config, not the environment.
    assert {j.data.params["tracking.parent_run_id"] for j in jobs} == {parent.info.run_id}

    rerun = subprocess.run([sys.executable, "-m", "fashionbench.run", *SWEEP], cwd=tmp_path, capture_output=True,
                           text=True, timeout=600, env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert rerun.returncode == 0, rerun.stderr
    assert f"skipped train.learning_rate=0.001: run {jobs[0].info.run_id} FINISHED with this config" in rerun.stdout
    assert "1 job(s) skipped" in rerun.stdout
    (_, second), jobs_now = runs_by_role(client)
    assert second.info.status == "FINISHED"
    assert second.data.metrics["sweep/runs"] == 1 and second.data.metrics["sweep/runs_finished"] == 1
    assert second.data.metrics["sweep/runs_skipped"] == 1
    assert [j.info.run_name for j in jobs_now] == ["train.learning_rate=0.001", *["train.learning_rate=0.002"] * 2]
    # report and promote --sweep latest see the resumed sweep and the run it reused as one sweep.
    settings = tracking_settings(client.tracking_uri)
    latest = experiment_runs(settings, resolve_sweep(settings, "latest"))
    assert [r.run_id for r in latest] == [jobs[0].info.run_id, jobs_now[2].info.run_id]


def test_fingerprints_ignore_where_runs_go_and_training_ignores_what_only_reads_the_model():
    config = {"seed": 0, "run_name": "a", "tracking": {"uri": "x"}, "model": {"freeze": 4, "embedding_layer": "pool"},
              "train": {"epochs": 3, "cache_dir": "/a"}, "index": {"n_trees": 10}}
    elsewhere = {**config, "run_name": "b", "tracking": {"uri": "y"}}
    assert job_fingerprint(config) == job_fingerprint(elsewhere)
    assert job_fingerprint(config) != job_fingerprint({**config, "index": {"n_trees": 50}})
    same_training = {**config, "index": {"n_trees": 50}, "model": {"freeze": 4, "embedding_layer": "dense_128"},
                     "train": {"epochs": 3, "cache_dir": "/b"}}
    assert training_fingerprint(config, "data") == training_fingerprint(same_training, "data")
    assert training_fingerprint(config, "data") != training_fingerprint(config, "other data")
    assert training_fingerprint(config, "data") != training_fingerprint({**config, "train": {"epochs": 4}}, "data")


@pytest.mark.slow
def test_a_run_that_only_changes_the_index_reuses_the_trained_weights(store_uri):
    base = [*TINY_RUN, "train.cache=false", f"tracking.uri={store_uri}"]
    trained = run_experiment(compose_config(base))
    reused = run_experiment(compose_config([*base, "index.metric=euclidean", "index.n_trees=3"]))
    retrained = run_experiment(compose_config([*base, "index.metric=euclidean", "tracking.reuse_training=false",
                                               "tracking.log_model=false"]))
    client = MlflowClient(store_uri)
    first, second, third = (client.get_run(s.run_id) for s in (trained, reused, retrained))
    assert second.data.tags["training_reused_from"] == first.info.run_id
    assert second.data.metrics[TRAIN_SECONDS] == first.data.metrics[TRAIN_SECONDS]
    # Its model is the source's (the same weights), named by its tags rather than stored twice,
    # and loads as the source's does.
    assert second.data.tags["model_uri"] == first.data.tags["model_uri"] == f"runs:/{first.info.run_id}/model"
    assert second.data.tags["backbone"] == first.data.tags["backbone"]
    assert "model" not in {entry.path for entry in client.list_artifacts(second.info.run_id)}
    settings = tracking_settings(store_uri)
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(load_run_model(settings, second.info.run_id).predict(images, verbose=0),
                                  load_run_model(settings, first.info.run_id).predict(images, verbose=0))
    assert EPOCH_LOSS in first.data.metrics and EPOCH_LOSS not in second.data.metrics  # no training ran
    assert second.data.metrics[TEST_ACCURACY] == first.data.metrics[TEST_ACCURACY]  # the same weights
    assert second.data.params["index.metric"] == "euclidean"
    assert "training_reused_from" not in third.data.tags and EPOCH_LOSS in third.data.metrics


def test_job_names_are_the_swept_values_of_hydras_job_overrides():
    command = ["freeze=2,4,8", "train.cache=false", "index.metric=choice(angular,euclidean)", "seed=range(0,2)"]
    job = ["freeze=4", "train.cache=False", "index.metric=angular", "seed=1", "tracking.parent_run_id='abc'"]
    assert job_name(job, command) == "freeze=4 index.metric=angular seed=1"
    # An Optuna trial's values come from hydra.sweeper.params, not from the command line.
    assert job_name(["train.learning_rate=0.01", "train.cache=False"], ["train.cache=false"]) == \
        "train.learning_rate=0.01"


def plant_sweep(store_uri: str, job_statuses: list[str], pid: int) -> tuple[MlflowClient, str]:
    """A RUNNING sweep parent started by process ``pid`` on this host, with jobs ended as given."""
    settings = tracking_settings(store_uri)
    client = MlflowClient(store_uri)
    experiment_id = ensure_experiment(settings)
    process = {"host": socket.gethostname(), "pid": str(pid), "pid_start": ""}
    parent = client.create_run(experiment_id, tags={"sweep": "parent", **process}).info.run_id
    for status in job_statuses:
        job = client.create_run(experiment_id, tags={"sweep_id": parent, "mlflow.parentRunId": parent,
                                                     **process}).info.run_id
        if status != "RUNNING":
            client.set_terminated(job, status)
    return client, parent


@pytest.fixture(scope="module")
def planted_store(tmp_path_factory) -> str:
    """One store for the planted sweeps below (each plants its own parent): created once, ~5 s."""
    return "sqlite:///" + str(tmp_path_factory.mktemp("planted") / "mlflow.db")


def test_a_sweep_whose_process_died_is_closed_killed_with_its_counts_by_the_next_command(planted_store):
    store_uri = planted_store
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    client, parent = plant_sweep(store_uri, ["FINISHED", "FAILED", "RUNNING"], int(gone.stdout))
    reap_orphaned_runs(tracking_settings(store_uri))
    run = client.get_run(parent)
    assert run.info.status == "KILLED" and run.data.tags["error"].startswith("orphaned")
    assert run.data.metrics == {"sweep/runs": 3.0, "sweep/runs_finished": 1.0, "sweep/runs_failed": 1.0,
                                "sweep/runs_killed": 1.0, "sweep/runs_unfinished": 0.0,
                                "sweep/runs_skipped": 0.0}  # its running job was reaped first


@pytest.mark.parametrize("jobs, completed, interrupted, status", [
    (["FAILED", "FAILED"], True, False, "FAILED"),  # every trial failed
    (["FAILED", "FINISHED"], True, False, "FINISHED"),
    (["FINISHED"], False, False, "FAILED"),  # the launcher raised
    (["FINISHED", "KILLED"], False, False, "KILLED"),  # a job was killed
    (["FINISHED"], False, True, "KILLED"),  # a signal between jobs
])
def test_a_sweep_ends_by_how_its_jobs_ended(planted_store, jobs, completed, interrupted, status):
    client, parent = plant_sweep(planted_store, jobs, os.getpid())
    assert end_sweep(tracking_settings(planted_store), parent, completed=completed, interrupted=interrupted) == status
    assert client.get_run(parent).info.status == status


def test_the_jobs_a_sweep_planned_and_never_launched_are_counted(planted_store):
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose(config_name=CONFIG_NAME, return_hydra_config=True)  # with hydra.sweeper, as a sweep has it
    assert planned_jobs(cfg, ["freeze=2,4,8", "index.n_trees=range(1,3)", "seed=0"]) == 6
    assert planned_jobs(cfg, ["index=glob(*)"]) is None  # the values are the group's files
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    client, parent = plant_sweep(planted_store, ["FINISHED", "RUNNING"], int(gone.stdout))
    client.set_tag(parent, "sweep_jobs", "5")  # the sweep was cut short after launching 2 of its 5 jobs
    reap_orphaned_runs(tracking_settings(planted_store))
    run = client.get_run(parent)
    assert run.info.status == "KILLED"
    assert (run.data.metrics["sweep/runs"], run.data.metrics["sweep/jobs_not_run"]) == (2.0, 3.0)
