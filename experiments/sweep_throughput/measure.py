"""Sweep throughput: wall seconds per job and the share outside model work, for one grid run with
the basic launcher and with ``hydra/launcher=parallel``.

    python experiments/sweep_throughput/measure.py                       # seed=0,1,2 freeze=2,4,8: ~ 8 min, 2 cores
    python experiments/sweep_throughput/measure.py --grid seed=0,1 freeze=2 -- data.scale=0.02

Each launcher runs the same ``python -m fashionbench.run -m <grid>`` as a user types it, into a
store and a trunk cache of its own (both created empty; the store before timing). A Hydra callback
(``job_timer.py``) times each job in the process that runs it and splits it into model work
(fit, predict, index builds: ``experiments/model_work.py``) and harness. Printed per launcher:
the sweep's wall seconds and seconds per job (what a user waits for), each job's mean wall and
model seconds, the share of job time outside model work, and the share of the sweep's
worker-seconds (wall x workers) outside model work, which adds start-up, the sweep's parent run
and the launcher. Last, the parallel launcher's throughput over the basic one's, measured in the
same run. Times are measured, never asserted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAUNCHERS = {"basic": [], "parallel": ["hydra/launcher=parallel"]}


def workers(launcher: str, overrides: list[str]) -> int:
    if launcher == "basic":
        return 1
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.launcher.n_jobs=")]
    return int(chosen[-1]) if chosen else 2  # configs/hydra/launcher/parallel.yaml


def run_sweep(launcher: str, grid: list[str], overrides: list[str], scratch: Path) -> dict:
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its store-creation lines
    folder = scratch / launcher
    folder.mkdir()
    store = "sqlite:///" + str(folder / "mlflow.db")
    MlflowClient(store).search_experiments()  # the store exists before timing: created once, not per sweep
    command = [sys.executable, "-m", "fashionbench.run", "-m", *grid, *LAUNCHERS[launcher], *overrides,
               f"tracking.uri={store}", f"train.cache_dir={folder / 'trunk'}", f"hydra.sweep.dir={folder / 'multirun'}",
               "+hydra.callbacks.job_timer._target_=job_timer.JobTimer"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"the {launcher} sweep failed ({done.returncode}):\n{done.stderr[-3000:]}")
    jobs = [json.loads(path.read_text()) for path in (folder / "multirun").rglob("model_work.json")]
    return {"launcher": launcher, "wall": wall, "jobs": jobs, "workers": workers(launcher, overrides)}


def summarise(sweep: dict) -> dict:
    jobs, n = sweep["jobs"], len(sweep["jobs"])
    job_wall = sum(job["wall"] for job in jobs)
    model = sum(job["model"] for job in jobs)
    return {"n": n, "finished": sum(job["status"] == "COMPLETED" for job in jobs), "wall": sweep["wall"],
            "per_job": sweep["wall"] / n, "job_wall": job_wall / n, "model": model / n,
            "job_share": 1 - model / job_wall, "sweep_share": 1 - model / (sweep["wall"] * sweep["workers"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", nargs="+", default=["seed=0,1,2", "freeze=2,4,8"], help="the swept options")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every job (after --)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="fashionbench-sweep-throughput-"))
    print(f"machine: {os.cpu_count()} CPU cores ({platform.machine()}), no GPU; grid: {' '.join(args.grid)}; "
          f"overrides: {' '.join(args.overrides) or '(none: the embedded default)'}; scratch: {scratch}", flush=True)
    rows = {}
    for launcher in LAUNCHERS:
        rows[launcher] = summarise(run_sweep(launcher, args.grid, args.overrides, scratch))
    print(f"{'launcher':<10} {'jobs':>5} {'sweep s':>8} {'s/job':>6} {'job wall s':>10} {'model s':>8} "
          f"{'outside model (jobs)':>21} {'outside model (sweep)':>22}")
    for launcher, row in rows.items():
        print(f"{launcher:<10} {row['finished']:>2}/{row['n']:<2} {row['wall']:>8.1f} {row['per_job']:>6.1f} "
              f"{row['job_wall']:>10.1f} {row['model']:>8.1f} {100 * row['job_share']:>20.1f}% "
              f"{100 * row['sweep_share']:>21.1f}%")
    ratio = rows["basic"]["per_job"] / rows["parallel"]["per_job"]
    print(f"ratio: parallel / basic throughput (jobs per second) = {ratio:.2f}")


if __name__ == "__main__":
    main()
