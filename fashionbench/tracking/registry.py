"""The model registry: the promoted recommender as an ``mlflow.pyfunc`` model, its versions and aliases."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
from mlflow.tracking import MlflowClient

from fashionbench.tracking.store import TrackingSettings, ensure_experiment


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
        from fashionbench.recommender import ShopRecommender  # TensorFlow: imported where the model loads

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
