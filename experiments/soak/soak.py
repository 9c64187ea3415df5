"""Soak test of parallel sweeps: real `python -m fashionbench.run` processes, real stores, real faults.

    python experiments/soak/soak.py                           # every scenario, 3 repetitions
    python experiments/soak/soak.py --scenarios a,c --repetitions 1 --jobs 4

Each scenario runs tiny sweeps (the tests' TINY_RUN, ``tracking.log_model=false``, ``freeze``
swept) and counts what the store holds afterwards, job by job:

  a  a 4-job joblib sweep into an `mlflow server` on SQLite, N repetitions
  b  the same into an `mlflow server` on PostgreSQL (a private postgres started here)
  c  4 single `python -m fashionbench.run` processes started at once on one fresh SQLite file, N repetitions
  d  scenario a with one joblib worker SIGKILLed after its run started; then the next command
     (`fashionbench.promote`) reaps orphans
  e  scenario a with the mlflow server stopped (SIGTERM) and started again mid-sweep

Every repetition logs into its own experiment (``soak-<scenario>-<n>``), so that every job really
runs (no ``tracking.resume`` skips) and every repetition starts with no dataset in its experiment.
Everything (stores, caches, sweep folders, logs) lives in one temporary folder; servers listen on
127.0.0.1 on free ports and are stopped by process id. Every wait is for an event (a port
answering, a run appearing, a process exiting) with a deadline.

Prints a Markdown table and, below it, the reason of every run that did not finish. Exits 1 when a
job has no run (lost), a job has more than one run (duplicated), or a FAILED run has no reason.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# The tests' tiny run (tests/conftest.py TINY_RUN), without the model upload.
TINY_RUN = [
    "data.image_size=32", "data.scale=0.01", "data.min_per_split=3", "train.epochs=1", "train.batch_size=16",
    "users.n_users=6", "users.items_per_user=40", "users.favourite_threshold=3", "eval.k=2", "model.weights=null",
    "tracking.log_model=false",
]
SCENARIOS = "abcde"
# Why a run did not finish: fashionbench's `error` tag (fashionbench.artifacts.TAG_ERROR: the
# exception of a FAILED run, the signal of a KILLED one, "orphaned: ..." for a reaped one) and
# MLflow's own note.
REASON_TAGS = ("error", "mlflow.note.content")
# A client that loses the server retries (MLflow's defaults, stated so the soak does not depend on
# them): 7 retries with backoff factor 2 wait about four minutes in all, far longer than a restart.
HTTP_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "7", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "2",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
PG_BIN = Path(os.environ.get("SOAK_PG_BIN", "/usr/lib/postgresql/15/bin"))
POLL_SECONDS = 0.5  # how often a wait for an event looks again


class SoakError(RuntimeError):
    """A wait for an event ran past its deadline, or a helper process could not start."""


def wait_for(what: str, seconds: float, ready, alive: subprocess.Popen | None = None, log: Path | None = None):
    """Return ``ready()``'s first truthy value; raise SoakError naming ``what`` past ``seconds``, or
    at once when the ``alive`` process it depends on has exited (with the end of its ``log``)."""
    deadline = time.monotonic() + seconds
    while True:
        value = ready()
        if value:
            return value
        if alive is not None and alive.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise SoakError(f"{what}: the process {alive.pid} exited ({alive.returncode}) first\n{tail}")
        if time.monotonic() > deadline:
            raise SoakError(f"{what}: not within {seconds:.0f} s")
        time.sleep(POLL_SECONDS)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


def stop_group(process: subprocess.Popen, seconds: float = 30) -> None:
    """SIGTERM the process group ``process`` leads, SIGKILL it if it has not exited in ``seconds``."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the (command name)


def descends_from(pid: int, ancestor: int) -> bool:
    while pid and pid != 1:
        pid = parent_pid(pid) or 0
        if pid == ancestor:
            return True
    return False


# ---------------------------------------------------------------------------------------------------
# Servers


class MlflowServer:
    """`mlflow server` on 127.0.0.1:<free port>, artifacts under ``root``; restartable on the same port."""

    def __init__(self, root: Path, backend: str, workers: int) -> None:
        self.root, self.backend, self.workers = root, backend, workers
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> float:
        """Start it and wait until /health answers; return the seconds that took."""
        started = time.monotonic()
        self.starts += 1
        with self.log.open("a") as log:
            log.write(f"\n=== start {self.starts} ===\n")
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", str(self.workers), "--backend-store-uri", self.backend,
                 "--artifacts-destination", str(self.root / "artifacts")],
                cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
        wait_for(f"mlflow server {self.uri} answers", 180, lambda: answers(f"{self.uri}/health"),
                 self.process, self.log)
        return time.monotonic() - started

    def stop(self) -> None:
        if self.process is not None:
            stop_group(self.process)


def postgres_installed() -> bool:
    return all((PG_BIN / name).exists() for name in ("initdb", "pg_ctl", "createdb", "postgres"))


class Postgres:
    """A private PostgreSQL in a temporary folder (removed by ``stop``): its data folder owned by
    ``postgres``, 127.0.0.1 on a free port, its unix socket in that folder. initdb and postgres
    refuse to run as root: as root they run as the ``postgres`` user (runuser)."""

    def __init__(self) -> None:
        # Its own temporary folder: every folder above the data must be open to the postgres user,
        # and a test's tmp_path (under /tmp/pytest-of-<user>, 0700) is not.
        self.root = Path(tempfile.mkdtemp(prefix="fashionbench-soak-postgres-"))
        self.root.chmod(0o711)
        self.data, self.sockets = self.root / "data", self.root / "sockets"
        self.port = free_port()
        self.pid: int | None = None

    def _as_postgres(self, *command: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)

    def _run(self, *command: str) -> None:
        result = subprocess.run(self._as_postgres(*command), capture_output=True, text=True, timeout=120)
        if result.returncode:
            raise SoakError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr[-2000:]}")

    def start(self, database: str) -> str:
        """initdb, start it, create ``database``; return its SQLAlchemy URI (psycopg 3)."""
        if not postgres_installed():
            raise SoakError(f"no PostgreSQL binaries in {PG_BIN} (apt-get install postgresql, or set SOAK_PG_BIN)")
        self.sockets.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-w",
                  "-t", "120", "-o", f"-h 127.0.0.1 -p {self.port} -k {self.sockets}", "start")
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        self._run(str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", database)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        """Stop it (``pg_ctl stop -m fast``; SIGKILL to its pid if that fails) and remove its folder."""
        if self.pid is not None:
            try:
                self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
            except (SoakError, subprocess.TimeoutExpired):
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.pid = None
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# Counting what the store holds


@dataclass
class Outcome:
    """What one scenario left in its stores, summed over its repetitions."""

    scenario: str
    expected: int = 0
    statuses: Counter = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)  # "rep 2 freeze=3"
    duplicated: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # one line per run that did not finish
    unexplained_failures: int = 0
    parents: list[str] = field(default_factory=list)  # each repetition's sweep parent status
    notes: list[str] = field(default_factory=list)  # what the fault did, hints for lost jobs
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.lost and not self.duplicated and not self.unexplained_failures


def job_runs(uri: str, experiment: str) -> tuple[list, list]:
    """The experiment's job runs and its sweep parent runs."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return [], []
    runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [run for run in runs if run.data.tags.get("sweep") == "parent"]
    return [run for run in runs if run.data.tags.get("sweep") != "parent"], parents


def reason(run) -> str:
    tags = run.data.tags
    found = [f"{name}={tags[name]!s}" for name in REASON_TAGS if tags.get(name)]
    return "; ".join(found).replace("\n", " ").replace("|", "/")


def count(outcome: Outcome, label: str, uri: str, experiment: str, jobs: list[str]) -> None:
    """Add one repetition's runs to ``outcome``: ``jobs`` are the run names the jobs should have."""
    runs, parents = job_runs(uri, experiment)
    outcome.expected += len(jobs)
    by_job = Counter(run.info.run_name for run in runs)
    outcome.lost += [f"{label} {job}" for job in jobs if not by_job[job]]
    outcome.duplicated += [f"{label} {job} ({by_job[job]} runs)" for job in jobs if by_job[job] > 1]
    outcome.duplicated += [f"{label} unexpected run {name!r}" for name in by_job if name not in jobs]
    outcome.parents += [f"{label} {parent.info.status}" for parent in parents]
    for run in runs:
        outcome.statuses[run.info.status] += 1
        if run.info.status != "FINISHED":
            why = reason(run)
            outcome.reasons.append(f"{label} {run.info.run_name} {run.info.status}: {why or '(no reason recorded)'}")
            if run.info.status == "FAILED" and not why:
                outcome.unexplained_failures += 1


def statuses_now(uri: str, experiment: str) -> str:
    runs, parents = job_runs(uri, experiment)
    jobs = ", ".join(f"{run.info.run_name} {run.info.status}" for run in sorted(runs, key=lambda r: r.info.run_name))
    return jobs + "".join(f"; parent {parent.info.status}" for parent in parents)


# ---------------------------------------------------------------------------------------------------
# Running the commands


class Soak:
    """The scenarios, run under ``root`` with ``jobs`` jobs (or processes) at once; one sweep or
    process may take ``sweep_seconds`` before it is stopped and counted as it stands."""

    def __init__(self, root: Path, jobs: int, server_workers: int, sweep_seconds: float) -> None:
        self.root, self.jobs, self.server_workers, self.sweep_seconds = root, jobs, server_workers, sweep_seconds
        caches = root / "caches"  # shared by every scenario, as one user's machine shares them
        self.env = {**os.environ, "HYDRA_FULL_ERROR": "0", "TF_CPP_MIN_LOG_LEVEL": "3",
                    "FASHIONBENCH_CACHE_DIR": str(caches / "trunk"),
                    "FASHIONBENCH_DATA_STORE": str(caches / "catalogues"), "KERAS_HOME": str(caches / "keras"),
                    **HTTP_RETRIES}
        self.env.pop("MLFLOW_TRACKING_URI", None)

    @property
    def freezes(self) -> list[str]:
        return [str(i) for i in range(1, self.jobs + 1)]

    def job_names(self) -> list[str]:
        return [f"freeze={f}" for f in self.freezes]  # a sweep job's run name (pipeline.jobs.name_job)

    def start_sweep(self, folder: Path, uri: str, experiment: str) -> tuple[subprocess.Popen, Path]:
        folder.mkdir(parents=True)
        log = folder / "sweep.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "fashionbench.run", "-m", "hydra/launcher=joblib",
                 f"hydra.launcher.n_jobs={self.jobs}", "tracking=server", f"tracking.uri={uri}",
                 f"tracking.experiment_name={experiment}", f"freeze={','.join(self.freezes)}", *TINY_RUN],
                cwd=folder, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        return process, log

    def finish(self, process: subprocess.Popen, log: Path, outcome: Outcome, label: str) -> None:
        """Wait for a command to exit (its deadline: ``sweep_seconds``); note a non-zero exit and the
        lines of its log that say a job failed."""
        try:
            process.wait(timeout=self.sweep_seconds)
        except subprocess.TimeoutExpired:
            stop_group(process)
            outcome.notes.append(f"{label}: still running after {self.sweep_seconds:.0f} s, stopped")
        if process.returncode:
            outcome.notes.append(f"{label}: exit status {process.returncode}")
        for line in log.read_text(errors="replace").splitlines():
            if "job failed" in line or "fashionbench.run failed" in line or "Error" in line[:80]:
                outcome.notes.append(f"{label} log: {line.strip()[:300]}")

    def sweeps(self, name: str, server: MlflowServer, repetitions: int, fault=None) -> Outcome:
        outcome = Outcome(name)
        for rep in range(1, repetitions + 1):
            experiment, label = f"soak-{name[0]}-{rep}", f"rep {rep}"
            process, log = self.start_sweep(self.root / name[0] / f"rep-{rep}", server.uri, experiment)
            try:
                if fault:
                    try:
                        fault(process, log, server, experiment, outcome, label)
                    except SoakError as error:
                        outcome.notes.append(f"{label}: fault not injected: {error}")
                self.finish(process, log, outcome, label)
            finally:
                stop_group(process)
            if fault == self.kill_a_worker:  # the next command: what reaps the killed worker's orphaned run
                outcome.notes.append(f"{label} after the sweep: {statuses_now(server.uri, experiment)}")
                self.next_command(server.uri, experiment, outcome, label)
                outcome.notes.append(f"{label} after the next command: {statuses_now(server.uri, experiment)}")
            count(outcome, label, server.uri, experiment, self.job_names())
        return outcome

    def next_command(self, uri: str, experiment: str, outcome: Outcome, label: str) -> None:
        result = subprocess.run([sys.executable, "-m", "fashionbench.promote", "--tracking-uri", uri,
                                 "--experiment", experiment], cwd=self.root, env=self.env, capture_output=True,
                                text=True, timeout=300)
        reaped = [line.strip() for line in result.stderr.splitlines() if "orphaned" in line]
        outcome.notes.append(f"{label} `fashionbench.promote` (exit {result.returncode}): "
                             + (reaped[0][:300] if reaped else "reaped nothing"))

    def all_jobs_started(self, uri: str, experiment: str) -> list | None:
        """The RUNNING runs, once every job has a run (some may already have failed) and one is RUNNING."""
        runs, _ = job_runs(uri, experiment)
        running = [run for run in runs if run.info.status == "RUNNING"]
        return running if len(runs) >= self.jobs and running else None

    def with_server(self, name: str, backend: str, repetitions: int, fault=None) -> Outcome:
        folder = self.root / name[0]
        folder.mkdir(parents=True, exist_ok=True)
        server = MlflowServer(folder, backend, self.server_workers)
        try:
            start = server.start()
            outcome = self.sweeps(name, server, repetitions, fault)
            outcome.notes.insert(0, f"server started in {start:.1f} s")
        finally:
            server.stop()
        return outcome

    def scenario_a(self, repetitions: int) -> Outcome:
        folder = self.root / "a"
        return self.with_server(f"a. {self.jobs} joblib jobs -> mlflow server (SQLite)",
                                f"sqlite:///{folder / 'server.db'}", repetitions)

    def scenario_b(self, repetitions: int) -> Outcome:
        name = f"b. {self.jobs} joblib jobs -> mlflow server (PostgreSQL 15)"
        postgres = Postgres()
        try:
            started = time.monotonic()
            backend = postgres.start("mlflow")
            took = time.monotonic() - started
            outcome = self.with_server(name, backend, repetitions)
            outcome.notes.insert(0, f"postgres initdb + start + createdb: {took:.1f} s")
            return outcome
        finally:
            postgres.stop()

    def scenario_c(self, repetitions: int) -> Outcome:
        outcome = Outcome(f"c. {self.jobs} processes at once -> one fresh SQLite file")
        for rep in range(1, repetitions + 1):
            folder, label = self.root / "c" / f"rep-{rep}", f"rep {rep}"
            folder.mkdir(parents=True)
            uri, experiment = f"sqlite:///{folder / 'mlflow.db'}", "soak-c"
            names = [f"c-{rep}-job-{i}" for i in range(self.jobs)]
            processes = []
            for i, run_name in enumerate(names):
                log = folder / f"job-{i}.log"
                with log.open("w") as out:
                    processes.append((subprocess.Popen(
                        [sys.executable, "-m", "fashionbench.run", f"tracking.uri={uri}",
                         f"tracking.experiment_name={experiment}", f"run_name={run_name}", f"seed={i}",
                         f"hydra.run.dir={folder / f'outputs-{i}'}", *TINY_RUN],
                        cwd=folder, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True),
                        log))
            for i, (process, log) in enumerate(processes):
                try:
                    self.finish(process, log, outcome, f"{label} job {i}")
                finally:
                    stop_group(process)
            count(outcome, label, uri, experiment, names)
        return outcome

    def scenario_d(self, repetitions: int) -> Outcome:
        folder = self.root / "d"
        return self.with_server("d. as a, one joblib worker SIGKILLed", f"sqlite:///{folder / 'server.db'}",
                                repetitions, self.kill_a_worker)

    def scenario_e(self, repetitions: int) -> Outcome:
        folder = self.root / "e"
        return self.with_server("e. as a, mlflow server restarted mid-sweep", f"sqlite:///{folder / 'server.db'}",
                                repetitions, self.restart_server)

    def kill_a_worker(self, sweep: subprocess.Popen, log: Path, server: MlflowServer, experiment: str,
                      outcome: Outcome, label: str) -> None:
        """Once every job has a run, SIGKILL the joblib worker (a process under the sweep's)
        whose pid the first RUNNING one recorded."""
        running = wait_for(f"{label}: every job's run started", self.sweep_seconds,
                           lambda: self.all_jobs_started(server.uri, experiment), sweep, log)
        victim = sorted(running, key=lambda run: run.info.run_name)[0]
        pid = int(victim.data.tags["pid"])
        if not descends_from(pid, sweep.pid):
            raise SoakError(f"{label}: run {victim.info.run_name}'s pid {pid} is not a worker of the sweep {sweep.pid}")
        os.kill(pid, signal.SIGKILL)
        wait_for(f"{label}: worker {pid} gone", 30, lambda: parent_pid(pid) is None or _zombie(pid))
        outcome.notes.append(f"{label}: SIGKILL to joblib worker {pid} (parent {parent_pid(pid) or '-'}), "
                             f"running {victim.info.run_name}")

    def restart_server(self, sweep: subprocess.Popen, log: Path, server: MlflowServer, experiment: str,
                       outcome: Outcome, label: str) -> None:
        """Once every job has a run, stop the server (SIGTERM to its process group, wait for it to
        exit) and start it again on the same port and store."""
        wait_for(f"{label}: every job's run started", self.sweep_seconds,
                 lambda: self.all_jobs_started(server.uri, experiment), sweep, log)
        stopped = time.monotonic()
        server.stop()
        seconds = server.start()
        outcome.notes.append(f"{label}: server stopped and started again; down {time.monotonic() - stopped:.1f} s "
                             f"(start {seconds:.1f} s)")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def table(outcomes: list[Outcome]) -> str:
    lines = ["| scenario | runs expected | FINISHED | FAILED | KILLED | RUNNING (left open) | lost | duplicated "
             "| sweep parents | seconds |", "|---|---|---|---|---|---|---|---|---|---|"]
    for o in outcomes:
        parents = ", ".join(f"{n} {s}" for s, n in Counter(p.split()[-1] for p in o.parents).items()) or "-"
        lines.append(f"| {o.scenario} | {o.expected} | {o.statuses['FINISHED']} | {o.statuses['FAILED']} | "
                     f"{o.statuses['KILLED']} | {o.statuses['RUNNING']} | {len(o.lost)} | {len(o.duplicated)} | "
                     f"{parents} | {o.seconds:.0f} |")
    lines.append("")
    for o in outcomes:
        details = ([f"not finished: {r}" for r in o.reasons] + [f"lost: {r}" for r in o.lost]
                   + [f"duplicated: {r}" for r in o.duplicated] + o.notes)
        if details:
            lines.append(f"{o.scenario}:")
            lines += [f"  - {d}" for d in details]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated, of a,b,c,d,e")
    parser.add_argument("--repetitions", type=int, default=3, help="sweeps per scenario a, b, c (d, e: 1)")
    parser.add_argument("--jobs", type=int, default=4, help="parallel jobs per sweep (and processes in c)")
    parser.add_argument("--server-workers", type=int, default=1, help="mlflow server --workers")
    parser.add_argument("--sweep-seconds", type=float, default=1200, help="deadline for one sweep")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and say where it is")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if unknown := [s for s in chosen if s not in SCENARIOS]:
        parser.error(f"--scenarios: unknown {unknown}; choose from {','.join(SCENARIOS)}")

    root = Path(tempfile.mkdtemp(prefix="fashionbench-soak-"))
    soak = Soak(root, args.jobs, args.server_workers, args.sweep_seconds)
    outcomes = []
    try:
        for scenario in chosen:
            repetitions = args.repetitions if scenario in "abc" else 1
            started = time.monotonic()
            print(f"scenario {scenario} ({repetitions} repetition(s)) ...", file=sys.stderr, flush=True)
            try:
                outcome = getattr(soak, f"scenario_{scenario}")(repetitions)
            except SoakError as error:
                outcome = Outcome(f"{scenario}. (did not run)", notes=[f"soak error: {error}"])
                outcome.lost.append("the whole scenario")
            outcome.seconds = time.monotonic() - started
            print(f"scenario {scenario}: {outcome.seconds:.0f} s", file=sys.stderr, flush=True)
            outcomes.append(outcome)
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(table(sorted(outcomes, key=lambda o: o.scenario)))
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
