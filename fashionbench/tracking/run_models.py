"""A run's model in the store, lean: the run keeps what only it has, the experiment keeps each
backbone once.

A run logs its architecture and trainable layers' weights under ``model/``
(``fashionbench.model.parts``) and tags the fingerprint of the backbone it was built from.
Backbones live in the experiment's *backbone store*: one run tagged ``backbone_store`` whose
artifacts are ``backbones/<fingerprint>/<writer>.npz`` plus a ``<writer>.json`` marker. The run
sits in an experiment of its own, ``<experiment> (backbones)``, so that people browsing the
experiment's runs meet only runs of the pipeline, while every run of the experiment shares it.
A run, rather than an artifact root, because MLflow's public client writes and reads a run's
artifacts alike on a local store and through ``mlflow server`` (``mlflow-artifacts:``), and the
store shows up, described, in the UI.

Writes are idempotent and safe under parallel jobs: a writer skips a fingerprint that has a
marker, and otherwise uploads its own copy under its own name, the weights first and the
marker last, so no writer overwrites another's file and no reader takes a partial copy. Two
jobs that race on a new fingerprint store it twice; nothing is ever corrupted.

``load_run_model`` is the one way to load a run's model: promote's bundle, ``recommend --run``
and a sweep's reuse of a source run all go through it.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fashionbench.artifacts import (
    BACKBONES,
    MODEL,
    TAG_BACKBONE,
    TAG_BACKBONE_STORE,
    TAG_BACKBONE_STORE_RUN,
    TAG_MODEL_URI,
    TAG_TRAINING_FINGERPRINT,
    ArtifactError,
)
from fashionbench.model.parts import (
    WHOLE_MODEL_FILE,
    Backbone,
    BackboneMismatchError,
    ModelParts,
    assemble,
    save_classifier_files,
    split_classifier,
)
from fashionbench.tracking.races import lost_race
from fashionbench.tracking.settings import TrackingSettings

if TYPE_CHECKING:  # Keras: imported where a network is built; reading or copying a run's model needs none
    from fashionbench.model.classifier import Classifier

log = logging.getLogger(__name__)

STORE_RUN_NAME = "backbone store"
STORE_EXPERIMENT_SUFFIX = " (backbones)"  # the store's experiment: "fashionbench (backbones)"
STORE_NOTE = ("Frozen backbone weights shared by the runs of the experiment this one is named after, stored "
              "once per fingerprint (backbones/<fingerprint>/). Each run's own weights are in its model/ folder. "
              "Do not delete this run while runs that name it in their backbone_store_run tag are kept.")


class BackboneUnavailableError(ArtifactError):
    """A run's shared backbone is missing from the store or damaged; the message names both."""


class BackboneStore:
    """The backbones of one experiment, in its backbone store run."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self._seen: set[str] = set()  # fingerprints found stored (copies are never removed by a run)

    @classmethod
    def of_experiment(cls, client: MlflowClient, experiment_id: str) -> BackboneStore:
        """The experiment's backbone store, in the store's own experiment, created on first use.
        When parallel jobs create one each, all settle on the oldest and the others delete theirs
        (unless already used: a run records the store it wrote to, so any store that holds a copy
        still serves it)."""
        store_experiment = _store_experiment(client, experiment_id)
        stores = _store_runs(client, store_experiment)
        if not stores:
            created = client.create_run(store_experiment, run_name=STORE_RUN_NAME,
                                        tags={TAG_BACKBONE_STORE: "true", "mlflow.note.content": STORE_NOTE})
            client.set_terminated(created.info.run_id, "FINISHED")
            stores = _store_runs(client, store_experiment)
            if stores[0] != created.info.run_id:
                client.delete_run(created.info.run_id)
        return cls(client, stores[0])

    def put(self, backbone: Backbone, writer: str) -> None:
        """Store ``backbone`` under its fingerprint unless a complete copy is there already."""
        folder = f"{BACKBONES}/{backbone.fingerprint}"
        if self.has(backbone.fingerprint):
            return
        with tempfile.TemporaryDirectory() as scratch:
            weights, marker = Path(scratch) / f"{writer}.npz", Path(scratch) / f"{writer}.json"
            backbone.save(weights, marker)
            self.client.log_artifact(self.run_id, str(weights), folder)
            self.client.log_artifact(self.run_id, str(marker), folder)  # last: the copy is complete
        self._seen.add(backbone.fingerprint)
        log.info("stored backbone %s in the backbone store (run %s)", backbone.fingerprint, self.run_id)

    def has(self, fingerprint: str) -> bool:
        """Whether a complete copy of backbone ``fingerprint`` is stored (not checked: ``get`` checks);
        asked of the store once per fingerprint found."""
        if fingerprint not in self._seen and self._markers(f"{BACKBONES}/{fingerprint}"):
            self._seen.add(fingerprint)
        return fingerprint in self._seen

    def get(self, fingerprint: str) -> Backbone:
        """The backbone stored as ``fingerprint``, its weights checked against it. Raises
        BackboneMismatchError when no complete copy is stored or none hashes right (each copy's
        problem in the message)."""
        folder = f"{BACKBONES}/{fingerprint}"
        markers = self._markers(folder)
        if not markers:
            raise BackboneMismatchError(f"no copy in {folder}/ of the backbone store (run {self.run_id})")
        problems = []
        with tempfile.TemporaryDirectory() as scratch:
            for marker in markers:
                try:
                    local_marker = self.client.download_artifacts(self.run_id, marker, scratch)
                    local_weights = self.client.download_artifacts(self.run_id, marker[:-len(".json")] + ".npz",
                                                                   scratch)
                    return Backbone.load(Path(local_weights), Path(local_marker), fingerprint)
                except BackboneMismatchError as error:  # it names the copy's file at fault
                    problems.append(f"{folder}/{error}")
                except Exception as error:  # noqa: BLE001 - MlflowException or OSError, by store
                    problems.append(f"{marker}: cannot download ({type(error).__name__}: {error})")
        raise BackboneMismatchError(f"no intact copy in the backbone store (run {self.run_id}): "
                                    + "; ".join(problems))

    def _markers(self, folder: str) -> list[str]:
        try:
            entries = self.client.list_artifacts(self.run_id, folder)
        except Exception:  # noqa: BLE001 - some stores raise for a folder that does not exist
            return []
        return sorted(entry.path for entry in entries if entry.path.endswith(".json"))


def _store_experiment(client: MlflowClient, experiment_id: str) -> str:
    """The id of the backbone store's experiment beside ``experiment_id``, created on first use. On
    a client's disk its artifacts go under the experiment's own artifact folder; through a server,
    to the server's artifact root."""
    experiment = client.get_experiment(experiment_id)
    name = experiment.name + STORE_EXPERIMENT_SUFFIX
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = experiment.artifact_location
    on_disk = location.startswith("file:") or ":" not in location
    try:
        return client.create_experiment(name, artifact_location=f"{location.rstrip('/')}/backbones" if on_disk
                                        else None, tags={"mlflow.note.content": STORE_NOTE})
    except MlflowException as error:  # another job created it since we looked
        if not lost_race(error):
            raise
        return client.get_experiment_by_name(name).experiment_id


def _store_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """The experiment's backbone store runs, oldest first (ties by id: every job orders them alike)."""
    runs = client.search_runs([experiment_id], f"tags.{TAG_BACKBONE_STORE} = 'true'", max_results=100)
    return [run.info.run_id for run in sorted(runs, key=lambda run: (run.info.start_time, run.info.run_id))]


def log_run_model(client: MlflowClient, run_id: str, experiment_id: str, classifier: Classifier,
                  split: tuple[ModelParts, Backbone | None] | None = None, store: BackboneStore | None = None) -> str:
    """Log the classifier of run ``run_id`` lean: its own weights under ``model/``, its backbone
    in the experiment's backbone store (once per fingerprint). Tag the run with the model's URI,
    the backbone's fingerprint and its store; return the URI. ``split``: ``split_classifier`` of
    the classifier, when it was made already (it copies and hashes every weight); ``store``: the
    experiment's backbone store, when the run has it already."""
    parts, backbone = split_classifier(classifier) if split is None else split
    tags = {}
    if parts.backbone_fingerprint is not None:
        store = store or BackboneStore.of_experiment(client, experiment_id)
        if backbone is not None:
            store.put(backbone, writer=run_id)
        elif not store.has(parts.backbone_fingerprint):  # a classifier built without its backbone
            raise BackboneUnavailableError(f"backbone {parts.backbone_fingerprint} is not in the backbone store "
                                           f"(run {store.run_id}), and this classifier was built without it")
        tags = {TAG_BACKBONE: parts.backbone_fingerprint, TAG_BACKBONE_STORE_RUN: store.run_id}
    with tempfile.TemporaryDirectory() as scratch:
        parts.save(Path(scratch))
        client.log_artifacts(run_id, scratch, MODEL)
    uri = f"runs:/{run_id}/{MODEL}"
    client.log_batch(run_id, tags=[RunTag(key, value) for key, value in {**tags, TAG_MODEL_URI: uri}.items()])
    return uri


def model_tags(source: Any) -> dict[str, str]:
    """The tags that make a run's model the one ``source`` (a ``RunRecord``) logged: for a run
    that reused ``source``'s training, whose weights are the same, so nothing is logged twice."""
    return {key: source.tags[key] for key in (TAG_MODEL_URI, TAG_BACKBONE, TAG_BACKBONE_STORE_RUN)
            if key in source.tags}


def load_run_model(settings: TrackingSettings, run_id: str) -> Any:
    """The Keras classifier run ``run_id`` logged, rebuilt exactly from its own weights and its
    shared backbone (uncompiled: for inference). Runs logged whole, before lean artifacts, load
    as they were stored.

    Raises ArtifactError, in one line naming the run, when it logged no model or its own files
    are damaged; and
    BackboneUnavailableError, naming the run and the fingerprint, when its backbone is missing
    from the store or does not hash to that fingerprint: never a different model.
    """
    client = MlflowClient(settings.uri)
    tags = _model_tags(client, run_id)
    if tags[TAG_MODEL_URI].startswith("models:/"):
        return _load_whole(run_id, tags[TAG_MODEL_URI])
    return assemble(*_lean_parts(client, run_id, tags))


def save_run_model(settings: TrackingSettings, run_id: str, directory: Path) -> None:
    """Write the classifier run ``run_id`` logged into ``directory``, whole: its own files and its
    backbone, checked against their hashes with numpy alone (``model.parts.save_classifier_files``;
    ``load_classifier_files`` reads them back). A run logged whole, before lean artifacts, is
    loaded by Keras and saved as WHOLE_MODEL_FILE. Raises what ``load_run_model`` raises."""
    client = MlflowClient(settings.uri)
    tags = _model_tags(client, run_id)
    if tags[TAG_MODEL_URI].startswith("models:/"):
        directory.mkdir(parents=True, exist_ok=True)
        _load_whole(run_id, tags[TAG_MODEL_URI]).save(directory / WHOLE_MODEL_FILE)
        return
    save_classifier_files(*_lean_parts(client, run_id, tags), directory)


def _model_tags(client: MlflowClient, run_id: str) -> dict[str, str]:
    """The run's tags; ArtifactError when they name no model."""
    tags = client.get_run(run_id).data.tags
    if TAG_MODEL_URI not in tags:
        raise ArtifactError(f"run {run_id} logged no model (tracking.log_model=false)")
    return tags


def _lean_parts(client: MlflowClient, run_id: str, tags: dict[str, str]) -> tuple[ModelParts, Backbone | None]:
    """The parts of run ``run_id``'s lean model (``tags``: the run's) and the backbone they name, each
    checked against its hash (no Keras)."""
    # runs:/<id>/model: this run's own files, or those of the run whose training it reused.
    owner, _, path = tags[TAG_MODEL_URI].removeprefix("runs:/").partition("/")
    if owner != run_id:  # a run that reused another's training: the same training, or not that model
        _check_same_training(client, run_id, tags, owner)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            local = client.download_artifacts(owner, path or MODEL, scratch)
        except Exception as error:  # noqa: BLE001 - MlflowException or OSError, by store
            where = f"{path or MODEL}/" + (f" of run {owner}, whose training it reused" if owner != run_id else "")
            raise ArtifactError(f"run {run_id} lacks its model's files ({where}: {type(error).__name__})") from None
        try:
            parts = ModelParts.load(Path(local))
        except ArtifactError as error:
            raise ArtifactError(f"run {run_id}: its {MODEL}/ files are damaged: {MODEL}/{error}") from None
    backbone = None
    if parts.backbone_fingerprint is not None:
        fingerprint, store_run = parts.backbone_fingerprint, tags.get(TAG_BACKBONE_STORE_RUN, "")
        try:
            backbone = BackboneStore(client, store_run).get(fingerprint)
        except BackboneMismatchError as error:
            raise BackboneUnavailableError(f"run {run_id}: its shared backbone {fingerprint} is missing or "
                                           f"damaged ({error})") from None
    return parts, backbone


def _check_same_training(client: MlflowClient, run_id: str, tags: dict[str, str], owner: str) -> None:
    """ArtifactError when run ``run_id``'s model tag names the model of run ``owner`` whose training
    fingerprint is another (an edited tag: that model is not this run's); runs without the
    fingerprint (logged before it) cannot be told apart and pass."""
    mine = tags.get(TAG_TRAINING_FINGERPRINT)
    try:
        theirs = client.get_run(owner).data.tags.get(TAG_TRAINING_FINGERPRINT)
    except Exception as error:  # noqa: BLE001 - MlflowException, by store: no such run
        raise ArtifactError(f"run {run_id}: its {TAG_MODEL_URI} tag names the model of run {owner}, which the "
                            f"store does not have ({type(error).__name__})") from None
    if mine and theirs and mine != theirs:
        raise ArtifactError(f"run {run_id}: its {TAG_MODEL_URI} tag names the model of run {owner}, whose training "
                            f"differs ({TAG_TRAINING_FINGERPRINT} {theirs} against {mine}): not this run's model")


def _load_whole(run_id: str, uri: str) -> Any:
    """A whole Keras model (MLflow LoggedModel), as runs logged it before lean artifacts."""
    try:
        return mlflow.keras.load_model(uri, load_model_kwargs={"compile": False})
    except Exception as error:  # noqa: BLE001 - MlflowException or OSError, by store
        raise ArtifactError(f"run {run_id}: its model {uri} cannot be loaded ({type(error).__name__}: "
                            f"{str(error).strip().splitlines()[0] if str(error).strip() else ''})") from None
