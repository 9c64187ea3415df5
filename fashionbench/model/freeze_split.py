"""A classifier cut where its frozen layers end: Keras graph surgery for the frozen-trunk cache.

With ``freeze=N`` every backbone layer but the last N is frozen, and frozen layers are a fixed
function of the image: Keras 3 runs a BatchNormalization layer with ``trainable=False`` in
inference mode (keras.io/guides/transfer_learning, "BatchNormalization layer"), and ResNet50
has no dropout. So the tensors that cross the freeze boundary (every output of a frozen layer
that a trainable layer reads, in a ResNet the residual branch as well as the main one) can be
computed once and the trainable tail + head trained on them alone, exactly
(``training.trunk_cache``).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class FreezeSplit:
    """A classifier cut at its freeze boundary; ``tail`` shares the classifier's layers."""

    trunk: keras.Model  # preprocessed image -> boundary tensors (frozen layers only)
    tail: keras.Model  # boundary tensors -> the classifier's output
    boundary: tuple[str, ...]  # the layers whose outputs cross the boundary, in ``tail.inputs`` order


def split_at_freeze(model: keras.Model) -> tuple[FreezeSplit | None, str]:
    """Cut ``model`` where its frozen layers end; (None, why) when there is nothing to cache.

    There is nothing to cache when no layer with computation is frozen, and caching would be
    wrong when a frozen layer behaves randomly in training (dropout, noise) or when a frozen
    layer sits downstream of a trainable one.
    """
    def frozen(layer: keras.layers.Layer) -> bool:
        return isinstance(layer, keras.layers.InputLayer) or not layer.trainable

    boundary: list = []
    producers: list[str] = []
    for layer in model.layers:
        if frozen(layer):
            continue
        # model._nodes keys the calls of a layer that belong to *this* model's graph as
        # "<id(layer)>_ib-<i>" (keras.src.ops.function.make_node_key); a layer also used in
        # another model, e.g. an earlier tail, has more inbound nodes.
        for i, node in enumerate(layer._inbound_nodes):
            if f"{id(layer)}_ib-{i}" not in model._nodes:
                continue
            for tensor in node.input_tensors:
                producer = tensor._keras_history.operation
                if frozen(producer) and not any(tensor is seen for seen in boundary):
                    boundary.append(tensor)
                    producers.append(producer.name)
    if not boundary or all(isinstance(model.get_layer(name), keras.layers.InputLayer) for name in producers):
        return None, "no frozen layers before the trainable ones (freeze trains the whole backbone)"
    trunk = keras.Model(model.inputs, boundary, name="frozen_trunk")
    trainable_in_trunk = [layer.name for layer in trunk.layers if not frozen(layer)]
    if trainable_in_trunk:
        return None, f"trainable layers {trainable_in_trunk[:3]} feed the frozen ones; no clean boundary"
    random_in_trunk = [layer.name for layer in trunk.layers
                       if isinstance(layer, (keras.layers.Dropout, keras.layers.GaussianNoise,
                                             keras.layers.GaussianDropout, keras.layers.AlphaDropout))]
    if random_in_trunk:
        return None, f"frozen layers {random_in_trunk[:3]} are random in training; their outputs cannot be cached"
    tail = keras.Model(boundary, model.outputs, name="trainable_tail")
    return FreezeSplit(trunk, tail, tuple(producers)), boundary_note(tuple(producers))


def boundary_note(boundary: tuple[str, ...]) -> str:
    """How a run's ``trunk_cache`` tag names a clean cut: the layers whose outputs cross it."""
    return f"boundary {list(boundary)}"


def dominating_tensor(trunk: keras.Model):
    """The output of the deepest layer that every path from the images to the trunk's outputs
    passes through (in a ResNet, the output of the residual block the boundary cuts); None when
    the trunk has a single output (it is its own) or only the input dominates."""
    if len(trunk.outputs) == 1:
        return None
    for layer in reversed(trunk.layers):
        if isinstance(layer, keras.layers.InputLayer):
            return None
        if not reaches_input(trunk.outputs, avoiding=layer.output):
            return layer.output
    return None


def reaches_input(tensors: list, avoiding) -> bool:
    """Whether some path leads back from ``tensors`` to a model input without crossing ``avoiding``."""
    seen, stack = set(), [t for t in tensors if t is not avoiding]
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        operation, node_index, _ = tensor._keras_history
        if isinstance(operation, keras.layers.InputLayer):
            return True
        stack.extend(t for t in operation._inbound_nodes[node_index].input_tensors if t is not avoiding)
    return False
