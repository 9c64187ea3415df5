"""Sweeps beyond one process: a parallel sweep into a real `mlflow server`, an unreachable server
named within seconds, two first runs at once on a fresh SQLite store, and caches shared by every
job whatever its working directory."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fashionbench import compare, promote, report
from fashionbench.tracking.settings import tracking_settings
from fashionbench.tracking.store import StoreUnreachableError, check_server_answers, ensure_experiment
from tests.conftest import TINY_RUN, free_port, wait_until_answers

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on a free port of 127.0.0.1: SQLite backend and artifact root in a
    temp folder; stopped at the end of this module's tests by its process group."""
    port, root = free_port(), tmp_path_factory.mktemp("server")
    log = open(root / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        # The server's job runner (GenAI jobs: seven more processes) is not needed to track runs.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{uri}/health", process, root / "server.log", 120)
        yield uri, root
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600):
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run([sys.executable, "-m", "fashionbench.run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_a_parallel_sweep_logs_into_a_tracking_server_and_its_jobs_share_the_caches(mlflow_server, tmp_path):
    uri, server_root = mlflow_server
    launch = tmp_path / "launch"
    launch.mkdir()
    # Relative cache folders, from the config and from the environment, with every job in its own
    # working directory (hydra.job.chdir=true): all must land under the launch directory.
    result = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "freeze=2,4", *TINY_RUN,
                      "tracking=server", f"tracking.uri={uri}", "tracking.log_model=false", "hydra.job.chdir=true",
                      "train.cache_dir=caches/trunk"],
                     launch, env={"FASHIONBENCH_DATA_STORE": "caches/catalogues", "KERAS_HOME": "caches/keras"})
    assert result.returncode == 0, result.stderr

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("fashionbench")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # created by the server, not the client
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep_id") == parent.info.run_id]
    assert sorted((c.data.params["freeze"], c.info.status) for c in children) == [("2", "FINISHED"),
                                                                                  ("4", "FINISHED")], \
        [c.data.tags.get("error") for c in children]
    assert parent.info.status == "FINISHED"
    # PostgreSQL's run name column holds 250 characters; this command line is longer.
    assert len(parent.data.tags["overrides"]) > 250 and len(parent.info.run_name) <= 250
    assert {k: parent.data.metrics[f"sweep/{k}"] for k in ("runs", "runs_finished", "runs_failed")} == {
        "runs": 2.0, "runs_finished": 2.0, "runs_failed": 0.0}
    # Artifacts went to the server's root; nothing was written beside the client.
    for child in children:
        assert list((server_root / "artifacts").glob(f"{experiment.experiment_id}/{child.info.run_id}/**/config.yaml"))
    assert not list(launch.rglob("mlflow.db")) and not list(launch.rglob("mlartifacts"))
    # One trunk cache and one catalogue store, under the launch directory, not one per job.
    assert list((launch / "caches" / "trunk").glob("*/meta.json")), sorted(launch.rglob("*"))[:20]
    assert any((launch / "caches" / "catalogues").iterdir())
    assert f"in {launch / 'caches' / 'keras' / 'models'}/ to use them" in result.stderr  # where ImageNet weights go
    job_dirs = [p.parent for p in launch.glob("multirun/*/*/*/.hydra")]
    assert len(job_dirs) == 2 and not [p for d in job_dirs for p in d.rglob("caches")]


def test_an_experiment_made_outside_the_server_is_reported_as_writing_to_client_disks(mlflow_server, caplog):
    uri, server_root = mlflow_server
    # Created in the server's database directly, as fashionbench's SQLite stores do before they are served.
    beside_the_database = (server_root / "mlartifacts" / "made-outside").as_uri()
    MlflowClient(f"sqlite:///{server_root / 'mlflow.db'}").create_experiment("made-outside",
                                                                              artifact_location=beside_the_database)
    with caplog.at_level("WARNING", logger="fashionbench.tracking.store"):
        ensure_experiment(tracking_settings(uri, "made-outside"))
        assert f"keeps its artifacts at {beside_the_database}, on each client's own disk" in caplog.text
        caplog.clear()
        ensure_experiment(tracking_settings(uri, "made-by-the-server"))
        assert not caplog.text


def test_an_unreachable_server_fails_in_seconds_with_one_line_naming_it(tmp_path, capsys):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    # MLflow's own client would retry for about four minutes; the timeout here fails that.
    result = run_cli([*TINY_RUN, f"tracking.uri={uri}"], tmp_path, timeout=150)
    assert result.returncode != 0
    assert f"StoreUnreachableError: the MLflow tracking server {uri} does not answer" in result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.glob("*.db"))
    for command in (promote.main, report.main, compare.main):
        assert command(["--tracking-uri", uri, *(["--out", str(tmp_path / "out.md")] if command is not promote.main
                                                 else [])]) == 1
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and f"the MLflow tracking server {uri} does not answer" in error


def test_a_server_that_accepts_but_never_answers_is_unreachable_after_the_timeout():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(StoreUnreachableError, match=f"{uri} does not answer"):
            check_server_answers(uri, seconds=1)
        assert time.monotonic() - started < 30


# What `fashionbench.run` does to the store before its first run, in the order it does it.
FIRST_RUN = r'''
import sys, time
from pathlib import Path
from fashionbench.tracking.runs import reap_orphaned_runs, tracked_run
from fashionbench.tracking.settings import tracking_settings

ready, go, uri, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
settings = tracking_settings(uri, "fashionbench")
ready.touch()
while not go.exists():
    time.sleep(0.005)
reap_orphaned_runs(settings)
with tracked_run(settings, run_name=name):
    pass
'''


def test_two_first_runs_started_at_once_on_a_fresh_store_both_finish(tmp_path):
    uri, go = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "go"
    processes = [subprocess.Popen([sys.executable, "-c", FIRST_RUN, str(tmp_path / f"ready-{i}"), str(go), uri,
                                   f"run-{i}"], stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready-{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes)
        time.sleep(0.05)
    go.touch()  # both open the fresh store at the same instant
    errors = [p.communicate(timeout=120)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("fashionbench").experiment_id])
    assert sorted((r.info.run_name, r.info.status) for r in runs) == [("run-0", "FINISHED"), ("run-1", "FINISHED")]
