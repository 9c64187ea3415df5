"""`hydra/launcher=slurm` against a real SLURM scheduler: a one-node cluster on this machine
(slurm_cluster.py), tiny runs, a SQLite MLflow store, everything in one temp folder.

1. A 2-job sweep (``freeze=2,4``): one SLURM array job, a task per sweep job; both runs FINISHED
   under a FINISHED parent (the check tests/test_slurm_cluster.py makes).
2. A sweep with a job that outlives its SLURM time limit (``train.epochs=1,200`` without the trunk
   cache, ``hydra.launcher.timeout_min=3``, ``signal_delay_s=30``, ``max_num_timeout=0``): SLURM
   sends USR2 30 to 60 s before the limit (slurmctld looks every 30 s) and submitit's handler
   raises UncompletedJobError inside the run, which ends KILLED with the time limit as its reason;
   the sweep goes on. Then the same sweep with more time (``timeout_min`` is the launcher's, not
   part of a job's config, so tracking.resume still knows the finished job): the finished job is
   skipped, the cut one runs to FINISHED.
3. The same sweep, the long job cancelled (``scancel``: SIGTERM, what SLURM also does at the time
   limit to a job still running after USR2) once its MLflow run is RUNNING and some seconds into
   its training: that run ends KILLED ("Terminated"), the job returns, and the sweep's process
   collects the other job and exits 0 with its parent FINISHED.

Each sweep prints the job table: swept values, SLURM job id (from the job's ``.hydra/hydra.yaml``,
which submitit fills from ``SLURM_ARRAY_JOB_ID``/``SLURM_ARRAY_TASK_ID``), SLURM's state and run
time (``scontrol``), the MLflow run's status, id and reason (tag ``error``).

    python experiments/scale_out/slurm_sweep.py                        # all three, in a temp folder
    python experiments/scale_out/slurm_sweep.py --root /tmp/slurm-sweep --only sweep

Needs root and Debian's ``slurm-wlm`` and ``munge`` (apt-get install slurm-wlm munge).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from slurm_cluster import SlurmCluster, one_node_cluster

# This checkout's fashionbench, here and in the sweeps' processes (which run in another folder), not
# whichever checkout is pip-installed (-e) on the machine.
CHECKOUT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(CHECKOUT))

from fashionbench.artifacts import (  # noqa: E402
    SWEEP_PARENT,
    SWEEP_SECTION,
    TAG_ERROR,
    TAG_OVERRIDES,
    TAG_SWEEP,
    TAG_SWEEP_ID,
    TAG_SWEEP_REUSED_PREFIX,
)
from fashionbench.tracking.sweep import job_name  # noqa: E402

# tests/conftest.py's TINY_RUN: a whole run in seconds (32 px, a few items per split, one epoch).
TINY_RUN = ["data.image_size=32", "data.scale=0.01", "data.min_per_split=3", "train.epochs=1", "train.batch_size=16",
            "users.n_users=6", "users.items_per_user=40", "users.favourite_threshold=3", "eval.k=2",
            "model.weights=null"]
# A job that trains for minutes: every backbone layer trainable (no trunk cache), many epochs.
LONG_EPOCHS = 200  # about 3 min of training on this machine (0.9 s an epoch at a load of 6)
SWEEP_TIMEOUT_S = 900  # a sweep that has not ended by then is stuck (submitit waits for a result file)
TIME_LIMIT_REASON = "the scheduler's time limit or a preemption (SLURM's USR2) ended the job: UncompletedJobError"


def launcher_overrides(cluster: SlurmCluster, timeout_min: int, signal_delay_s: int = 120) -> list[str]:
    """``hydra/launcher=slurm`` sized for this machine: no GPU, one CPU and 2 GB per job (two jobs at
    once on 2 cores; memory is not enforced without cgroups)."""
    return ["hydra/launcher=slurm", f"hydra.launcher.partition={cluster.partition}",
            "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
            f"hydra.launcher.timeout_min={timeout_min}", f"hydra.launcher.signal_delay_s={signal_delay_s}",
            "hydra.launcher.max_num_timeout=0"]


def store_uri(root: Path) -> str:
    return "sqlite:///" + str((root / "mlflow.db").resolve())


def run_sweep(cluster: SlurmCluster, root: Path, sweep_dir: Path, overrides: Sequence[str],
              timeout: float = SWEEP_TIMEOUT_S) -> subprocess.CompletedProcess:
    """``python -m fashionbench.run -m <overrides>`` in ``root`` (submitit's folders and the caches
    go there), into ``root/mlflow.db``, with the cluster's environment; output also in
    ``<sweep_dir>.log``."""
    result = subprocess.run(sweep_command(root, sweep_dir, overrides), cwd=root, env=sweep_env(cluster),
                            capture_output=True, text=True, timeout=timeout)
    Path(f"{sweep_dir}.log").write_text(result.stdout + result.stderr)
    return result


def start_sweep(cluster: SlurmCluster, root: Path, sweep_dir: Path, overrides: Sequence[str]) -> subprocess.Popen:
    """``run_sweep`` in the background; its output goes to ``<sweep_dir>.log``."""
    with Path(f"{sweep_dir}.log").open("w") as log:
        return subprocess.Popen(sweep_command(root, sweep_dir, overrides), cwd=root, env=sweep_env(cluster),
                                stdout=log, stderr=subprocess.STDOUT)


def sweep_env(cluster: SlurmCluster) -> dict[str, str]:
    """The cluster's environment, with this checkout first on PYTHONPATH: sbatch exports it to the
    jobs, so the sweep and its jobs import the fashionbench of this checkout."""
    path = os.pathsep.join(p for p in (str(CHECKOUT), cluster.env.get("PYTHONPATH", "")) if p)
    return {**cluster.env, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": path}


def checkout_commit() -> str:
    """This checkout's HEAD (short), "+ uncommitted changes" when its tracked files differ."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=CHECKOUT, capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if git("status", "--porcelain", "-uno")
                                                  else "")


def sweep_command(root: Path, sweep_dir: Path, overrides: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "fashionbench.run", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}",
            f"tracking.uri={store_uri(root)}", "tracking.log_model=false"]


@dataclass(frozen=True)
class JobRow:
    """One job of a sweep: where SLURM ran it and how its MLflow run ended."""

    job: str  # its swept values, as its run is named
    slurm_job: str
    slurm_state: str
    slurm_run_time: str
    run_status: str  # FINISHED / FAILED / KILLED / RUNNING, or "skipped" (an earlier FINISHED run reused)
    run: str  # the MLflow run's id (8 characters)
    reason: str  # the run's `error` tag

    def line(self) -> str:
        return (f"  {self.job:<22} {self.slurm_job:<8} {self.slurm_state:<10} {self.slurm_run_time:>8}  "
                f"{self.run_status:<9} {self.run:<8} {self.reason}").rstrip()


@dataclass(frozen=True)
class SweepOutcome:
    parent_id: str
    parent_status: str
    parent_metrics: dict[str, float]
    rows: list[JobRow]

    def table(self) -> str:
        counts = ", ".join(f"{name.split('/')[-1]} {int(value)}" for name, value in sorted(self.parent_metrics.items())
                           if name.startswith(SWEEP_SECTION))
        header = (f"  {'job':<22} {'SLURM':<8} {'state':<10} {'run time':>8}  {'MLflow':<9} {'run':<8} reason")
        return "\n".join([f"sweep parent {self.parent_id[:8]} {self.parent_status} ({counts})", header,
                          *(row.line() for row in self.rows)])


def sweep_outcome(cluster: SlurmCluster, root: Path, sweep_dir: Path) -> SweepOutcome:
    """The newest sweep parent run in ``root``'s store and its jobs, matched to the SLURM jobs that
    ran them through each job's ``.hydra/hydra.yaml`` (``hydra.job.id``, set by the launcher from
    submitit's ``JobEnvironment``)."""
    client = MlflowClient(store_uri(root))
    experiment = client.get_experiment_by_name("fashionbench")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1000)
    parent = next(run for run in runs if run.data.tags.get(TAG_SWEEP) == SWEEP_PARENT)
    command = parent.data.tags.get(TAG_OVERRIDES, "").split()
    children = {run.info.run_name: run for run in runs if run.data.tags.get(TAG_SWEEP_ID) == parent.info.run_id}
    reused = {name: key[len(TAG_SWEEP_REUSED_PREFIX):] for key, name in parent.data.tags.items()
              if key.startswith(TAG_SWEEP_REUSED_PREFIX)}
    jobs = [OmegaConf.load(hydra_file).hydra for hydra_file in
            sorted(sweep_dir.glob("*/.hydra/hydra.yaml"), key=lambda path: int(path.parts[-3]))]
    slurm = cluster.wait_until_ended([str(job.job.id) for job in jobs])
    rows = []
    for job in jobs:
        name = job_name(list(job.overrides.task), command) or f"job {job.job.num}"  # as fashionbench.run names it
        state = slurm.get(str(job.job.id), {})
        run = children.get(name)
        if run is not None:
            status, run_id, reason = run.info.status, run.info.run_id[:8], run.data.tags.get(TAG_ERROR, "")
        elif name in reused:
            status, run_id, reason = "skipped", reused[name][:8], "an earlier run of its config FINISHED"
        else:
            status, run_id, reason = "-", "-", "no MLflow run"
        rows.append(JobRow(name, str(job.job.id), state.get("JobState", "?"), state.get("RunTime", "?"), status,
                           run_id, reason[:160]))
    return SweepOutcome(parent.info.run_id, parent.info.status, dict(parent.data.metrics), rows)


def report(title: str, result: subprocess.CompletedProcess, outcome: SweepOutcome, seconds: float) -> None:
    print(f"\n== {title}: exit {result.returncode}, {seconds:.0f} s\n{outcome.table()}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path,
                        help="folder for the cluster, the store and the sweeps (default: a temp one)")
    parser.add_argument("--only", choices=["sweep", "time-limit", "cancel"], help="only one part")
    parser.add_argument("--long-epochs", type=int, default=LONG_EPOCHS)
    args = parser.parse_args(argv)
    root = (args.root or Path(tempfile.mkdtemp(prefix="fashionbench-slurm-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))  # unwind: the cluster is stopped
    failures = []
    with one_node_cluster(root / "cluster") as cluster:
        print(f"cluster: node {cluster.node}, {cluster.cpus} CPUs, partition {cluster.partition}; "
              f"SLURM_CONF={cluster.conf}\nfashionbench: {CHECKOUT} at {checkout_commit()}", flush=True)
        print(cluster.command("sinfo"), end="")
        if args.only in (None, "sweep"):
            failures += two_job_sweep(cluster, root)
        if args.only in (None, "time-limit"):
            failures += time_limit(cluster, root, args.long_epochs)
        if args.only in (None, "cancel"):
            failures += cancelled_job(cluster, root, args.long_epochs)
        print(f"\nlogs: {root}/sweep-*.log, {root}/cluster/log/; submitit's folders: {root}/sweep-*/.submitit/\n"
              f"fashionbench at the end: {checkout_commit()}")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


def two_job_sweep(cluster: SlurmCluster, root: Path) -> list[str]:
    """Part 1; what went wrong, if anything."""
    started = time.monotonic()
    sweep = root / "sweep-freeze"
    result = run_sweep(cluster, root, sweep, [*launcher_overrides(cluster, timeout_min=10), *TINY_RUN, "freeze=2,4"])
    outcome = sweep_outcome(cluster, root, sweep)
    report("2-job sweep freeze=2,4", result, outcome, time.monotonic() - started)
    if result.returncode == 0 and outcome.parent_status == "FINISHED" and \
            [row.run_status for row in outcome.rows] == ["FINISHED", "FINISHED"]:
        return []
    return [f"the 2-job sweep: exit {result.returncode}, parent {outcome.parent_status}, "
            f"runs {[row.run_status for row in outcome.rows]} (log: {sweep}.log)"]


def time_limit(cluster: SlurmCluster, root: Path, long_epochs: int) -> list[str]:
    """Part 2; what went wrong, if anything."""
    # Without the trunk cache every epoch passes the whole backbone again: many epochs take minutes.
    swept = [*(o for o in TINY_RUN if not o.startswith("train.epochs=")), "freeze=2", "train.cache=false",
             f"train.epochs=1,{long_epochs}"]
    failures = []
    for part, timeout_min in (("cut", 3), ("again", 30)):
        started = time.monotonic()
        sweep = root / f"sweep-time-limit-{part}"
        result = run_sweep(cluster, root, sweep, [*launcher_overrides(cluster, timeout_min, signal_delay_s=30), *swept])
        outcome = sweep_outcome(cluster, root, sweep)
        report(f"train.epochs=1,{long_epochs}, timeout_min={timeout_min}, signal_delay_s=30", result, outcome,
               time.monotonic() - started)
        short, long = outcome.rows
        ended = (result.returncode, outcome.parent_status, short.run_status, long.run_status)
        if part == "cut" and (ended != (0, "FINISHED", "FINISHED", "KILLED")
                              or not long.reason.startswith(TIME_LIMIT_REASON)):
            failures.append(f"the job past its time limit: exit {result.returncode}, parent {outcome.parent_status}, "
                            f"short job {short.run_status}, long job {long.run_status} {long.reason!r} "
                            f"(log: {sweep}.log)")
        if part == "again" and ended != (0, "FINISHED", "skipped", "FINISHED"):
            failures.append(f"the sweep run again: exit {result.returncode}, parent {outcome.parent_status}, short "
                            f"job {short.run_status}, long job {long.run_status} (log: {sweep}.log)")
    return failures


@dataclass(frozen=True)
class CancelledSweep:
    """What a sweep did when one of its jobs was cancelled (``cancelled_sweep``)."""

    exit_code: int | None  # None: still waiting after its timeout (then stopped with SIGTERM)
    slurm_job: str  # the cancelled one
    cancelled_at_s: float  # since the sweep started
    seconds: float  # the sweep's process, start to exit
    log: str  # that process's output
    outcome: SweepOutcome


def wait_for_running_run(root: Path, sweep_dir: Path, job_num: int, run_name: str, process: subprocess.Popen,
                         timeout: float = SWEEP_TIMEOUT_S) -> str:
    """Wait until job ``job_num`` of the sweep has started and its MLflow run (``run_name``) is
    RUNNING; return the SLURM job that runs it. Raises RuntimeError when the sweep's process ends
    first or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    # The job's config, composed in its process, exists only once the sweep has created the store
    # and the parent run: a client's first touch of a fresh SQLite file would race with the sweep's.
    hydra_file = sweep_dir / str(job_num) / ".hydra" / "hydra.yaml"
    query = None
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the sweep ended (exit {process.returncode}) before run {run_name!r} was "
                               f"RUNNING; its last lines:\n{Path(f'{sweep_dir}.log').read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_name!r} not RUNNING after {timeout:.0f} s (log: {sweep_dir}.log)")
        if query is None and hydra_file.exists():
            job = OmegaConf.load(hydra_file).hydra
            parent_id = next(o.split("=", 1)[1].strip("'") for o in job.overrides.task
                             if o.startswith("tracking.parent_run_id="))
            client = MlflowClient(store_uri(root))
            experiment_id = client.get_experiment_by_name("fashionbench").experiment_id
            query = (f"tags.{TAG_SWEEP_ID} = '{parent_id}' and attributes.run_name = '{run_name}' "
                     "and attributes.status = 'RUNNING'")
        if query is not None and client.search_runs([experiment_id], query, max_results=1):
            return str(job.job.id)
        time.sleep(0.5)  # the store is polled: the run may start at any moment


def cancelled_sweep(cluster: SlurmCluster, root: Path, sweep_dir: Path, long_epochs: int,
                    seconds_into_run: float = 0, timeout: float = 300) -> CancelledSweep:
    """A 2-job sweep, ``train.epochs=1,<long_epochs>`` without the trunk cache, whose long job
    is cancelled (``scancel``) once its MLflow run is RUNNING and ``seconds_into_run`` later; wait
    (``timeout`` seconds at most after the cancel) for the sweep's process to exit."""
    swept = [*(o for o in TINY_RUN if not o.startswith("train.epochs=")), "freeze=2", "train.cache=false",
             f"train.epochs=1,{long_epochs}", "tracking.resume=false"]
    started = time.monotonic()
    process = start_sweep(cluster, root, sweep_dir, [*launcher_overrides(cluster, 30), *swept])
    try:
        slurm_id = wait_for_running_run(root, sweep_dir, 1, f"train.epochs={long_epochs}", process)
        if seconds_into_run:
            time.sleep(seconds_into_run)  # into its training (the run starts before the data are loaded)
        cluster.command("scancel", slurm_id)
        cancelled_at = time.monotonic() - started
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
            process.terminate()
            process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    seconds = time.monotonic() - started
    return CancelledSweep(code, slurm_id, cancelled_at, seconds, Path(f"{sweep_dir}.log").read_text(),
                          sweep_outcome(cluster, root, sweep_dir))


def cancelled_job(cluster: SlurmCluster, root: Path, long_epochs: int) -> list[str]:
    """Part 3: SLURM ends a job whose run is training (``scancel``; SLURM does the same at the time
    limit to a job still running after USR2): SIGTERM, then SIGKILL after ``KillWait``. What went
    wrong, if anything: the run must end KILLED, the other job FINISHED, the sweep exit 0."""
    sweep = root / "sweep-cancelled"
    done = cancelled_sweep(cluster, root, sweep, long_epochs, seconds_into_run=20)
    print(f"\n== train.epochs=1,{long_epochs}: scancel {done.slurm_job} at {done.cancelled_at_s:.0f} s "
          f"(its run RUNNING, then 20 s)", flush=True)
    shown = "none (still waiting: stopped with SIGTERM)" if done.exit_code is None else done.exit_code
    print(f"the sweep's process: exit {shown}, {done.seconds:.0f} s; its last lines:")
    print("\n".join("  " + line for line in done.log.splitlines()[-6:]))
    print(done.outcome.table(), flush=True)
    short, long = done.outcome.rows
    if (done.exit_code, done.outcome.parent_status, short.run_status, long.run_status) == (
            0, "FINISHED", "FINISHED", "KILLED") and long.reason.startswith("Terminated") and \
            "UncompletedJobError" not in done.log:
        return []
    return [f"the cancelled job: exit {done.exit_code}, parent {done.outcome.parent_status}, short job "
            f"{short.run_status}, long job {long.run_status} {long.reason!r} (log: {sweep}.log)"]


if __name__ == "__main__":
    sys.exit(main())
