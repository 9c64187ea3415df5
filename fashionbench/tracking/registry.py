"""The model registry: the promoted recommender as an ``mlflow.pyfunc`` model, its versions and aliases."""

from __future__ import annotations

import importlib.metadata as metadata
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

import fashionbench
from fashionbench.index.registry import BACKENDS
from fashionbench.index.store import load_indexes
from fashionbench.serving.bundle import BUNDLE_INDEXES, BUNDLE_META, BUNDLE_SHOP_ITEMS
from fashionbench.tracking.races import lost_race, retry_lost_race
from fashionbench.tracking.settings import TrackingSettings
from fashionbench.tracking.store import ensure_experiment

# What the recommender imports where it is served (fashionbench itself travels as code).
SERVING_REQUIREMENTS = ("mlflow", "tensorflow", "keras", "annoy", "numpy", "pandas", "pillow", "hydra-core",
                        "omegaconf", "matplotlib", "tqdm")


def serving_requirements(bundle: Path) -> list[str]:
    """SERVING_REQUIREMENTS pinned to the versions installed here, with the package of each index
    backend the bundle's indexes use that is not among them (faiss-cpu for HNSW graphs: an optional
    dependency, which a fresh environment lacks)."""
    names = list(SERVING_REQUIREMENTS)
    for index in load_indexes(bundle / BUNDLE_INDEXES).values():
        requirement = BACKENDS[index.kind].requirement
        if requirement not in names:
            names.append(requirement)
    return [f"{name}=={metadata.version(name)}" for name in names]


class RecommenderPyfunc(mlflow.pyfunc.PythonModel):
    """The registered recommender as an ``mlflow.pyfunc`` model around a bundle
    (fashionbench.serving.recommender). It lives here because it must subclass an mlflow class.

    ``predict(DataFrame)``: rows with an ``item_id`` are favourites -> top-k per category of those
    shop items (the items themselves excluded); rows with an ``image`` (an encoded photo's bytes)
    -> top-k per photo in its predicted category (or ``params={"category": ...}``). The answer
    has the columns query, category, rank, item_id, distance; ``params={"k": ...}`` sets k. A bad
    request raises an MlflowException with a one-line reason (HTTP 400 when served).
    """

    # The signature, not type hints, declares the input; this flag (the one MLflow's own
    # ChatModel uses) stops MLflow wrapping predict for type-hint validation and warning, on
    # every import, that the hints are missing.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        from fashionbench.serving.recommender import ShopRecommender  # TensorFlow: imported where the model loads

        self.recommender = ShopRecommender(Path(context.artifacts["bundle"]))

    def predict(self, context, model_input, params=None):
        from fashionbench.serving.recommender import BundleError

        params = params or {}
        try:
            k = self.recommender.k if params.get("k") is None else int(params["k"])
            if k < 1:
                raise BundleError(f"params.k must be >= 1, got {k}")
            return self.recommender.answer(model_input, k, category=params.get("category") or None).table
        except (BundleError, ValueError) as error:
            # A clean MlflowException: the scoring server answers HTTP 400 with this one line,
            # not the whole stack trace.
            raise MlflowException(str(error), error_code=INVALID_PARAMETER_VALUE) from None


def registered_version_of_run(settings: TrackingSettings, model_name: str, run_id: str) -> str | None:
    """The version of ``model_name`` registered from ``run_id`` (tag ``source_run_id``), if any."""
    client = MlflowClient(settings.uri)
    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
    except mlflow.exceptions.MlflowException:
        return None
    matches = [v.version for v in versions if v.tags.get("source_run_id") == run_id]
    return str(min(matches, key=int)) if matches else None


def registered_source_run(settings: TrackingSettings, model_name: str, version: str) -> str:
    """The run a version of ``model_name`` was registered from (its ``source_run_id`` tag, else its run)."""
    found = MlflowClient(settings.uri).get_model_version(model_name, version)
    return found.tags.get("source_run_id") or found.run_id


def register_recommender(settings: TrackingSettings, model_name: str, bundle: Path, source_run_id: str,
                         tags: Mapping[str, Any]) -> str:
    """Log ``bundle`` as an ``mlflow.pyfunc`` model and register it as a new version of
    ``model_name`` linked to the source run (which is left as it is); return the version."""
    mlflow.set_tracking_uri(settings.uri)
    ensure_experiment(settings)
    mlflow.set_experiment(settings.experiment_name)
    meta = json.loads((bundle / BUNDLE_META).read_text())
    signature = ModelSignature(
        inputs=Schema([ColSpec("string", "item_id", required=False), ColSpec("binary", "image", required=False)]),
        outputs=Schema([ColSpec("string", "query"), ColSpec("string", "category"), ColSpec("long", "rank"),
                        ColSpec("string", "item_id"), ColSpec("double", "distance")]),
        params=ParamSchema([ParamSpec("k", "long", int(meta["k"])), ParamSpec("category", "string", "")]),
    )
    shop_items = pd.read_csv(bundle / BUNDLE_SHOP_ITEMS, dtype=str, usecols=["item_id"])["item_id"]
    info = mlflow.pyfunc.log_model(
        name="recommender", python_model=RecommenderPyfunc(), artifacts={"bundle": str(bundle)},
        signature=signature, input_example=pd.DataFrame({"item_id": shop_items[:2].tolist()}),
        # The package travels with the model (MLflow puts it on sys.path where the model loads),
        # and every requirement is a pinned release an index has.
        code_paths=[str(Path(fashionbench.__file__).parent)],
        pip_requirements=serving_requirements(bundle),
    )
    client = MlflowClient(settings.uri)
    try:
        client.get_registered_model(model_name)
    except mlflow.exceptions.MlflowException:
        try:
            client.create_registered_model(model_name, description="fashionbench recommender: Keras "
                                           "classifier + per-category Annoy indexes + shop items")
        except mlflow.exceptions.MlflowException as error:  # another promote created it since we looked
            if not lost_race(error):
                raise
    # Two promotes at once may both take the next version number: the loser takes the one after.
    version = retry_lost_race(lambda: client.create_model_version(model_name, source=info.model_uri,
                                                                  run_id=source_run_id,
                                                                  tags={k: str(v) for k, v in tags.items()}),
                              f"a version of {model_name}")
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

    Raises RegisteredModelNotFoundError when the store has no such model, version or alias
    (``check_registered`` says, before, what it has instead)."""
    mlflow.set_tracking_uri(settings.uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except mlflow.exceptions.MlflowException as error:
        raise RegisteredModelNotFoundError(f"cannot load {model_uri} from {settings.uri}: {error}") from None
    return model.unwrap_python_model().recommender


def check_registered(settings: TrackingSettings, model_name: str, alias: str | None = None,
                     version: str | None = None) -> None:
    """RegisteredModelNotFoundError (one line: ``--model-name``, ``--version`` or ``--alias``, and what
    the registry holds instead) unless the model, and its version or alias, are registered."""
    client = MlflowClient(settings.uri)
    try:
        model = client.get_registered_model(model_name)
    except mlflow.exceptions.MlflowException:
        names = sorted(m.name for m in client.search_registered_models(max_results=50))
        raise RegisteredModelNotFoundError(
            f"--model-name {model_name!r}: no such registered model in {settings.uri}; it has "
            f"{', '.join(map(repr, names)) if names else 'none (promote a run first: python -m fashionbench.promote)'}"
        ) from None
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{model_name}'"))
    aliases = dict(sorted(model.aliases.items()))  # alias -> version
    if version is not None and (not str(version).isdigit() or int(version) not in versions):
        raise RegisteredModelNotFoundError(f"--version {version!r}: {model_name!r} has no such version; its versions "
                                           f"are {', '.join(map(str, versions)) or 'none'}")
    wanted = alias or "champion"
    if version is None and wanted not in aliases:
        known = ", ".join(f"{name} -> version {number}" for name, number in aliases.items()) or "none"
        raise RegisteredModelNotFoundError(f"--alias {wanted!r}: {model_name!r} has no such alias; its aliases: {known}"
                                           f" (versions {', '.join(map(str, versions)) or 'none'}: --version N)")
