"""Launcher presets (hydra/launcher=parallel|local|slurm) and the GPU pool, with real processes and sweeps."""

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from fashionbench.artifacts import HEADLINE_METRIC, TAG_ERROR, TAG_GPU, TAG_PID, TAG_SWEEP, TAG_SWEEP_ID
from fashionbench.config import CONFIG_MODULE, CONFIG_NAME
from fashionbench.runtime.gpu_pool import LOCK_DIR_ENV, POOL_ENV, GpuPoolError, lock_names
from fashionbench.tracking.runs import tracked_run
from fashionbench.tracking.settings import tracking_settings
from tests.conftest import TINY_RUN


def hydra_config(overrides: list[str]):
    """The config with its ``hydra`` node, as a multirun composes it."""
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name=CONFIG_NAME, overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("preset, target, settings", [
    ("parallel", "joblib_launcher.JoblibLauncher", {"n_jobs": 2}),
    ("local", "submitit_launcher.LocalLauncher", {"timeout_min": 1440}),
    ("slurm", "submitit_launcher.SlurmLauncher", {"timeout_min": 240, "signal_delay_s": 120, "gpus_per_node": 1,
                                                  "max_num_timeout": 0}),
])
def test_each_launcher_preset_composes_on_its_plugin(preset, target, settings):
    launcher = hydra_config([f"hydra/launcher={preset}"]).hydra.launcher
    assert launcher._target_.endswith(target)
    assert {key: launcher[key] for key in settings} == settings


# A process of a sweep's worker: imports fashionbench (which claims a GPU of the pool in the
# environment), says which GPU CUDA will show it, and holds it until its stdin closes.
WORKER = "import os, sys, fashionbench; print(os.environ.get('CUDA_VISIBLE_DEVICES'), flush=True); sys.stdin.read()"


def start_worker(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)


def visible_gpu(worker: subprocess.Popen, timeout: float) -> str | None:
    """The GPU the worker was given, or None if it is still waiting after ``timeout`` seconds."""
    ready, _, _ = select.select([worker.stdout], [], [], timeout)
    return worker.stdout.readline().strip() if ready else None


def test_each_worker_holds_its_own_gpu_until_it_ends_even_when_killed(tmp_path):
    env = {**os.environ, POOL_ENV: "7,9", LOCK_DIR_ENV: str(tmp_path / "locks")}
    workers = [start_worker(env) for _ in range(2)]
    try:
        first, second = visible_gpu(workers[0], timeout=60), visible_gpu(workers[1], timeout=60)
        assert {first, second} == {"7", "9"}
        workers.append(start_worker(env))
        assert visible_gpu(workers[2], timeout=10) is None  # both GPUs are held: the third waits
        workers[0].send_signal(signal.SIGKILL)  # no clean-up code runs: the OS releases its lock
        workers[0].wait()
        assert visible_gpu(workers[2], timeout=30) == first
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()


def test_a_gpu_listed_twice_runs_two_jobs_and_no_pool_changes_nothing(tmp_path):
    env = {**os.environ, POOL_ENV: "3,3", LOCK_DIR_ENV: str(tmp_path / "locks"), "CUDA_VISIBLE_DEVICES": "0,1"}
    workers = [start_worker(env) for _ in range(2)]
    unpooled = start_worker({k: v for k, v in env.items() if k != POOL_ENV})
    try:
        assert [visible_gpu(w, timeout=60) for w in workers] == ["3", "3"]
        assert sorted(p.name for p in (tmp_path / "locks").iterdir()) == sorted(lock_names(["3", "3"]))
        assert visible_gpu(unpooled, timeout=60) == "0,1"
    finally:
        for worker in [*workers, unpooled]:
            worker.kill()
            worker.wait()


@pytest.mark.parametrize("overrides, message", [
    (["hydra/launcher=parallel", "hydra.launcher.n_jobs=3", "hydra.callbacks.gpu_pool.gpus=[0,1]"],
     r"hydra.launcher.n_jobs=3 with hydra.callbacks.gpu_pool.gpus=\['0', '1'\]: .* between 1 and 2"),
    (["hydra/launcher=parallel", "hydra.launcher.n_jobs=-1", "hydra.callbacks.gpu_pool.gpus=[0,1]"],
     r"hydra.launcher.n_jobs=-1 .* between 1 and 2"),
    (["hydra.callbacks.gpu_pool.gpus=['0,1']"], r"gpu_pool.gpus must list GPU indices or UUIDs"),
])
def test_an_unusable_pool_stops_the_sweep_before_it_starts(overrides, message):
    config = hydra_config(overrides)
    callback = instantiate(config.hydra.callbacks.gpu_pool)
    with pytest.raises(GpuPoolError, match=message):
        callback.on_multirun_start(config=config)
    assert POOL_ENV not in os.environ


def run_sweep(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fashionbench.run", "-m", *args, f"hydra.sweep.dir={cwd / 'sweep'}",
                           *TINY_RUN, "tracking.log_model=false"], cwd=cwd, env={**os.environ, "HYDRA_FULL_ERROR": "0"},
                          capture_output=True, text=True, timeout=600)


def sweep_runs(cwd: Path):
    """The sweep's parent run and its jobs' runs, in the store of the directory it ran in."""
    client = MlflowClient("sqlite:///" + str(cwd / "mlflow.db"))
    runs = client.search_runs([client.get_experiment_by_name("fashionbench").experiment_id],
                              order_by=["params.freeze ASC"])
    (parent,) = [r for r in runs if r.data.tags.get(TAG_SWEEP) == "parent"]
    return parent, [r for r in runs if r.data.tags.get(TAG_SWEEP_ID) == parent.info.run_id]


@pytest.mark.slow
def test_a_local_submitit_sweep_runs_each_job_in_its_own_process_with_its_own_gpu(tmp_path):
    result = run_sweep(["hydra/launcher=local", "freeze=2,4", "hydra.callbacks.gpu_pool.gpus=[7,9]",
                        f"hydra.callbacks.gpu_pool.lock_dir={tmp_path / 'locks'}"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    parent, jobs = sweep_runs(tmp_path)
    assert [(j.data.params["freeze"], j.info.status) for j in jobs] == [("2", "FINISHED"), ("4", "FINISHED")]
    assert parent.info.status == "FINISHED" and parent.data.metrics["sweep/runs_finished"] == 2
    pids = {j.data.tags[TAG_PID] for j in jobs}
    assert len(pids) == 2 and parent.data.tags[TAG_PID] not in pids  # a process of its own for each job
    assert {j.data.tags[TAG_GPU] for j in jobs} == {"7", "9"}
    assert all(HEADLINE_METRIC in j.data.metrics for j in jobs)


def test_a_run_whose_job_is_requeued_ends_killed_not_failed(store_uri):
    # submitit requeues a preempted or timed-out job from its USR2 handler, then exits the process
    # (sys.exit; 144 under submitit_local): the run did not fail, it was cut short.
    settings = tracking_settings(store_uri, "requeue", None)
    with pytest.raises(SystemExit), tracked_run(settings) as run:
        sys.exit(144)
    ended = MlflowClient(store_uri).get_run(run.run_id)
    assert (ended.info.status, ended.data.tags[TAG_ERROR]) == ("KILLED", "SystemExit: 144")


def test_runs_started_in_the_same_second_get_a_folder_each(tmp_path):
    """Hydra names a run's folder by the time it started; by the second, two runs started together
    (a shell loop, a job array) shared one folder and interleaved their logs and .hydra/ files."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    # A config error ends each run quickly, after Hydra has made its folder and written .hydra/.
    runs = [subprocess.Popen([sys.executable, "-m", "fashionbench.run", "eval.k=0"], cwd=tmp_path, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(3)]
    assert [run.wait(timeout=300) for run in runs] == [1, 1, 1]
    folders = sorted(tmp_path.glob("outputs/*/*/.hydra"))
    assert len(folders) == 3, folders
