"""The classifier without its frozen trunk: what a cached run builds instead of ResNet50.

A run with the trunk cache trains and runs only the layers past the freeze boundary, on the
trunk's stored activations (``training.trunk_cache``); once the activations of its images are
stored, its frozen trunk has nothing left to compute. Building the whole ResNet50 to reach that
tail costs about a second (318 variables created, 23.5M initial values drawn, 176 layers built):
a third of a cached run's harness. So the first cached run of a model records what building it
gave (``BuiltTail``: the tail's architecture and every variable of its layers as built, the
whole classifier's architecture, the hashes that name its trunk and its backbone, and Python's
global random state after the build, which Keras draws its initialisers' seeds from), and a
later run with the same build builds the tail alone from that record (``TailClassifier``, 0.05 s
for freeze=4): the same layers, the same starting values, the same random state, so the same
run, metric for metric (tests/test_trunk_free.py).

``training.trunk_free`` keeps the records in the trunk cache and decides when a run can start
from one.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import keras
import numpy as np

from fashionbench.model.classifier import Classifier, ShopTail
from fashionbench.model.freeze_split import FreezeSplit
from fashionbench.model.parts import LayerWeights, layers_hash


@dataclass(frozen=True)
class TailClassifier(Classifier):
    """A classifier of which only the tail past the freeze boundary was built: ``model`` takes the
    boundary's activations (one input per tensor of ``boundary``, in that order) to the class
    probabilities. It classifies and embeds stored activations only, never images."""

    whole_architecture: str = ""  # the whole classifier's Keras JSON, as built (not compiled)
    backbone_fingerprint: str = ""  # fashionbench.model.parts.Backbone.fingerprint of the backbone as built

    def shop_model(self) -> keras.Model:
        raise TypeError("a TailClassifier has no frozen trunk: it classifies the trunk's stored activations only")

    def shop_tail(self):
        """The tail to the probabilities and the embedding layer's output, built once."""
        if "_shop_tail" not in self.__dict__:
            shop_model = keras.Model(self.model.inputs, self.shop_outputs(), name="shop_tail")
            self.__dict__["_shop_tail"] = ShopTail(None, shop_model)
        return self.__dict__["_shop_tail"]

    def probabilities_and_embeddings(self, images, batch_size: int, activations: tuple | None = None
                                     ) -> tuple[np.ndarray, np.ndarray]:
        if activations is None:
            raise TypeError("a TailClassifier needs the frozen trunk's activations of the images")
        return super().probabilities_and_embeddings(images, batch_size, activations)

    def stored_architecture(self) -> str:
        """The whole classifier's JSON as ``Model.to_json`` writes it once compiled as the tail was:
        the architecture the whole build's run stores."""
        config = json.loads(self.whole_architecture)
        config["compile_config"] = self.model.get_compile_config()
        return json.dumps(config)  # as Model.to_json writes it

    def named_backbone(self) -> str:
        return self.backbone_fingerprint


@dataclass(frozen=True)
class BuiltTail:
    """What building a classifier gave that a cached run needs, without its frozen trunk."""

    tail_architecture: str  # the tail's Keras JSON (FreezeSplit.tail)
    architecture: str  # the whole classifier's, before compiling
    variables: LayerWeights  # every variable of each tail layer as built (seed generator states too)
    boundary: tuple[str, ...]  # the layers whose outputs the tail takes (FreezeSplit.boundary)
    trunk_fingerprint: str  # training.trunk_cache.weights_fingerprint of the frozen trunk
    seed: int  # model.seed: what the build seeded Keras, NumPy, TensorFlow and Python with
    random_state: tuple  # random.getstate() right after the build
    weights_used: str
    backbone_layers: int
    trainable_backbone_layers: int
    embedding_layer: str
    head: tuple[str, ...]
    backbone_fingerprint: str = ""  # known once the run has split its model (filled in before storing)

    @classmethod
    def capture(cls, classifier: Classifier, split: FreezeSplit, trunk_fingerprint: str, seed: int,
                random_state: tuple) -> BuiltTail:
        """The record of ``classifier`` as just built (before training changes its weights);
        ``random_state``: ``random.getstate()`` taken right after ``build_classifier``."""
        variables = {layer.name: [np.array(keras.ops.convert_to_numpy(v)) for v in layer.variables]
                     for layer in split.tail.layers if layer.variables}
        return cls(split.tail.to_json(), classifier.model.to_json(), variables, split.boundary, trunk_fingerprint,
                   seed, random_state, classifier.weights_used, classifier.backbone_layers,
                   classifier.trainable_backbone_layers, classifier.embedding_layer, classifier.head)

    def classifier(self) -> TailClassifier:
        """The tail built from the record, every variable as the whole build left it, and the global
        random states as the whole build left them: seeded as ``build_classifier`` seeds them (TensorFlow's
        seeds the shuffling of training), Python's drawn from as far as the whole build drew.
        Raises ValueError when the record does not fit the tail it describes."""
        keras.utils.set_random_seed(self.seed)
        model = keras.models.model_from_json(self.tail_architecture)
        for layer in model.layers:
            stored = self.variables.get(layer.name, [])
            if len(stored) != len(layer.variables):
                raise ValueError(f"layer {layer.name!r} has {len(layer.variables)} variables, the record "
                                 f"{len(stored)}")
            for variable, value in zip(layer.variables, stored, strict=True):
                if tuple(variable.shape) != value.shape:
                    raise ValueError(f"variable {variable.path} has shape {tuple(variable.shape)}, the record "
                                     f"{value.shape}")
                variable.assign(value)
        random.setstate(self.random_state)
        return TailClassifier(model, self.weights_used, self.backbone_layers, self.trainable_backbone_layers,
                              self.embedding_layer, self.head, whole_architecture=self.architecture,
                              backbone_fingerprint=self.backbone_fingerprint)

    def meta(self) -> dict:
        """Everything but the variables, as JSON values, with a hash of the whole record."""
        meta = {"tail_architecture": self.tail_architecture, "architecture": self.architecture,
                "boundary": list(self.boundary),
                "trunk_fingerprint": self.trunk_fingerprint, "seed": self.seed,
                "random_state": _state_to_json(self.random_state),
                "weights_used": self.weights_used, "backbone_layers": self.backbone_layers,
                "trainable_backbone_layers": self.trainable_backbone_layers,
                "embedding_layer": self.embedding_layer, "head": list(self.head),
                "backbone_fingerprint": self.backbone_fingerprint}
        return {**meta, "hash": _record_hash(meta, self.variables)}

    @classmethod
    def from_meta(cls, meta: dict, variables: LayerWeights) -> BuiltTail:
        """The record ``meta()`` and its variables describe; ValueError when they are not one
        (a field missing or of another type, or the hash differs)."""
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
        expected = meta.get("hash")
        fields = {key: value for key, value in meta.items() if key != "hash"}
        if expected != _record_hash(fields, variables):
            raise ValueError("its hash differs from the record's (damaged or edited)")
        for name in ("boundary", "head"):
            if not isinstance(meta.get(name), list) or not all(isinstance(layer, str) for layer in meta[name]):
                raise ValueError(f"not a built tail's record ({name} is not a list of layer names)")
        try:
            return cls(str(meta["tail_architecture"]), str(meta["architecture"]), variables,
                       tuple(meta["boundary"]), str(meta["trunk_fingerprint"]),
                       int(meta["seed"]), _state_from_json(meta["random_state"]), str(meta["weights_used"]),
                       int(meta["backbone_layers"]), int(meta["trainable_backbone_layers"]),
                       str(meta["embedding_layer"]), tuple(meta["head"]), str(meta["backbone_fingerprint"]))
        except (KeyError, TypeError, ValueError, OverflowError) as error:
            raise ValueError(f"not a built tail's record ({type(error).__name__}: {error})") from None


def _record_hash(meta: dict, variables: LayerWeights) -> str:
    return layers_hash(variables, json.dumps(meta, sort_keys=True))


def _state_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _state_from_json(value) -> tuple:
    version, internal, gauss = value
    return int(version), tuple(int(n) for n in internal), gauss

