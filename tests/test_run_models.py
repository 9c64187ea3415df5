"""Lean run models: a run stores its trainable layers, the experiment each backbone once; a run's
model comes back exactly (what promote and ``recommend --run`` load), or a one-line error that
names the run and the backbone, never a different model. Real TensorFlow, real MLflow stores
(SQLite, and a real ``mlflow server`` with ``mlflow-artifacts:``)."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from fashionbench.artifacts import TAG_BACKBONE, TAG_BACKBONE_STORE_RUN, TAG_MODEL_URI, ArtifactError
from fashionbench.model.classifier import build_classifier, predict_in_batches
from fashionbench.model.parts import BACKBONE_FILE, split_classifier
from fashionbench.model.schema import ModelConfig
from fashionbench.serving.bundle import BUNDLE_CLASSIFIER, LEGACY_BUNDLE_CLASSIFIER
from fashionbench.serving.recommender import BundleError
from fashionbench.serving.recommender import _load_classifier as load_bundle_classifier
from fashionbench.tracking.records import is_experiment_run
from fashionbench.tracking.run_models import BackboneStore, BackboneUnavailableError, load_run_model, save_run_model
from fashionbench.tracking.runs import tracked_run
from fashionbench.tracking.settings import tracking_settings
from fashionbench.tracking.store import StoredRun, ensure_experiment, experiment_runs
from fashionbench.training.schema import TrainConfig
from tests.tracked_store import MODEL_NAME


def log_classifier(settings, classifier) -> str:
    with tracked_run(settings) as run:
        run.log_classifier(classifier)
        return run.run_id


def sqlite_settings(directory: Path, experiment: str = "lean"):
    return tracking_settings("sqlite:///" + str(directory / "mlflow.db"), experiment)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_catalogue):
    """A freeze=4 classifier trained one epoch, logged as a run; its predictions on the shop."""
    settings = sqlite_settings(tmp_path_factory.mktemp("lean-store"))
    classifier = build_classifier(ModelConfig(weights=None, freeze=4), 32)
    train_classifier_once(classifier, tiny_catalogue)
    images = tiny_catalogue.split("test").images
    return settings, classifier, log_classifier(settings, classifier), images, predict_in_batches(classifier.model,
                                                                                                  images)


def train_classifier_once(classifier, catalogue):
    from fashionbench.training.fit import train_classifier

    train_classifier(classifier.model, catalogue.split("train"), catalogue.split("val"),
                     TrainConfig(epochs=1, batch_size=16, cache=False), seed=0)


def run_bytes(client: MlflowClient, run_id: str, path: str) -> int:
    return sum(entry.file_size or 0 for entry in client.list_artifacts(run_id, path))


def test_the_model_a_run_logged_comes_back_exactly(trained):
    settings, _, run_id, images, expected = trained
    record = next(run for run in experiment_runs(settings) if run.run_id == run_id)
    rebuilt = StoredRun(settings, record).keras_model()  # what promote's bundle and recommend --run load
    np.testing.assert_allclose(predict_in_batches(rebuilt, images), expected, rtol=1e-6, atol=1e-7)
    # Training moved the model away from its initial weights: equal predictions mean the run's own weights.
    untrained = build_classifier(ModelConfig(weights=None, freeze=4), 32)
    assert not np.allclose(predict_in_batches(untrained.model, images), expected, atol=1e-4)


def test_runs_store_their_trainable_layers_and_share_one_backbone_across_freeze_values(trained):
    settings, _, first, _, _ = trained
    second = log_classifier(settings, build_classifier(ModelConfig(weights=None, freeze=2), 32))
    client = MlflowClient(settings.uri)
    tags = [client.get_run(run_id).data.tags for run_id in (first, second)]
    assert tags[0][TAG_BACKBONE] == tags[1][TAG_BACKBONE]  # same seed, same backbone as built
    assert tags[0][TAG_MODEL_URI] == f"runs:/{first}/model"
    store, fingerprint = tags[0][TAG_BACKBONE_STORE_RUN], tags[0][TAG_BACKBONE]
    assert tags[1][TAG_BACKBONE_STORE_RUN] == store
    copies = [entry.path for entry in client.list_artifacts(store, f"backbones/{fingerprint}")]
    assert copies == [f"backbones/{fingerprint}/{first}.json", f"backbones/{fingerprint}/{first}.npz"]  # written once
    assert run_bytes(client, store, f"backbones/{fingerprint}") > 90e6  # ResNet50's ~94 MB
    assert run_bytes(client, first, "model") < 10e6  # freeze=4: conv5_block3_3 + the head, ~9 MB
    assert run_bytes(client, second, "model") < 5e6  # freeze=2: the head alone, ~4.6 MB
    assert store not in [run.run_id for run in experiment_runs(settings) if is_experiment_run(run)]


def test_parallel_writers_of_one_backbone_leave_only_intact_copies(trained):
    settings, classifier, _, _, _ = trained
    _, backbone = split_classifier(classifier)
    client = MlflowClient(settings.uri)
    experiment_id = ensure_experiment(tracking_settings(settings.uri, "parallel"))
    start, errors, stores = threading.Barrier(3), [], []

    def write(writer: str) -> None:
        try:
            start.wait()
            store = BackboneStore.of_experiment(client, experiment_id)  # created by a racing writer
            store.put(backbone, writer)
            stores.append(store.run_id)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    writers = [threading.Thread(target=write, args=(f"writer-{i}",)) for i in range(3)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    assert not errors
    for store in set(stores):
        assert BackboneStore(client, store).get(backbone.fingerprint).fingerprint == backbone.fingerprint


def test_a_missing_or_damaged_backbone_is_named_never_a_wrong_model(trained, tmp_path):
    _, classifier, _, _, _ = trained
    settings = sqlite_settings(tmp_path)
    run_id = log_classifier(settings, classifier)
    tags = MlflowClient(settings.uri).get_run(run_id).data.tags
    fingerprint = tags[TAG_BACKBONE]
    store_uri = MlflowClient(settings.uri).get_run(tags[TAG_BACKBONE_STORE_RUN]).info.artifact_uri
    folder = Path(store_uri.removeprefix("file://")) / "backbones" / fingerprint
    weights = folder / f"{run_id}.npz"
    with np.load(weights) as stored:
        arrays = {key: stored[key] for key in stored.files}
    first = sorted(arrays)[0]
    arrays[first] = arrays[first] + 1.0  # other weights of the same shapes under the same fingerprint
    np.savez(weights, **arrays)

    with pytest.raises(BackboneUnavailableError) as damaged:
        load_run_model(settings, run_id)
    message = str(damaged.value)
    assert f"run {run_id}: its shared backbone {fingerprint} is missing or damaged" in message
    assert "hash to" in message and "\n" not in message

    assert f"backbones/{fingerprint}/{run_id}.npz: its weights hash to" in message  # the file at fault

    weights.write_bytes(weights.read_bytes()[:1000])  # a partial copy
    with pytest.raises(BackboneUnavailableError, match=f"run {run_id}: its shared backbone {fingerprint} is missing "
                                                       f"or damaged .*backbones/{fingerprint}/{run_id}.npz is "
                                                       "unreadable"):
        load_run_model(settings, run_id)

    for path in folder.iterdir():
        path.unlink()
    with pytest.raises(BackboneUnavailableError, match=f"run {run_id}: its shared backbone {fingerprint} .*no copy"):
        load_run_model(settings, run_id)


def test_a_runs_own_weights_are_checked_too(trained):
    settings, _, run_id, _, _ = trained
    client = MlflowClient(settings.uri)
    own = Path(client.get_run(run_id).info.artifact_uri.removeprefix("file://")) / "model" / "weights.npz"
    original, manifest = own.read_bytes(), (own.parent / "manifest.json").read_text()
    with np.load(own) as stored:
        arrays = {key: stored[key] * 2 for key in stored.files}
    try:
        np.savez(own, **arrays)
        with pytest.raises(ArtifactError, match=f"run {run_id}: its model/ files are damaged: model/weights.npz holds "
                                                "other weights than were saved"):
            load_run_model(settings, run_id)
        own.write_bytes(original[:1000])  # a partial copy
        with pytest.raises(ArtifactError, match=f"run {run_id}: its model/ files are damaged: model/weights.npz is "
                                                "unreadable"):
            load_run_model(settings, run_id)
        (own.parent / "manifest.json").write_text("[]")
        with pytest.raises(ArtifactError, match="model/manifest.json: not a stored model's manifest"):
            load_run_model(settings, run_id)
    finally:
        own.write_bytes(original)
        (own.parent / "manifest.json").write_text(manifest)


def test_a_model_tag_naming_another_trainings_model_is_refused(trained, tmp_path):
    """A run that reused a training points at that run's model (the same training fingerprint); a tag
    edited to name a model of another training is refused, never loaded as this run's."""
    _, classifier, _, _, _ = trained
    settings = sqlite_settings(tmp_path)
    owner, other = log_classifier(settings, classifier), log_classifier(settings, classifier)
    client = MlflowClient(settings.uri)
    client.set_tag(owner, "training_fingerprint", "a")
    client.set_tag(other, "model_uri", f"runs:/{owner}/model")
    client.set_tag(other, "training_fingerprint", "a")  # as a reuse tags it: loads the owner's model
    assert len(load_run_model(settings, other).weights) == len(classifier.model.weights)
    client.set_tag(other, "training_fingerprint", "b")
    with pytest.raises(ArtifactError, match=f"run {other}: its model_uri tag names the model of run {owner}, "
                                            "whose training differs"):
        load_run_model(settings, other)


def test_runs_that_logged_the_whole_keras_model_still_load(tmp_path):
    settings = sqlite_settings(tmp_path)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    with tracked_run(settings) as run:
        # Requirements given: MLflow would otherwise infer them in a subprocess (a minute on 2 cores).
        info = mlflow.keras.log_model(model, name="model", pip_requirements=["keras"])
        mlflow.set_tag(TAG_MODEL_URI, info.model_uri)  # as runs tagged it before lean artifacts
    x = np.ones((1, 3), dtype="float32")
    np.testing.assert_allclose(load_run_model(settings, run.run_id)(x), model(x), rtol=1e-6)
    # promote's bundle of such a run holds it whole, and the recommender loads it so
    save_run_model(settings, run.run_id, tmp_path / "bundle" / BUNDLE_CLASSIFIER)
    np.testing.assert_allclose(load_bundle_classifier(tmp_path / "bundle")(x), model(x), rtol=1e-6)


def test_the_registered_model_holds_the_whole_network(tracked_store, champion, tmp_path):
    """promote's bundle is self-contained: its classifier folder alone is the run's full model, and
    a damaged copy of its backbone is refused naming the file, never served."""
    # The registry named explicitly: another test may have left a different one set in this process.
    client = MlflowClient(tracking_uri=tracked_store.uri, registry_uri=tracked_store.uri)
    source = client.get_model_version_download_uri(MODEL_NAME, champion.version)
    local = Path(mlflow.artifacts.download_artifacts(source, dst_path=str(tmp_path), tracking_uri=tracked_store.uri))
    (folder,) = local.rglob(BUNDLE_CLASSIFIER)
    registered = load_bundle_classifier(folder.parent)
    rebuilt = load_run_model(tracked_store.settings, tracked_store.real_run_id)
    assert len(registered.weights) == len(rebuilt.weights) > 300  # ResNet50 + head: every weight, frozen ones too
    for stored, expected in zip(registered.weights, rebuilt.weights):
        np.testing.assert_array_equal(np.asarray(stored), np.asarray(expected))
    backbone = folder / BACKBONE_FILE
    with np.load(backbone) as stored:
        arrays = {key: stored[key] for key in stored.files}
    first = sorted(arrays)[0]
    arrays[first] = arrays[first] + 1
    np.savez(backbone, **arrays)
    with pytest.raises(BundleError, match=f"not the backbone the model needs: {BACKBONE_FILE}: its weights hash to"):
        load_bundle_classifier(folder.parent)
    # a bundle registered before held the network as one Keras file: it still loads
    registered.save(folder.parent / LEGACY_BUNDLE_CLASSIFIER)
    shutil.rmtree(folder)
    legacy = load_bundle_classifier(folder.parent)
    for stored, expected in zip(legacy.weights, rebuilt.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(stored), np.asarray(expected))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow  # starts a real mlflow server
def test_lean_models_round_trip_through_an_mlflow_server(trained, tmp_path):
    _, classifier, _, images, expected = trained
    port = free_port()
    with (tmp_path / "server.log").open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
             "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
                time.sleep(0.5)
        settings = tracking_settings(url, "served")
        run_id = log_classifier(settings, classifier)
        client = MlflowClient(url)
        assert client.get_experiment_by_name("served").artifact_location.startswith("mlflow-artifacts:")
        np.testing.assert_allclose(predict_in_batches(load_run_model(settings, run_id), images), expected,
                                   rtol=1e-6, atol=1e-7)
        assert list((tmp_path / "artifacts").rglob(f"backbones/*/{run_id}.npz"))  # on the server's disk
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
