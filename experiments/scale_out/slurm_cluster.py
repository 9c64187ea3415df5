"""A one-node SLURM cluster on this machine, in one folder, for trying ``hydra/launcher=slurm``.

``one_node_cluster(root)`` starts a MUNGE daemon with a key of its own, ``slurmctld`` and ``slurmd``
(Debian's ``slurm-wlm`` and ``munge`` packages; SLURM 22.05 on bookworm) with everything they write
under ``root``: the key, the sockets, the state, the spool, the pid files and the logs. Nothing
system-wide is used (not ``/etc/slurm``, not ``/etc/munge``, not ``/run/munge``): every client
command finds the cluster through ``SLURM_CONF``, which ``SlurmCluster.env`` sets. It must run as
root (``SlurmUser=root``: the jobs run as the user who submits them, and slurmd must be root to
start them).

SLURM's accounting database (slurmdbd, with MySQL) is not run, so the real ``sacct`` only answers
"Slurm accounting storage is disabled". submitit asks ``sacct`` for the state of its jobs; without an
answer it learns that a job ended only from the result file the job writes, and a job that dies
before writing one (cancelled, or killed past its time limit) leaves the sweep waiting for ever.
The cluster therefore puts a small ``sacct`` of its own first on ``PATH`` (in ``root/bin``): it
answers submitit's one question (``sacct -o JobID,State,NodeList --parsable2 -j <id>``) from
``scontrol show job``, which keeps an ended job for ``FINISHED_JOBS_KEPT_S`` (``MinJobAge``).

    python experiments/scale_out/slurm_cluster.py /tmp/slurm     # start one; prints SLURM_CONF=...
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

PARTITION = "debug"
START_TIMEOUT_S = 90.0  # the daemons up and the node idle; slurmd registers within seconds here
STOP_TIMEOUT_S = 15.0  # SIGTERM to SIGKILL
FINISHED_JOBS_KEPT_S = 600  # MinJobAge: how long scontrol still shows an ended job
KILL_WAIT_S = 10  # KillWait: SIGTERM to SIGKILL for a job past its time limit or cancelled
MEMORY_MARGIN = 0.8  # of what slurmd -C measures: the machine is shared


UNFINISHED_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED"}


class ClusterError(RuntimeError):
    """The cluster could not be started (a daemon exited, or the node was not idle in time)."""


@dataclass(frozen=True)
class SlurmCluster:
    """A running one-node cluster: its folder, config, node and partition, and the environment
    every SLURM client (sbatch, squeue, scontrol, submitit) must run with."""

    root: Path
    conf: Path
    node: str
    partition: str
    cpus: int
    memory_mb: int
    env: Mapping[str, str]

    def command(self, *args: str, timeout: float = 30) -> str:
        """Run a SLURM client command against this cluster and return its output; raises
        ``subprocess.CalledProcessError`` (with its stderr) when it fails."""
        return subprocess.run(list(args), env=dict(self.env), capture_output=True, text=True, check=True,
                              timeout=timeout).stdout

    def job_states(self) -> dict[str, dict[str, str]]:
        """Every job slurmctld still knows (running, or ended less than ``MinJobAge`` ago): by job id
        (``12`` or, in an array, ``12_0``), ``scontrol``'s fields (``JobState``, ``Reason``,
        ``RunTime``, ``TimeLimit``, ``ExitCode``, ``NodeList``...)."""
        return scontrol_jobs(self.command("scontrol", "-o", "show", "job"))

    def wait_until_ended(self, job_ids: list[str], seconds: float = 60) -> dict[str, dict[str, str]]:
        """``job_states()`` once none of ``job_ids`` is pending, running or completing (a job's
        processes may still be exiting after it wrote its result), or after ``seconds``."""
        deadline = time.monotonic() + seconds
        while True:
            jobs = self.job_states()
            if time.monotonic() > deadline or not any(
                    jobs.get(job, {}).get("JobState") in UNFINISHED_STATES for job in job_ids):
                return jobs
            time.sleep(1)


def scontrol_jobs(text: str) -> dict[str, dict[str, str]]:
    """``scontrol -o show job``'s records by job id (``12``, or ``12_0`` for a task of an array)."""
    jobs: dict[str, dict[str, str]] = {}
    for record in text.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", record))
        if "JobId" not in fields:
            continue
        array, task = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
        jobs[f"{array}_{task}" if array and task and task.isdigit() else fields["JobId"]] = fields
    return jobs


def sacct(argv: list[str]) -> int:
    """What ``sacct -o <fields> --parsable2 -j <id> [-j <id>...]`` prints, from ``scontrol`` (no
    accounting database here): a header and a line per job or array task of the ids, ``|``-separated;
    ``JobID``, ``State`` and ``NodeList`` are filled, other fields empty."""
    parser = argparse.ArgumentParser(prog="sacct")
    parser.add_argument("-o", "--format", default="JobID,State,NodeList")
    parser.add_argument("-j", "--jobs", action="append", default=[])
    parser.add_argument("--parsable2", "-P", action="store_true")
    args, _ = parser.parse_known_args(argv)
    fields = args.format.split(",")
    ids = {job.split("_")[0] for jobs in args.jobs for job in jobs.split(",")}
    found = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True)
    if found.returncode != 0:
        sys.stderr.write(found.stderr)
        return found.returncode
    names = {"JobID": None, "State": "JobState", "NodeList": "NodeList"}
    print("|".join(fields))
    for job_id, record in scontrol_jobs(found.stdout).items():
        if job_id.split("_")[0] in ids:
            print("|".join(job_id if field == "JobID" else record.get(names.get(field) or field, "")
                           for field in fields))
    return 0


def write_sacct(root: Path) -> Path:
    """``root/bin/sacct``: ``sacct()`` above, with this Python; return the folder to put first on PATH."""
    folder = root / "bin"
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / "sacct"
    program.write_text(f"#!{sys.executable}\n# sacct from scontrol: no accounting database here "
                       f"(experiments/scale_out/slurm_cluster.py)\nimport sys\nsys.path.insert(0, "
                       f"{str(Path(__file__).resolve().parent)!r})\nfrom slurm_cluster import sacct\n"
                       "sys.exit(sacct(sys.argv[1:]))\n")
    program.chmod(0o755)
    return folder


def node_hardware() -> tuple[str, int, int]:
    """This machine as slurmd sees it: node name (``hostname -s``), CPUs, memory in MB."""
    found = dict(re.findall(r"(\w+)=(\S+)", subprocess.run(["slurmd", "-C"], capture_output=True, text=True,
                                                           check=True).stdout))
    return found["NodeName"], int(found["CPUs"]), int(found["RealMemory"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(root: Path, node: str, cpus: int, memory_mb: int, partition: str) -> Path:
    """``root/slurm.conf`` for one node on 127.0.0.1 (and an empty plugstack, so that the system's
    is not read); return its path."""
    for folder in ("state", "spool", "log", "run"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    plugstack = root / "plugstack.conf"
    plugstack.write_text("")
    conf = root / "slurm.conf"
    conf.write_text(f"""\
# A one-node cluster on 127.0.0.1, written by experiments/scale_out/slurm_cluster.py
ClusterName=fashionbench
SlurmctldHost={node}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root / 'munge' / 'munge.socket'}
StateSaveLocation={root / 'state'}
SlurmdSpoolDir={root / 'spool'}
SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}
SlurmdPidFile={root / 'run' / 'slurmd.pid'}
SlurmctldLogFile={root / 'log' / 'slurmctld.log'}
SlurmdLogFile={root / 'log' / 'slurmd.log'}
PlugStackConfig={plugstack}
# No cgroups (containers, shared machines): processes tracked by parentage, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={memory_mb // cpus}
ReturnToService=2
MinJobAge={FINISHED_JOBS_KEPT_S}
KillWait={KILL_WAIT_S}
InactiveLimit=0
SlurmctldDebug=info
SlurmdDebug=info
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _start(command: list[str], log: Path, env: Mapping[str, str]) -> subprocess.Popen:
    """A daemon in the foreground, in a session of its own (a Ctrl-C to the caller does not reach it)."""
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env), start_new_session=True)


def _wait_for(what: str, ready, daemons: Mapping[str, tuple[subprocess.Popen, Path]], seconds: float) -> None:
    """Poll ``ready()`` until it is true; raise ClusterError, with the logs' ends, when a daemon exits
    or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        for name, (process, log) in daemons.items():
            if process.poll() is not None:
                raise ClusterError(f"{name} exited ({process.returncode}) before {what}:\n{_tail(log)}")
        if ready():
            return
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {name}\n{_tail(log)}" for name, (_, log) in daemons.items())
            raise ClusterError(f"not {what} after {seconds:.0f} s:\n{logs}")
        time.sleep(0.2)


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def _succeeds(command: list[str], env: Mapping[str, str], expect: str = "") -> bool:
    try:
        done = subprocess.run(command, env=dict(env), capture_output=True, text=True, timeout=10)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0 and expect in done.stdout


def _stop(process: subprocess.Popen, seconds: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, then SIGKILL when it has not exited after ``seconds``."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait (blocked) until the block ends, then arrive as usual."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _cancel_all_jobs(cluster: SlurmCluster, seconds: float) -> None:
    """Cancel what still runs and wait (bounded) until no job holds the node: slurmstepd, which runs
    a job, is slurmd's child only until it detaches, so stopping slurmd would not stop it."""
    try:
        cluster.command("scancel", "--full", f"--partition={cluster.partition}")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and cluster.command("squeue", "-h", "-t", "R,CG,PD", "-o", "%i").strip():
            time.sleep(0.5)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        pass  # slurmctld is gone already: nothing to ask


@contextmanager
def one_node_cluster(root: Path, partition: str = PARTITION,
                     start_timeout: float = START_TIMEOUT_S) -> Iterator[SlurmCluster]:
    """Start MUNGE, slurmctld and slurmd with every file under ``root`` and yield the running
    cluster once its node is idle; on leaving, cancel its jobs and stop the daemons (SIGTERM, then
    SIGKILL). Raises ClusterError when a daemon exits or the node is not idle in
    ``start_timeout`` seconds, FileNotFoundError when the SLURM or MUNGE programs are missing."""
    for program in ("munged", "slurmctld", "slurmd", "sbatch"):
        if shutil.which(program) is None:
            raise FileNotFoundError(f"{program} is not installed (apt-get install slurm-wlm munge)")
    root = Path(root).resolve()
    node, cpus, memory = node_hardware()
    memory_mb = int(memory * MEMORY_MARGIN)
    munge = root / "munge"
    munge.mkdir(parents=True, exist_ok=True)
    munge.chmod(0o711)  # munged refuses a key or socket folder others can write; clients need x
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    conf = write_config(root, node, cpus, memory_mb, partition)
    env = {**os.environ, "SLURM_CONF": str(conf),
           "PATH": f"{write_sacct(root)}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("SLURM_JOB_ID", None)  # not inside another cluster's job
    socket_path = munge / "munge.socket"
    cluster = SlurmCluster(root, conf, node, partition, cpus, memory_mb, env)
    daemons: dict[str, tuple[subprocess.Popen, Path]] = {}
    stack = ExitStack()
    try:
        # Stopped in the reverse order of starting: slurmd, slurmctld, munged.
        log = root / "log" / "munged.log"
        daemons["munged"] = (_start(["munged", "--foreground", "--force", f"--socket={socket_path}",
                                     f"--key-file={key}", f"--log-file={log}", f"--pid-file={munge / 'munged.pid'}",
                                     f"--seed-file={munge / 'munged.seed'}"], root / "log" / "munged.out", env), log)
        stack.callback(_stop, daemons["munged"][0])
        _wait_for("MUNGE answered", lambda: _succeeds(
            ["sh", "-c", f"munge -n -S '{socket_path}' | unmunge -S '{socket_path}'"], env, "STATUS"), daemons,
            start_timeout)
        log = root / "log" / "slurmctld.log"
        daemons["slurmctld"] = (_start(["slurmctld", "-D", "-c", "-f", str(conf)], root / "log" / "slurmctld.out",
                                       env), log)
        stack.callback(_stop, daemons["slurmctld"][0])
        _wait_for("slurmctld answered", lambda: _succeeds(["scontrol", "ping"], env, "is UP"), daemons,
                  start_timeout)
        log = root / "log" / "slurmd.log"
        daemons["slurmd"] = (_start(["slurmd", "-D", "-f", str(conf), "-N", node], root / "log" / "slurmd.out", env),
                             log)
        stack.callback(_stop, daemons["slurmd"][0])
        stack.callback(_cancel_all_jobs, cluster, STOP_TIMEOUT_S + KILL_WAIT_S)
        _wait_for(f"node {node} idle", lambda: _succeeds(["sinfo", "-h", "-N", "-n", node, "-o", "%t"], env, "idle"),
                  daemons, start_timeout)
        yield cluster
    finally:
        with _signals_held():  # a second Ctrl-C or SIGTERM must not cut the stopping short
            stack.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Start a one-node SLURM cluster until Ctrl-C.")
    parser.add_argument("root", type=Path, help="folder for its config, key, state and logs (created)")
    parser.add_argument("--partition", default=PARTITION)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))  # stop the daemons on SIGTERM too
    with one_node_cluster(args.root, args.partition) as cluster:
        print(f"node {cluster.node} idle: {cluster.cpus} CPUs, {cluster.memory_mb} MB, partition "
              f"{cluster.partition}\nin another shell:\n  export SLURM_CONF={cluster.conf} "
              f"PATH={cluster.root / 'bin'}:$PATH\n  sinfo; squeue\n"
              "Ctrl-C stops it", flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
