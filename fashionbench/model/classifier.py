"""The classifier: a Keras ResNet50 backbone, the course's head, and the layer that embeds items.

Inputs are RGB pixels in [0, 255] passed through ``preprocess_images`` (ResNet50's own
"caffe" preprocessing). ``freeze=N`` freezes every backbone layer except the last N;
frozen BatchNorm layers run in inference mode (Keras 3 semantics), so a frozen prefix is a
fixed function of the image.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fashionbench.artifacts import MODEL_SECTION, TAG_WEIGHTS_USED
from fashionbench.data import CATEGORIES
from fashionbench.data.rows import StoredRows, batched_rows
from fashionbench.model.freeze_split import FreezeSplit, split_at_freeze
from fashionbench.model.schema import NO_WEIGHTS, ModelConfig, ModelConfigError
from fashionbench.runtime.console import progress
from fashionbench.stage import StageResult

log = logging.getLogger(__name__)

IMAGENET_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
BATCHES_WITHOUT_PIPELINE = 4  # predict_batches reads inputs of at most this many batches without tf.data


def head_layers(dense_units: Sequence[int]) -> tuple[str, ...]:
    """The names of the head's layers for ``model.dense_units`` (default [512, 128]: pool, dense_512,
    dropout, dense_128, softmax); a Dense layer is named by its width, the second ``_2`` when both
    widths are equal. Any of them but the dropout (or a backbone layer) can be the embedding layer."""
    first, second = dense_units
    return ("pool", f"dense_{first}", "dropout", f"dense_{second}" + ("_2" if second == first else ""), "softmax")


def embedding_layers(dense_units: Sequence[int]) -> tuple[str, ...]:
    """The head's layers an embedding can be read from (``model.embedding_layer``)."""
    return tuple(name for name in head_layers(dense_units) if name != "dropout")


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights were required but could not be loaded."""


@dataclass(frozen=True)
class ShopTail:
    """What runs on the frozen trunk's activations of the shop: the cut (None for a tail built
    without its trunk, ``model.built_tail``), and the tail to the probabilities and the embedding."""

    split: FreezeSplit | None
    model: keras.Model


@dataclass(frozen=True)
class Classifier(StageResult):
    """A Keras classifier (compiled by ``train``) and the facts about how it was built."""

    model: keras.Model
    weights_used: str  # "imagenet", "random" or "file:<path>"
    backbone_layers: int  # how many layers the ResNet50 backbone has (including its input)
    trainable_backbone_layers: int
    embedding_layer: str
    head: tuple[str, ...]  # the head's layers on top of the backbone (head_layers)
    # The trainable backbone layers' weights as built, before training: with the frozen layers
    # (which keep theirs) the backbone a run shares with the experiment (fashionbench.model.parts).
    # Without them a run still stores an exact model, but shares its backbone with no other run.
    built_backbone_weights: dict[str, list[np.ndarray]] = field(default_factory=dict, repr=False, compare=False)

    def shop_model(self) -> keras.Model:
        """A model from the classifier's input to its probabilities and its embedding layer's output
        (built once; one output when the embedding layer is the softmax): one pass over the shop
        gives both, and the untrained and trained passes run one traced function (tracing ResNet50
        costs about a second each time)."""
        if "_shop_model" not in self.__dict__:  # frozen dataclass: memoise in __dict__
            self.__dict__["_shop_model"] = keras.Model(self.model.input, self.shop_outputs())
        return self.__dict__["_shop_model"]

    def shop_outputs(self) -> list:
        """The model's tensors a pass over the shop computes: the probabilities, and the embedding
        layer's output unless that is the softmax."""
        outputs = [self.model.outputs[0]]  # (a model read from JSON gives its one output as a list)
        if self.embedding_layer != self.head[-1]:
            outputs.append(self.model.get_layer(self.embedding_layer).output)
        return outputs

    def shop_tail(self) -> ShopTail | None:
        """The classifier cut at its freeze boundary (``model.freeze_split``) and a model from the
        boundary's activations to what ``shop_model`` gives (built once, for the untrained and the
        trained pass alike); None when nothing is frozen or the embedding layer is (its output is
        not computed from the boundary)."""
        if "_shop_tail" not in self.__dict__:
            split, _ = split_at_freeze(self.model)
            tail = None
            if split is not None and self.embedding_layer in {layer.name for layer in split.tail.layers}:
                tail = ShopTail(split, keras.Model(split.trunk.outputs, self.shop_outputs(), name="shop_tail"))
            self.__dict__["_shop_tail"] = tail
        return self.__dict__["_shop_tail"]

    def probabilities_and_embeddings(self, images, batch_size: int, activations: tuple | None = None
                                     ) -> tuple[np.ndarray, np.ndarray]:
        """The class probabilities and the flattened float32 embeddings of uint8 ``images``, in one
        pass (``shop_model``); or, given the frozen trunk's ``activations`` of the images (one array
        per tensor of ``shop_tail().split.boundary``), the tail's pass over them alone."""
        if activations is None:
            outputs = predict_in_batches(self.shop_model(), images, batch_size)
        else:
            outputs = predict_in_batches(self.shop_tail().model, tuple(activations), batch_size, preprocess=False)
        probabilities, embeddings = (outputs[0], outputs[-1]) if isinstance(outputs, list) else (outputs, outputs)
        return probabilities, embeddings.reshape(len(probabilities), -1).astype(np.float32)

    def stored_architecture(self) -> str:
        """The whole classifier's Keras JSON, as a run stores it (``model.parts.ModelParts``)."""
        return self.model.to_json()

    def named_backbone(self) -> str | None:
        """The fingerprint of a backbone this classifier names without holding its weights (a tail
        built alone, ``model.built_tail``); None when its model holds the backbone."""
        return None

    stage = "model"

    def summary(self) -> str:
        weights = self.weights_used
        if weights == "random":  # model.weights=auto without ImageNet weights at hand: say how to get them
            weights = f"random (no ImageNet weights: put {IMAGENET_NOTOP_FILE} in {keras_models_dir()}/ to use them)"
        return (f"ResNet50 + head, {self.trainable_backbone_layers} trainable backbone layers, embedding layer "
                f"{self.embedding_layer}, weights {weights}")

    def metrics(self) -> dict[str, float]:
        return {MODEL_SECTION + "trainable_backbone_layers": float(self.trainable_backbone_layers)}

    def tags(self) -> dict[str, str]:
        return {TAG_WEIGHTS_USED: self.weights_used}


def preprocess_images(images: np.ndarray | tf.Tensor) -> tf.Tensor:
    """uint8 RGB images (array or tensor) -> the float32 input ResNet50's weights expect."""
    return keras.applications.resnet50.preprocess_input(tf.cast(images, tf.float32))


def _as_float32(*arrays):
    """A batch of activations in the model's input form: one tensor, or a tuple for several inputs."""
    return tuple(tf.cast(a, tf.float32) for a in arrays) if len(arrays) > 1 else tf.cast(arrays[0], tf.float32)


def _batches_here(arrays: tuple[np.ndarray | StoredRows, ...], batch_size: int, prepare) -> Iterator:
    """The batches ``_model_input_batches`` gives, read and prepared in this thread."""
    for start in range(0, len(arrays[0]), batch_size):
        positions = np.arange(start, min(start + batch_size, len(arrays[0])))
        yield prepare(*(np.asarray(array[positions]) for array in arrays))


def _model_input_batches(arrays: tuple[np.ndarray | StoredRows, ...], batch_size: int, prepare) -> tf.data.Dataset:
    """Batches of the arrays (in memory or on disk), in order, read and prepared in parallel ahead of
    the model (prefetched)."""
    dataset = batched_rows(arrays, batch_size).map(  # map passes each array's batch as an argument
        prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def predict_batches(model: keras.Model, images: np.ndarray | StoredRows | tuple[np.ndarray | StoredRows, ...],
                    batch_size: int = 128, preprocess: bool = True) -> Iterator[list[np.ndarray]]:
    """``model``'s outputs (a list, one array per output) for each batch of uint8 images, one
    batch in memory at a time; with ``preprocess=False``, for arrays already in the model's
    input form (a tuple for several inputs, e.g. stored trunk activations), cast to float32.

    Each model runs through its own ``tf.function`` (``_compiled``) rather than
    ``Model.predict``: a run predicts with several models (the trunk, the classifier, the
    embedding model, before and after training), and TensorFlow counts the traces of every
    ``predict`` together (they share one code location), warning about "retracing" in every run.
    """
    arrays = images if isinstance(images, tuple) else (images,)
    prepare = preprocess_images if preprocess else _as_float32
    total = -(-len(arrays[0]) // batch_size)
    # A few batches are read and prepared here, one after the other: a tf.data pipeline costs more
    # to start (its functions traced, its threads started: 0.1-0.6 s) than its overlap saves on them.
    batches = (_batches_here(arrays, batch_size, prepare) if total <= BATCHES_WITHOUT_PIPELINE
               else _model_input_batches(arrays, batch_size, prepare))
    forward = _compiled(model)
    for batch in progress(batches, f"predict ({model.name})", total):
        outputs = forward(batch)
        yield [np.asarray(output) for output in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


def predict_in_batches(model: keras.Model, images: np.ndarray | StoredRows | tuple[np.ndarray | StoredRows, ...],
                       batch_size: int = 128, preprocess: bool = True) -> np.ndarray | list[np.ndarray]:
    """``model`` outputs (one array, or one per output) for uint8 images, predicted a batch at a
    time (``predict_batches``, ``preprocess`` as there); for outputs small per item
    (probabilities, embeddings)."""
    batches = list(predict_batches(model, images, batch_size, preprocess))
    if not batches:  # no images: the outputs' shapes from the model
        arrays = images if isinstance(images, tuple) else (images,)
        empty = tuple(np.zeros((0, *array.shape[1:]), np.float32) for array in arrays)
        inputs = preprocess_images(empty[0]) if preprocess else (empty if len(empty) > 1 else empty[0])
        return model.predict(inputs, verbose=0)
    outputs = [np.concatenate([batch[i] for batch in batches]) for i in range(len(batches[0]))]
    return outputs if len(model.outputs) > 1 else outputs[0]


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled(model: keras.Model):
    """``model`` in inference mode as a graph function, made once per model and traced once: its
    input signature leaves the batch size open, so the last, smaller batch runs the same graph
    (tracing ResNet50 takes seconds; without a signature a partial batch traced it again).
    The function holds the model weakly: a model no longer used is freed with it."""
    if model not in _COMPILED:
        specs = [tf.TensorSpec((None, *tensor.shape[1:]), tf.float32) for tensor in model.inputs]
        _COMPILED[model] = tf.function(_Inference(model), input_signature=[specs[0] if len(specs) == 1
                                                                           else tuple(specs)])
    return _COMPILED[model]


class _Inference:
    """``model(batch, training=False)``, the model held weakly. A callable object rather than a
    function: TensorFlow counts the traces of a function by its code, so one lambda for every
    model would add up their traces and warn about "retracing"; an object is counted alone."""

    def __init__(self, model: keras.Model) -> None:
        self.model = weakref.ref(model)

    def __call__(self, batch):
        return self.model()(batch, training=False)


def build_classifier(options: ModelConfig, image_size: int) -> Classifier:
    """Build ResNet50 (no top) + GlobalAveragePooling -> Dense relu -> Dropout -> Dense relu -> softmax
    for square images of ``image_size`` pixels, freezing all but the last ``options.freeze``
    backbone layers; Keras' random state is seeded with ``options.seed`` first.

    Raises ModelConfigError for an unknown embedding layer or a file that is not ResNet50
    weights, and WeightsUnavailableError when ``weights="imagenet"`` cannot be loaded.
    """
    keras.utils.set_random_seed(options.seed)
    backbone, weights_used = _backbone(options.weights, (image_size, image_size, 3))
    n_layers = len(backbone.layers)
    for layer in backbone.layers[: n_layers - options.freeze]:
        layer.trainable = False
    built = {layer.name: layer.get_weights() for layer in backbone.layers[n_layers - options.freeze:] if layer.weights}

    first, second = options.dense_units
    pool, dense_first, dropout, dense_second, softmax = head_layers(options.dense_units)
    x = keras.layers.GlobalAveragePooling2D(name=pool)(backbone.output)
    x = keras.layers.Dense(first, activation="relu", name=dense_first)(x)
    x = keras.layers.Dropout(options.dropout, name=dropout)(x)
    x = keras.layers.Dense(second, activation="relu", name=dense_second)(x)
    # float32 whatever the global dtype policy: under mixed_float16 a float16 softmax loses
    # precision and can overflow (the Keras mixed-precision guide); under float32 it changes nothing.
    outputs = keras.layers.Dense(len(CATEGORIES), activation="softmax", name=softmax, dtype="float32")(x)
    model = keras.Model(backbone.input, outputs, name="fashion_classifier")

    valid_layers = [layer.name for layer in model.layers]
    if options.embedding_layer not in valid_layers:
        raise ModelConfigError(
            f"model.embedding_layer {options.embedding_layer!r} is not a layer of the model; use one of "
            f"{list(embedding_layers(options.dense_units))} (or any backbone layer name, e.g. 'conv5_block3_out')"
        )
    return Classifier(model, weights_used, n_layers, options.freeze, options.embedding_layer,
                      head_layers(options.dense_units), built)


def keras_models_dir() -> Path:
    """Where Keras looks for (and downloads) application weights: $KERAS_HOME/models, else ~/.keras/models."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def _backbone(weights: str | None, input_shape: tuple[int, int, int]) -> tuple[keras.Model, str]:
    """ResNet50 without its top, with the requested weights, and a description of what was used."""
    if weights in NO_WEIGHTS:
        return _resnet50(None, input_shape), "random"
    if weights in ("imagenet", "auto"):
        try:
            # Trying (auto) is quiet: Keras prints "Downloading data from ..." before failing offline.
            with contextlib.redirect_stdout(io.StringIO()) if weights == "auto" else contextlib.nullcontext():
                return _resnet50("imagenet", input_shape), "imagenet"
        except Exception as error:  # keras.utils.get_file raises a bare Exception offline
            if weights == "auto":
                # Said once in the model stage's line ("weights random, ..."); the details go to the log file.
                log.info("no ImageNet weights (not in the Keras cache, and the download failed: %s); random "
                         "initialisation", error)
                return _resnet50(None, input_shape), "random"
            raise WeightsUnavailableError(
                f"model.weights=imagenet but the ImageNet weights could not be loaded ({error}). "
                f"Copy {IMAGENET_NOTOP_FILE} into {keras_models_dir()}/ (the Keras cache), or pass "
                f"model.weights=/path/to/{IMAGENET_NOTOP_FILE}, or use model.weights=auto to fall "
                f"back to random initialisation."
            ) from None
    path = Path(weights)  # ModelConfig checked that the file exists
    try:
        return _resnet50(str(path), input_shape), f"file:{path.resolve()}"
    except (ValueError, OSError) as error:  # OSError: h5py cannot read the file at all
        raise ModelConfigError(
            f"model.weights={weights!r}: the file is not a weights file for ResNet50 without its "
            f"top ({error})"
        ) from None


def _resnet50(weights: str | None, input_shape: tuple[int, int, int]) -> keras.Model:
    return keras.applications.ResNet50(include_top=False, weights=weights, input_shape=input_shape)
