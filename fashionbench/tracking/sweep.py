"""What a job reads of its sweep: its name, and an earlier run of its config it can skip for.

The sweep's parent run is opened and closed by ``tracking.sweep_callback.SweepCallback``; the
parent's id reaches every job through the job's own config (``tracking.parent_run_id``).
"""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow.tracking import MlflowClient

from fashionbench.artifacts import HEADLINE_METRIC, TAG_CONFIG_FINGERPRINT, TAG_OVERRIDES, TAG_SWEEP_REUSED_PREFIX
from fashionbench.tracking.records import RunRecord
from fashionbench.tracking.settings import TrackingSettings
from fashionbench.tracking.store import finished_runs_with
from fashionbench.tracking.sweep_callback import PARENT_RUN_KEY, override_key


def sweep_command_overrides(settings: TrackingSettings, parent_id: str) -> list[str]:
    """The sweep's command-line overrides, as its parent run recorded them (a job's own
    ``sys.argv`` is a worker's under submitit and Ray)."""
    return MlflowClient(settings.uri).get_run(parent_id).data.tags.get(TAG_OVERRIDES, "").split()


def job_name(job_overrides: list[str], command_overrides: list[str]) -> str:
    """A job's swept values: its overrides of the keys the sweep's command line does not set to
    one value (``freeze=4`` of ``freeze=2,4,8``; an Optuna trial's chosen values), the parent's id
    aside. Parsed by Hydra's own parser: a sweeper rewrites the values (``false`` -> ``False``)."""
    parsed = OverridesParser.create().parse_overrides(command_overrides)
    fixed = {override.key_or_group for override in parsed if not override.is_sweep_override()} | {PARENT_RUN_KEY}
    return " ".join(o for o in job_overrides if override_key(o) not in fixed)


def earlier_finished_run(settings: TrackingSettings, config_fingerprint: str) -> RunRecord | None:
    """The newest FINISHED run of this config (tag ``config_fingerprint``) with a headline metric."""
    return next((run for run in finished_runs_with(settings, TAG_CONFIG_FINGERPRINT, config_fingerprint)
                 if HEADLINE_METRIC in run.metrics), None)


def record_skipped_job(settings: TrackingSettings, parent_id: str, earlier: RunRecord, name: str) -> None:
    """Count ``earlier`` among the sweep's runs (``report``, ``promote --sweep``): a tag per run
    on the parent, so that parallel jobs never overwrite each other's."""
    MlflowClient(settings.uri).set_tag(parent_id, TAG_SWEEP_REUSED_PREFIX + earlier.run_id, name or earlier.run_name)
