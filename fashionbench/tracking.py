"""MLflow tracking: the only module that imports mlflow.

Stages return what they measured; ``run`` hands it here. The store defaults to a SQLite
file addressed by an absolute path, so every Hydra job of a sweep writes to the same one.
"""

from __future__ import annotations

import logging
import os
import subprocess
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
from hydra.experimental.callback import Callback
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

log = logging.getLogger(__name__)

SWEEP_RUN_ENV = "FASHIONBENCH_SWEEP_RUN_ID"
DEFAULT_STORE_FILE = "mlflow.db"


@dataclass(frozen=True)
class TrackingSettings:
    """Where runs go: a tracking URI, an experiment, and where its artifacts live."""

    uri: str
    experiment_name: str
    artifact_location: str | None


def tracking_settings(uri: str | None = None, experiment_name: str = "fashionbench",
                      artifact_location: str | None = None) -> TrackingSettings:
    """Resolve the store: the configured ``uri`` wins over ``MLFLOW_TRACKING_URI``, which wins
    over the default ``sqlite:///<absolute cwd>/mlflow.db``. (Explicit config first also because
    ``mlflow.set_tracking_uri`` exports the variable to the process.) A SQLite store keeps its
    artifacts beside it in ``mlartifacts/`` unless ``artifact_location`` says otherwise."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///" + str(Path(DEFAULT_STORE_FILE).resolve())
    if artifact_location is None and uri.startswith("sqlite:///"):
        database = Path(uri[len("sqlite:///"):])
        artifact_location = (database.parent / "mlartifacts" / experiment_name).as_uri()
    return TrackingSettings(uri, experiment_name, artifact_location)


def ensure_experiment(settings: TrackingSettings) -> str:
    """Create (and so migrate) the store and the experiment if needed; return the experiment id."""
    mlflow.set_tracking_uri(settings.uri)
    client = MlflowClient(settings.uri)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(settings.experiment_name, artifact_location=settings.artifact_location)


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

    def log_params(self, params: Mapping[str, Any]) -> None:
        mlflow.log_params(dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_history(self, history: Mapping[str, list[float]]) -> None:
        """Per-epoch training curves as stepped metrics (``epoch_loss``, ``epoch_val_accuracy``...)."""
        for name, values in history.items():
            for epoch, value in enumerate(values):
                mlflow.log_metric(f"epoch_{name}", float(value), step=epoch)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_text(self, text: str, artifact_file: str) -> None:
        mlflow.log_text(text, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        mlflow.log_artifact(str(path), artifact_path)

    def log_artifacts(self, directory: Path, artifact_path: str | None = None) -> None:
        mlflow.log_artifacts(str(directory), artifact_path)

    def log_keras_model(self, model: Any, name: str = "model") -> str:
        """Log a Keras model (MLflow 3 stores it as a LoggedModel linked to this run); return
        its URI, also set as the run's ``model_uri`` tag."""
        import keras
        import tensorflow as tf

        # Explicit requirements: MLflow's inference imports the model in a subprocess (slow).
        info = mlflow.keras.log_model(
            model, name=name,
            pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
        )
        mlflow.set_tag("model_uri", info.model_uri)
        return info.model_uri


@contextmanager
def tracked_run(settings: TrackingSettings, run_name: str | None = None,
                tags: Mapping[str, Any] | None = None) -> Iterator[TrackedRun]:
    """Start a run (under the sweep's parent run when one is active); end it FINISHED, or
    FAILED with the traceback logged as ``error.txt`` and the message as tag ``error``."""
    experiment_id = ensure_experiment(settings)
    parent = os.environ.get(SWEEP_RUN_ENV)
    all_tags = {"git_commit": git_commit(), **(tags or {})}
    if parent:
        all_tags["sweep_id"] = parent
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, parent_run_id=parent or None,
                          tags={k: str(v) for k, v in all_tags.items()}) as run:
        try:
            yield TrackedRun(run.info.run_id)
        except BaseException as error:
            mlflow.log_text(traceback.format_exc(), "error.txt")
            mlflow.set_tag("error", f"{type(error).__name__}: {error}"[:5000])
            mlflow.end_run(status="FAILED")
            raise


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as plain values, for code that selects and tabulates runs."""

    run_id: str
    run_name: str
    status: str  # FINISHED, FAILED, RUNNING, ...
    start_time: int  # milliseconds since the epoch
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


class ExperimentNotFoundError(LookupError):
    """The named experiment is not in the store."""


def experiment_runs(settings: TrackingSettings, sweep_id: str | None = None) -> list[RunRecord]:
    """Every run of the experiment (only the runs of one sweep, by its parent's id, when
    ``sweep_id`` is given), oldest first. Raises ExperimentNotFoundError naming the store."""
    mlflow.set_tracking_uri(settings.uri)
    client = MlflowClient(settings.uri)
    experiment = client.get_experiment_by_name(settings.experiment_name)
    if experiment is None:
        names = [e.name for e in client.search_experiments()]
        raise ExperimentNotFoundError(
            f"no experiment {settings.experiment_name!r} in the MLflow store {settings.uri} "
            f"(it has {names or 'none'})"
        )
    filter_string = f"tags.sweep_id = '{sweep_id}'" if sweep_id else ""
    records, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], filter_string, max_results=1000,
                                  order_by=["attributes.start_time ASC"], page_token=token)
        records += [RunRecord(run.info.run_id, run.info.run_name or "", run.info.status, run.info.start_time,
                              dict(run.data.params), dict(run.data.metrics), dict(run.data.tags))
                    for run in page]
        token = page.token
        if not token:
            return records


def download_run_artifacts(settings: TrackingSettings, run_id: str, artifact_path: str, destination: Path) -> Path:
    """Copy one artifact file or folder of a run into ``destination``; return its local path."""
    destination.mkdir(parents=True, exist_ok=True)
    return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                    dst_path=str(destination), tracking_uri=settings.uri))


def load_keras_model(settings: TrackingSettings, model_uri: str) -> Any:
    """The Keras model logged at ``model_uri`` (a run's ``model_uri`` tag), without its
    optimiser state (for inference)."""
    mlflow.set_tracking_uri(settings.uri)
    return mlflow.keras.load_model(model_uri, load_model_kwargs={"compile": False})


class RecommenderPyfunc(mlflow.pyfunc.PythonModel):
    """The registered recommender as an ``mlflow.pyfunc`` model around a bundle
    (fashionbench.recommender). It lives here because it must subclass an mlflow class.

    ``predict(DataFrame with an item_id column)`` -> top-k per category of those shop items
    (the items themselves excluded); ``predict(uint8 array (n, h, w, 3))`` -> top-k per image in
    its predicted category (or ``params={"category": ...}``). Both return a DataFrame with
    columns query, category, rank, item_id, distance; ``params={"k": ...}`` sets k.
    """

    # predict takes two kinds of input (item ids or images), so it has no type hints; this
    # flag (the one MLflow's own ChatModel uses) stops MLflow wrapping it for type-hint
    # validation and warning, on every import, that the hints are missing.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from fashionbench.recommender import ShopRecommender

        self.recommender = ShopRecommender(Path(context.artifacts["bundle"]))

    def predict(self, context, model_input, params=None):
        params = params or {}
        k = int(params.get("k") or self.recommender.k)
        if hasattr(model_input, "columns") and "item_id" in model_input.columns:
            return self.recommender.recommend_for_items([str(i) for i in model_input["item_id"]], k).table
        return self.recommender.recommend_for_images(model_input, k, category=params.get("category") or None).table


def registered_version_of_run(settings: TrackingSettings, model_name: str, run_id: str) -> str | None:
    """The version of ``model_name`` registered from ``run_id`` (tag ``source_run_id``), if any."""
    client = MlflowClient(settings.uri)
    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
    except mlflow.exceptions.MlflowException:
        return None
    matches = [v.version for v in versions if v.tags.get("source_run_id") == run_id]
    return str(min(matches, key=int)) if matches else None


def register_recommender(settings: TrackingSettings, model_name: str, bundle: Path, source_run_id: str,
                         tags: Mapping[str, Any]) -> str:
    """Log ``bundle`` as an ``mlflow.pyfunc`` model and register it as a new version of
    ``model_name`` linked to the source run (which is left as it is); return the version."""
    import importlib.metadata as metadata

    import keras
    import tensorflow as tf
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec

    mlflow.set_tracking_uri(settings.uri)
    ensure_experiment(settings)
    mlflow.set_experiment(settings.experiment_name)
    # No input schema: the model takes a DataFrame of item ids or an array of images.
    signature = ModelSignature(inputs=None, params=ParamSchema([ParamSpec("k", "long", 0),
                                                               ParamSpec("category", "string", "")]))
    info = mlflow.pyfunc.log_model(
        name="recommender", python_model=RecommenderPyfunc(), artifacts={"bundle": str(bundle)},
        signature=signature,
        # Explicit requirements: inferring them imports the model in a subprocess (slow).
        pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}",
                          f"annoy=={metadata.version('annoy')}", f"pandas=={metadata.version('pandas')}",
                          "fashionbench"],
    )
    client = MlflowClient(settings.uri)
    try:
        client.get_registered_model(model_name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(model_name, description="fashionbench recommender: Keras "
                                       "classifier + per-category Annoy indexes + shop items")
    version = client.create_model_version(model_name, source=info.model_uri, run_id=source_run_id,
                                          tags={k: str(v) for k, v in tags.items()})
    return str(version.version)


def set_model_alias(settings: TrackingSettings, model_name: str, alias: str, version: str) -> None:
    MlflowClient(settings.uri).set_registered_model_alias(model_name, alias, version)


def model_alias_version(settings: TrackingSettings, model_name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or None when the model or the alias does not exist."""
    try:
        return str(MlflowClient(settings.uri).get_model_version_by_alias(model_name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


class RegisteredModelNotFoundError(LookupError):
    """The registry has no such model, version or alias."""


def load_recommender(settings: TrackingSettings, model_uri: str) -> Any:
    """The ShopRecommender registered at ``model_uri`` (``models:/name@alias``, ``models:/name/3``).

    Raises RegisteredModelNotFoundError when the store has no such model, version or alias."""
    mlflow.set_tracking_uri(settings.uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except mlflow.exceptions.MlflowException as error:
        raise RegisteredModelNotFoundError(f"cannot load {model_uri} from {settings.uri}: {error}") from None
    return model.unwrap_python_model().recommender


class SweepCallback(Callback):
    """Hydra callback: before a multirun, create the store and experiment once (parallel jobs
    on a fresh SQLite store corrupt it) and a parent run that groups the sweep's runs."""

    def __init__(self) -> None:
        self._parent: tuple[str, str] | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        settings = tracking_settings(config.tracking.uri, config.tracking.experiment_name,
                                     config.tracking.artifact_location)
        experiment_id = ensure_experiment(settings)
        client = MlflowClient(settings.uri)
        overrides = " ".join(config.hydra.overrides.task)
        run = client.create_run(experiment_id, run_name=f"sweep {overrides}".strip(),
                                tags={"sweep": "parent", "overrides": overrides, "git_commit": git_commit()})
        os.environ[SWEEP_RUN_ENV] = run.info.run_id
        self._parent = (settings.uri, run.info.run_id)
        log.info("sweep parent run %s in experiment %r", run.info.run_id, settings.experiment_name)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._parent is None:
            return
        uri, run_id = self._parent
        client = MlflowClient(uri)
        children = client.search_runs(
            [client.get_run(run_id).info.experiment_id], filter_string=f"tags.sweep_id = '{run_id}'"
        )
        failed = sum(child.info.status == "FAILED" for child in children)
        client.log_metric(run_id, "runs_failed", failed)
        client.log_metric(run_id, "runs", len(children))
        client.set_terminated(run_id, "FINISHED")
        os.environ.pop(SWEEP_RUN_ENV, None)
