"""``hydra/launcher=slurm`` against a real SLURM scheduler: slurmctld, slurmd and MUNGE started in
the test's temp dir (experiments/scale_out/slurm_cluster.py), a 2-job sweep of tiny runs through
sbatch, into a SQLite store; and one whose long job is cancelled (scancel) while its run is
RUNNING. Needs root and Debian's slurm-wlm and munge packages."""

import importlib
import os
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from fashionbench.artifacts import HEADLINE_METRIC, TAG_ERROR, TAG_PID, TAG_SWEEP, TAG_SWEEP_ID
from tests.conftest import TINY_RUN

SCALE_OUT = Path(__file__).resolve().parents[1] / "experiments" / "scale_out"

pytestmark = pytest.mark.slow


@pytest.fixture
def scale_out(monkeypatch):
    """The experiment's two modules, imported as the script imports them (from their folder)."""
    if shutil.which("slurmctld") is None:
        pytest.skip("SLURM is not installed (apt-get install slurm-wlm munge): no slurmctld on PATH")
    monkeypatch.syspath_prepend(str(SCALE_OUT))
    return importlib.import_module("slurm_cluster"), importlib.import_module("slurm_sweep")


def alive(pid_file: Path) -> bool:
    if not pid_file.exists():
        return False
    try:
        os.kill(int(pid_file.read_text().split()[0]), 0)
    except (ProcessLookupError, ValueError):
        return False
    return True


def test_a_slurm_sweep_runs_each_job_as_a_slurm_array_task_and_every_run_finishes(tmp_path, scale_out):
    slurm_cluster, slurm_sweep = scale_out
    sweep_dir = tmp_path / "sweep"
    with slurm_cluster.one_node_cluster(tmp_path / "cluster") as cluster:
        result = slurm_sweep.run_sweep(cluster, tmp_path, sweep_dir,
                                       [*slurm_sweep.launcher_overrides(cluster, timeout_min=10), *TINY_RUN,
                                        "freeze=2,4"], timeout=600)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        job_ids = sorted(str(OmegaConf.load(p).hydra.job.id) for p in sweep_dir.glob("*/.hydra/hydra.yaml"))
        # The sweep ends once submitit has the jobs' results; SLURM records them COMPLETED once their
        # processes have exited, a moment later.
        slurm_jobs = cluster.wait_until_ended(job_ids)
        outcome = slurm_sweep.sweep_outcome(cluster, tmp_path, sweep_dir)
    pid_files = [*(tmp_path / "cluster" / "run").glob("*.pid"), tmp_path / "cluster" / "munge" / "munged.pid"]
    assert not [p.name for p in pid_files if alive(p)]  # slurmctld, slurmd and munged are stopped

    client = MlflowClient(slurm_sweep.store_uri(tmp_path))
    runs = client.search_runs([client.get_experiment_by_name("fashionbench").experiment_id],
                              order_by=["params.freeze ASC"])
    (parent,) = [r for r in runs if r.data.tags.get(TAG_SWEEP) == "parent"]
    jobs = [r for r in runs if r.data.tags.get(TAG_SWEEP_ID) == parent.info.run_id]
    assert [(j.data.params["freeze"], j.info.status) for j in jobs] == [("2", "FINISHED"), ("4", "FINISHED")]
    assert all(HEADLINE_METRIC in j.data.metrics for j in jobs)
    assert parent.info.status == "FINISHED"
    assert (parent.data.metrics["sweep/runs"], parent.data.metrics["sweep/runs_finished"]) == (2, 2)
    pids = {j.data.tags[TAG_PID] for j in jobs}
    assert len(pids) == 2 and parent.data.tags[TAG_PID] not in pids  # each job in a process of its own

    # Each job was a task of one SLURM array job that sbatch submitted, and SLURM saw it complete.
    array = job_ids[0].split("_")[0]
    assert job_ids == [f"{array}_0", f"{array}_1"]
    assert [slurm_jobs[i]["JobState"] for i in job_ids] == ["COMPLETED", "COMPLETED"]
    assert "#SBATCH --array=0-1%2" in (sweep_dir / ".submitit" / array / f"{array}_submission.sh").read_text()
    assert [(row.job, row.slurm_job, row.run_status) for row in outcome.rows] == [
        ("freeze=2", f"{array}_0", "FINISHED"), ("freeze=4", f"{array}_1", "FINISHED")]


def test_a_cancelled_slurm_job_ends_its_run_killed_and_the_sweep_collects_the_other_job(tmp_path, scale_out):
    slurm_cluster, slurm_sweep = scale_out
    with slurm_cluster.one_node_cluster(tmp_path / "cluster") as cluster:
        # The long job (200 epochs without the trunk cache: minutes) is cancelled once its run is RUNNING.
        done = slurm_sweep.cancelled_sweep(cluster, tmp_path, tmp_path / "sweep", long_epochs=200, timeout=240)
        slurm_jobs = cluster.job_states()
    assert done.exit_code == 0, done.log[-4000:]
    assert "UncompletedJobError" not in done.log  # submitit got the cancelled job's result: the sweep went on
    # The job's process returned from the task: submitit wrote its result before SLURM's KillWait ran out.
    job_folder = tmp_path / "sweep" / ".submitit" / done.slurm_job
    assert "job interrupted (terminated by SIGTERM); its MLflow run is marked KILLED" in (
        job_folder / f"{done.slurm_job}_0_log.err").read_text()
    assert (job_folder / f"{done.slurm_job}_0_result.pkl").exists()

    client = MlflowClient(slurm_sweep.store_uri(tmp_path))
    runs = client.search_runs([client.get_experiment_by_name("fashionbench").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get(TAG_SWEEP) == "parent"]
    jobs = {r.info.run_name: r for r in runs if r.data.tags.get(TAG_SWEEP_ID) == parent.info.run_id}
    assert sorted(jobs) == ["train.epochs=1", "train.epochs=200"]
    assert jobs["train.epochs=1"].info.status == "FINISHED"
    cancelled = jobs["train.epochs=200"]
    assert cancelled.info.status == "KILLED"
    assert cancelled.data.tags[TAG_ERROR].startswith("Terminated: terminated by SIGTERM")
    assert parent.info.status == "FINISHED"
    assert {k: parent.data.metrics[k] for k in ("sweep/runs", "sweep/runs_finished", "sweep/runs_killed")} == {
        "sweep/runs": 2, "sweep/runs_finished": 1, "sweep/runs_killed": 1}
    assert slurm_jobs[done.slurm_job]["JobState"] == "CANCELLED"
