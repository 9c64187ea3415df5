"""One run's lifecycle and logging: start it (under a sweep's parent), record what each stage
measured, and end it FINISHED or FAILED with the error."""

from __future__ import annotations

import os
import subprocess
import tempfile
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from omegaconf import DictConfig, OmegaConf

from fashionbench.artifacts import CONFIG, ERROR, MODEL, TAG_ERROR, TAG_GIT_COMMIT, TAG_MODEL_URI, TAG_SWEEP_ID
from fashionbench.stage import StageResult
from fashionbench.tracking.store import TrackingSettings, ensure_experiment

# How a sweep's jobs learn their parent run (set by tracking.sweep.SweepCallback).
SWEEP_RUN_ENV = "FASHIONBENCH_SWEEP_RUN_ID"


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"model.freeze": "4", ...}, the form MLflow params take."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def git_commit() -> str:
    """The checkout's HEAD commit, or "unknown" outside a git checkout."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class TrackedRun:
    """Logging into one active MLflow run."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def record(self, result: StageResult) -> None:
        """Log what a stage measured: its metrics, stepped metrics, tags and artifact files."""
        self.log_metrics(result.metrics())
        for name, values in result.stepped_metrics().items():
            for step, value in enumerate(values):
                mlflow.log_metric(name, float(value), step=step)
        self.set_tags(result.tags())
        with tempfile.TemporaryDirectory() as scratch:
            result.write_artifacts(Path(scratch))
            if any(Path(scratch).iterdir()):
                mlflow.log_artifacts(scratch)

    def log_config(self, config: DictConfig) -> None:
        """The resolved config, as params (flattened: ``model.freeze``) and as ``config.yaml``."""
        self.log_params(flatten_config(OmegaConf.to_container(config, resolve=True)))
        self.log_text(OmegaConf.to_yaml(config, resolve=True), CONFIG)

    def log_params(self, params: Mapping[str, Any]) -> None:
        mlflow.log_params(dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if metrics:
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if tags:
            mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_text(self, text: str, artifact_file: str) -> None:
        mlflow.log_text(text, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        mlflow.log_artifact(str(path), artifact_path)

    def log_keras_model(self, model: Any) -> str:
        """Log a Keras model (MLflow 3 stores it as a LoggedModel linked to this run); return
        its URI, also set as the run's ``model_uri`` tag."""
        import keras
        import tensorflow as tf

        # Explicit requirements: MLflow's inference imports the model in a subprocess (slow).
        info = mlflow.keras.log_model(
            model, name=MODEL,
            pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
        )
        mlflow.set_tag(TAG_MODEL_URI, info.model_uri)
        return info.model_uri


@contextmanager
def tracked_run(settings: TrackingSettings, run_name: str | None = None,
                tags: Mapping[str, Any] | None = None) -> Iterator[TrackedRun]:
    """Start a run (under the sweep's parent run when one is active); end it FINISHED, or
    FAILED with the traceback logged as ``error.txt`` and the message as tag ``error``."""
    experiment_id = ensure_experiment(settings)
    parent = os.environ.get(SWEEP_RUN_ENV)
    all_tags = {TAG_GIT_COMMIT: git_commit(), **(tags or {})}
    if parent:
        all_tags[TAG_SWEEP_ID] = parent
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, parent_run_id=parent or None,
                          tags={k: str(v) for k, v in all_tags.items()}) as run:
        try:
            yield TrackedRun(run.info.run_id)
        except BaseException as error:
            mlflow.log_text(traceback.format_exc(), ERROR)
            mlflow.set_tag(TAG_ERROR, f"{type(error).__name__}: {error}"[:5000])
            mlflow.end_run(status="FAILED")
            raise
