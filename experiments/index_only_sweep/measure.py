"""Index-only sweeps train once (issue 10.7): the wall time of a six-job sweep that varies only
the index, against one run of the same config, each in a fresh MLflow store.

    python experiments/index_only_sweep/measure.py                   # the default config (the README's run)
    python experiments/index_only_sweep/measure.py --small           # the small config below: training is cheap
    python experiments/index_only_sweep/measure.py --small train.epochs=6

Prints both wall times, their ratio (goal: <= 1.3) and how many of the sweep's runs trained; then,
per job of the sweep, its wall seconds split as ``experiments/model_work.py`` splits them (timed in
the job's process by ``sweep_throughput/job_timer.py``): model work, the index's own work
(building it and measuring it against exact search) and the harness beyond them (goal for a job
that reused the training: <= 2 s), with the harness's largest parts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

# Small: 32 px, 3 % of the synthetic catalogue, a few epochs; the trunk cache off, so that
# training is what it costs without this other caches.
SMALL = ["data.image_size=32", "data.scale=0.03", "train.epochs=3", "train.cache=false", "model.weights=null",
         "users.n_users=20", "eval.k=2"]
INDEX_SWEEP = ["index.n_trees=1,10,50", "index.metric=angular,euclidean"]
EXPERIMENTS = Path(__file__).resolve().parent.parent
JOB_TIMER = "+hydra.callbacks.job_timer._target_=job_timer.JobTimer"  # experiments/sweep_throughput/job_timer.py


def timed_run(args: list[str], directory: Path) -> float:
    """Seconds ``python -m fashionbench.run <args>`` takes in ``directory`` (its own store and caches)."""
    env = {**os.environ, "FASHIONBENCH_CACHE_DIR": str(directory / "trunk"),
           "FASHIONBENCH_DATA_STORE": str(directory / "catalogues"), "HYDRA_FULL_ERROR": "1",
           "PYTHONPATH": os.pathsep.join([str(EXPERIMENTS), str(EXPERIMENTS / "sweep_throughput"),
                                         os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fashionbench.run", *args], cwd=directory, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(extra: list[str]) -> None:
    config = [*SMALL, *extra[1:]] if extra[:1] == ["--small"] else extra
    with tempfile.TemporaryDirectory() as single_dir, tempfile.TemporaryDirectory() as sweep_dir:
        single = timed_run(config, Path(single_dir))
        sweep = timed_run(["-m", *INDEX_SWEEP, *config, JOB_TIMER], Path(sweep_dir))
        jobs = [json.loads(path.read_text()) for path in sorted(Path(sweep_dir).rglob("model_work.json"))]
        client = MlflowClient("sqlite:///" + str(Path(sweep_dir) / "mlflow.db"))
        runs = [r for r in client.search_runs([client.get_experiment_by_name("fashionbench").experiment_id])
                if r.data.tags.get("sweep") != "parent" and r.data.tags.get("backbone_store") != "true"]
        trained = sum("training_reused_from" not in r.data.tags for r in runs)
    print(f"config: {' '.join(config) or 'the default'}   (load average {os.getloadavg()[0]:.1f})")
    print(f"one run                      {single:7.1f} s")
    print(f"six-run index-only sweep     {sweep:7.1f} s   {sweep / single:.2f}x one run; "
          f"{trained} of {len(runs)} runs trained")
    print()
    print(f"{'job':<46} {'wall s':>7} {'model s':>8} {'index s':>8} {'beyond s':>9}   largest harness parts s")
    for job in jobs:
        index = job.get("index build", 0.0) + job.get("~index quality", 0.0)
        beyond = job["wall"] - job["model"] - job.get("~index quality", 0.0)
        parts = sorted(((seconds, name.removeprefix("~")) for name, seconds in job.items()
                        if name.startswith("~") and name != "~index quality"), reverse=True)[:4]
        print(f"{job['job']:<46} {job['wall']:>7.2f} {job['model']:>8.2f} {index:>8.2f} {beyond:>9.2f}   "
              + ", ".join(f"{name} {seconds:.2f}" for seconds, name in parts))
    print("beyond: the job's wall seconds minus its model work (fit, predict, index build) and the index's "
          "measurement against exact search")


if __name__ == "__main__":
    main(sys.argv[1:])
