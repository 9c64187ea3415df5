"""The classifier's options (``model.*``, ``configs/model/resnet50.yaml``): the backbone's weights,
how much of it trains, the head and which layer embeds the items (``model.classifier``)."""

from __future__ import annotations

from dataclasses import dataclass

from fashionbench.options import DEFAULT_SEED, ConfigError, Stage, option
from fashionbench.runtime.paths import absolute_path

# ResNet50 without its top has 175 layers, its input layer included: freeze=N trains the last N.
RESNET50_LAYERS = 175
NO_WEIGHTS = (None, "null", "none", "random")
# Images per prediction batch unless eval.batch_size says otherwise (classifying, embedding, caching).
PREDICTION_BATCH_SIZE = 128


class ModelConfigError(ConfigError):
    """An invalid ``model.*`` option."""


@dataclass
class ModelConfig:
    """The classifier (fashionbench.model.classifier): ResNet50 backbone, the course's head, the embedding layer."""

    # imagenet | auto (ImageNet if Keras can load it, else random) | null (random) | /path/to/weights.h5
    weights: str | None = option("auto", decides=Stage.TRAINING)
    freeze: int = option(4, decides=Stage.TRAINING)  # train the last N backbone layers, freeze the rest (0..175)
    # pool (2048) | dense_<dense_units[0]> | dense_<dense_units[1]> | softmax | any backbone layer name
    embedding_layer: str = option("pool", decides=Stage.EMBEDDING)
    # the head's two Dense layers, named by their widths: dense_512, dense_128
    dense_units: list[int] = option(factory=lambda: [512, 128], decides=Stage.TRAINING)
    dropout: float = option(0.3, decides=Stage.TRAINING)
    # initial weights, dropout and the order training visits the items
    seed: int = option(DEFAULT_SEED, decides=Stage.TRAINING, seed=True)

    def __post_init__(self) -> None:
        if isinstance(self.freeze, bool) or not isinstance(self.freeze, int) or not 0 <= self.freeze <= RESNET50_LAYERS:
            raise ModelConfigError(
                f"model.freeze must be an integer in [0, {RESNET50_LAYERS}] (ResNet50 has {RESNET50_LAYERS} "
                f"layers; freeze=N trains the last N), got {self.freeze!r}"
            )
        if len(self.dense_units) != 2 or min(self.dense_units) < 1:
            raise ModelConfigError(f"model.dense_units must be two layer widths >= 1, got {list(self.dense_units)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.weights not in (*NO_WEIGHTS, "imagenet", "auto"):
            path = absolute_path(self.weights)  # relative to where the command was launched, in every job
            if not path.is_file():
                raise ModelConfigError(
                    f"model.weights={self.weights!r}: expected 'imagenet', 'auto', null or the path of an "
                    f"existing weights file for ResNet50 without its top, and no file is at {path}"
                )
            self.weights = str(path)
