"""A sweep's job around its run: its name, skipping it when its config has a FINISHED run
(``tracking.resume``), and how it ends when it fails so that the sweep goes on.

Hydra's basic sweeper stops a multirun at the first job that raises, while hydra-optuna-sweeper
counts a raised job as one failed trial and goes on; ``failed_job`` ends a job the way its sweeper
expects.
"""

from __future__ import annotations

import logging

from hydra.core.hydra_config import HydraConfig

from fashionbench.artifacts import HEADLINE_METRIC
from fashionbench.pipeline.job import Job
from fashionbench.tracking.settings import TrackingSettings
from fashionbench.tracking.sweep import earlier_finished_run, job_name, record_skipped_job, sweep_command_overrides

log = logging.getLogger("fashionbench")


class TrialFailed(RuntimeError):
    """A sweep's job that failed, raised to a sweeper that counts failed trials itself (Optuna).
    Only the message travels: the job's own exception might not survive the pickling back from a
    joblib or submitit worker."""


def sweeper_counts_failures() -> bool:
    """Whether the multirun's sweeper takes a job's exception as one failed trial and goes on.

    hydra-optuna-sweeper 1.3 tells Optuna a job that raised as FAIL and goes on while a batch's
    failures stay within ``hydra.sweeper.max_failure_rate``; a job that returned None or NaN
    instead is logged as "Return value must be float-castable", and NaN ends the study (it tells
    FAIL with a value). Hydra's basic sweeper ends the multirun at the first job that raised."""
    return "max_failure_rate" in HydraConfig.get().sweeper


def failed_job(message: str) -> None:
    """End a sweep's failed job so that the sweep goes on: logged, and raised as TrialFailed
    where the sweeper counts failed trials (Optuna), returned as None otherwise."""
    log.error("%s", message)
    if sweeper_counts_failures():
        raise TrialFailed(message) from None
    return None


def name_job(job: Job, settings: TrackingSettings) -> str:
    """A sweep job's run name: its swept values, from Hydra's job overrides and the sweep's
    command line as its parent recorded it; "job <n>" when nothing is swept."""
    hydra_job = HydraConfig.get().job
    parent = job.config.tracking.parent_run_id
    command = sweep_command_overrides(settings, parent) if parent else []
    return job_name(list(HydraConfig.get().overrides.task), command) or f"job {hydra_job.num}"


def skip_finished_job(job: Job, settings: TrackingSettings) -> float | None:
    """A multirun job's earlier FINISHED run of the same config (tracking.resume): say so, count it
    among the sweep's runs, and return its headline metric (what a sweeper expects); else None."""
    earlier = earlier_finished_run(settings, job.fingerprint)
    if earlier is None:
        return None
    if job.config.tracking.parent_run_id:
        record_skipped_job(settings, job.config.tracking.parent_run_id, earlier, job.config.run_name)
    value = earlier.metrics[HEADLINE_METRIC]
    print(f"skipped {job.config.run_name}: run {earlier.run_id} FINISHED with this config "
          f"({HEADLINE_METRIC} {value:.3f}); tracking.resume=false runs it again")
    return value
