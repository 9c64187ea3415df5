"""How far float rounding alone moves a model trained from random weights: the yardstick for
the trunk cache's cached-vs-uncached differences.

    python experiments/trunk_cache/sensitivity.py            # ~ 1 minute on 2 cores
    python experiments/trunk_cache/sensitivity.py --freeze 4

Trains the same classifier twice without the cache, the second time with conv1's kernel
scaled by (1 + 1e-6), i.e. a change of the size of the rounding differences between the
cache's predict-mode activations and fit's; prints the loss curves, test accuracy and the
largest change of a test-set probability.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from fashionbench.data.synthetic import SyntheticSource  # noqa: E402
from fashionbench.model.classifier import build_classifier, predict_in_batches  # noqa: E402
from fashionbench.model.schema import ModelConfig  # noqa: E402
from fashionbench.training.fit import train_classifier  # noqa: E402
from fashionbench.training.schema import TrainConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--freeze", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--scale", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--relative-change", type=float, default=1e-6)
    args = parser.parse_args()

    catalogue = SyntheticSource(seed=0, image_size=args.image_size, scale=args.scale, min_per_split=2).load()
    train, val, test = (catalogue.split(s) for s in ("train", "val", "test"))
    probabilities = []
    for change in (0.0, args.relative_change):
        classifier = build_classifier(ModelConfig(weights=None, freeze=args.freeze, seed=0), args.image_size)
        conv1 = classifier.model.get_layer("conv1_conv")
        kernel, bias = conv1.get_weights()
        conv1.set_weights([kernel * (1 + change), bias])
        options = TrainConfig(epochs=args.epochs, batch_size=32)
        training = train_classifier(classifier.model, train, val, options, seed=0)
        probabilities.append(predict_in_batches(classifier.model, test.images))
        accuracy = np.mean(probabilities[-1].argmax(axis=1) == test.labels)
        print(f"conv1 kernel x (1 + {change:g}): loss per epoch {np.round(training.history['loss'], 4).tolist()}, "
              f"test accuracy {accuracy:.3f}")
    print(f"max |change of a test probability| from a {args.relative_change:g} relative change: "
          f"{np.abs(probabilities[0] - probabilities[1]).max():.3f}")


if __name__ == "__main__":
    main()
