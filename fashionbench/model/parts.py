"""A run's classifier as the parts it stores: what only the run has, and a backbone it shares.

With freeze=4 a run trains about 9 MB of a 95 MB network; the rest are backbone weights that
training never changes, the same in every run built from the same weights (ImageNet, a file,
or random with the same seed). So a run stores its architecture and the weights of its
trainable layers (``ModelParts``), and names by fingerprint the backbone as it was built
(``Backbone``: every backbone layer, before training), which the experiment stores once. A
frozen layer keeps the weights it was built with, so runs with freeze=2, 4 and 8 of one
source share one backbone.

No mlflow here: ``fashionbench.tracking.run_models`` stores and fetches these files. No Keras
either, but in ``assemble``: the files are written, read and checked against their hashes with
numpy alone, so ``promote`` gathers a run's classifier into a bundle without TensorFlow
(``save_classifier_files``), and the bundle's classifier is assembled where it is served.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fashionbench.artifacts import ArtifactError

if TYPE_CHECKING:  # Keras is imported where a network is built: storing and checking parts needs only numpy
    import keras

    from fashionbench.model.classifier import Classifier

# The files of a run's model (inside its MODEL artifact folder) and of a stored backbone.
ARCHITECTURE_FILE = "architecture.json"  # Keras' model config: layers, their wiring and trainable flags
WEIGHTS_FILE = "weights.npz"  # the trainable layers' weights (BatchNorm statistics included)
MANIFEST_FILE = "manifest.json"  # which backbone (fingerprint) supplies the other layers
# A whole classifier in one folder (a recommender bundle's): the parts above and the backbone beside them.
BACKBONE_FILE = "backbone.npz"
BACKBONE_MARKER_FILE = "backbone.json"
WHOLE_MODEL_FILE = "model.keras"  # instead of all those: a run's model logged whole, before lean artifacts

LayerWeights = dict[str, list[np.ndarray]]  # layer name -> its weights, in ``layer.weights`` order


class BackboneMismatchError(ArtifactError):
    """Stored backbone files whose weights do not hash to the fingerprint they are stored under."""


@dataclass(frozen=True)
class Backbone:
    """The backbone's weights as built (before training), by layer; ``source`` says how they were
    made ("imagenet", "random" or "file")."""

    layers: LayerWeights
    source: str

    @cached_property
    def fingerprint(self) -> str:
        """A hash of the source and of every weight's layer, position, dtype, shape and bytes."""
        return layers_hash(self.layers, self.source)

    def save(self, weights: Path, marker: Path) -> None:
        """The weights (npz), then a small JSON ``marker`` with the fingerprint: a copy whose
        marker exists is complete."""
        save_layers(self.layers, weights)
        marker.write_text(json.dumps({"fingerprint": self.fingerprint, "source": self.source,
                                      "bytes": weights.stat().st_size}))

    @classmethod
    def load(cls, weights: Path, marker: Path, fingerprint: str) -> Backbone:
        """The backbone stored as ``fingerprint``; BackboneMismatchError when its files are
        damaged or hold other weights."""
        source = _read_file(marker, lambda path: str(json.loads(path.read_text())["source"]), BackboneMismatchError)
        backbone = cls(_read_file(weights, load_layers, BackboneMismatchError), source)
        if backbone.fingerprint != fingerprint:
            raise BackboneMismatchError(f"{weights.name}: its weights hash to {backbone.fingerprint}, "
                                        f"not {fingerprint}")
        return backbone


@dataclass(frozen=True)
class ModelParts:
    """What a run stores of its classifier: the architecture, the trainable layers' weights, and
    the fingerprint of the backbone that supplies every other layer (None: no frozen layer)."""

    architecture: str
    own: LayerWeights
    backbone_fingerprint: str | None

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / ARCHITECTURE_FILE).write_text(self.architecture)
        save_layers(self.own, directory / WEIGHTS_FILE)
        (directory / MANIFEST_FILE).write_text(json.dumps({"backbone_fingerprint": self.backbone_fingerprint,
                                                           "weights_hash": layers_hash(self.own)}))

    @classmethod
    def load(cls, directory: Path) -> ModelParts:
        """The parts ``save`` wrote; ArtifactError naming the file that is missing, unreadable or
        holds other weights than were saved."""
        manifest = _read_file(directory / MANIFEST_FILE, lambda path: json.loads(path.read_text()), ArtifactError)
        if not isinstance(manifest, dict) or not {"backbone_fingerprint", "weights_hash"} <= manifest.keys():
            raise ArtifactError(f"{MANIFEST_FILE}: not a stored model's manifest (backbone_fingerprint and "
                                "weights_hash expected)")
        parts = cls(_read_file(directory / ARCHITECTURE_FILE, Path.read_text, ArtifactError),
                    _read_file(directory / WEIGHTS_FILE, load_layers, ArtifactError), manifest["backbone_fingerprint"])
        expected = manifest["weights_hash"]
        if layers_hash(parts.own) != expected:
            raise ArtifactError(f"{WEIGHTS_FILE} holds other weights than were saved (its hash differs)")
        return parts


def split_classifier(classifier: Classifier) -> tuple[ModelParts, Backbone | None]:
    """The classifier (trained or not) as the parts a run stores and the backbone it shares
    (None when no layer is frozen: the run then owns every weight; None too for a classifier that
    names its backbone without holding it, a tail built alone: its parts name that backbone)."""
    model = classifier.model
    own = {layer.name: layer.get_weights() for layer in model.layers if layer.trainable and layer.weights}
    if classifier.named_backbone() is not None:
        return ModelParts(classifier.stored_architecture(), own, classifier.named_backbone()), None
    if all(layer.trainable for layer in model.layers if layer.weights):
        return ModelParts(classifier.stored_architecture(), own, None), None
    backbone = built_backbone(classifier)
    return ModelParts(classifier.stored_architecture(), own, backbone.fingerprint), backbone


def built_backbone(classifier: Classifier) -> Backbone:
    """Every backbone layer's weights as built (made once per classifier: its fingerprint hashes
    94 MB). Frozen layers still hold the weights they were built with; trainable ones may have
    changed, so their weights as built come from the copy build_classifier kept."""
    if "_built_backbone" not in classifier.__dict__:  # a frozen dataclass: memoised in __dict__
        classifier.__dict__["_built_backbone"] = Backbone(
            {layer.name: classifier.built_backbone_weights.get(layer.name) or layer.get_weights()
             for layer in classifier.model.layers if layer.weights and layer.name not in classifier.head},
            classifier.weights_used.split(":")[0])
    return classifier.__dict__["_built_backbone"]


def assemble(parts: ModelParts, backbone: Backbone | None) -> keras.Model:
    """The classifier ``parts`` describe, its frozen layers' weights from ``backbone`` (uncompiled:
    for inference). Raises ArtifactError when a layer's weights are missing or do not fit."""
    import keras

    if (backbone.fingerprint if backbone else None) != parts.backbone_fingerprint:
        raise ArtifactError(f"the model needs backbone {parts.backbone_fingerprint}, not "
                            f"{backbone.fingerprint if backbone else None}")
    model = keras.models.model_from_json(parts.architecture)
    for layer in model.layers:
        if not layer.weights:
            continue
        weights = parts.own.get(layer.name) or (backbone.layers.get(layer.name) if backbone else None)
        if weights is None:
            raise ArtifactError(f"no stored weights for layer {layer.name!r} (neither the run's nor the backbone's)")
        try:
            layer.set_weights(weights)
        except ValueError as error:
            raise ArtifactError(f"the stored weights of layer {layer.name!r} do not fit it: {error}") from None
    return model


def save_classifier_files(parts: ModelParts, backbone: Backbone | None, directory: Path) -> None:
    """The whole classifier in ``directory``: ``parts`` and, beside them, the backbone they name."""
    parts.save(directory)
    if backbone is not None:
        backbone.save(directory / BACKBONE_FILE, directory / BACKBONE_MARKER_FILE)


def load_classifier_files(directory: Path) -> tuple[ModelParts, Backbone | None]:
    """What ``save_classifier_files`` wrote in ``directory``, every file checked against its hash
    (``assemble`` builds the network). Raises ArtifactError naming the file that is missing or damaged."""
    parts = ModelParts.load(directory)
    if parts.backbone_fingerprint is None:
        return parts, None
    try:
        backbone = Backbone.load(directory / BACKBONE_FILE, directory / BACKBONE_MARKER_FILE,
                                 parts.backbone_fingerprint)
    except BackboneMismatchError as error:
        raise ArtifactError(f"not the backbone the model needs: {error}") from None
    return parts, backbone


def layers_hash(layers: LayerWeights, salt: str = "") -> str:
    """A hash of ``salt`` and of every weight's layer, position, dtype, shape and bytes."""
    digest = hashlib.blake2b(salt.encode(), digest_size=16)
    for name in sorted(layers):
        for i, value in enumerate(layers[name]):
            value = np.ascontiguousarray(value)
            digest.update(f"|{name}:{i}:{value.dtype}:{value.shape}|".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def _read_file(path: Path, read, error_type: type[Exception]):
    """``read(path)``; ``error_type`` naming the file (not the folder it was downloaded to) when it is
    missing, truncated or not what it should be."""
    try:
        return read(path)
    except FileNotFoundError:
        raise error_type(f"{path.name} is missing") from None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:
        raise error_type(f"{path.name} is unreadable ({type(error).__name__}: {error})") from None


def save_layers(layers: LayerWeights, path: Path) -> None:
    # Uncompressed: float32 weights hardly compress (zlib: 7 % of normal-distributed ones) and load faster so.
    np.savez(path, **{f"{name}:{i}": value for name, values in layers.items() for i, value in enumerate(values)})


def load_layers(path: Path) -> LayerWeights:
    layers: LayerWeights = {}
    with np.load(path, allow_pickle=False) as stored:
        keys = sorted(stored.files, key=lambda key: (key.rsplit(":", 1)[0], int(key.rsplit(":", 1)[1])))
        for key in keys:
            layers.setdefault(key.rsplit(":", 1)[0], []).append(stored[key])
    return layers
