"""Embedding throughput of ``embed_items`` against a bare ``model.predict`` over the same arrays.

    python experiments/embedding_throughput.py                   # ~ 1-2 minutes on 2 cores
    python experiments/embedding_throughput.py --items 256 --image-size 32

Both embed the same decoded uint8 images with the same model (``Classifier.shop_model``: the
probabilities and the embedding in one pass, as a run embeds its shop): ``embed_items`` reads
them through tf.data (batched, preprocessed in the pipeline, prefetched); the bare reference
preprocesses the whole array up front (not timed) and calls ``model.predict`` on it. Best of
``--repeats``, interleaved, after one warm-up each. Ratio > 1: the harness is faster than the bare call.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from fashionbench.data.synthetic import SyntheticSource  # noqa: E402
from fashionbench.model.classifier import build_classifier, preprocess_images  # noqa: E402
from fashionbench.model.embed import embed_items  # noqa: E402
from fashionbench.model.schema import ModelConfig  # noqa: E402


def best_seconds(functions: list, repeats: int) -> list[float]:
    """Best wall seconds of each function; calls interleaved so that both see the same
    background load on a shared machine, after one warm-up each (tracing is not throughput)."""
    for function in functions:
        function()
    best = [np.inf] * len(functions)
    for _ in range(repeats):
        for i, function in enumerate(functions):
            start = time.perf_counter()
            function()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--scale", type=float, default=0.1,
                        help="times the course's split sizes; the test split is embedded")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    shop = SyntheticSource(seed=0, image_size=args.image_size, scale=args.scale).load().split("test")
    classifier = build_classifier(ModelConfig(weights=None, seed=0), args.image_size)
    model = classifier.shop_model()  # what embed_items runs: the probabilities and the embedding in one pass
    preprocessed = np.asarray(preprocess_images(shop.images))
    print(f"machine: {os.cpu_count()} CPU cores ({platform.machine()}), no GPU; {len(shop)} images at "
          f"{args.image_size} px, embedding layer {classifier.embedding_layer}, best of {args.repeats}")
    print(f"{'batch':>5} {'embed_items img/s':>17} {'bare predict img/s':>18} {'ratio':>6}")
    for batch_size in args.batch_sizes:
        harness, bare = best_seconds([lambda: embed_items(classifier, shop, batch_size),
                                      lambda: model.predict(preprocessed, batch_size=batch_size, verbose=0)],
                                     args.repeats)
        print(f"{batch_size:>5} {len(shop) / harness:>17.1f} {len(shop) / bare:>18.1f} {bare / harness:>5.2f}x",
              flush=True)
    print("ratio: embed_items throughput / bare model.predict throughput (target >= 1.0x)")


if __name__ == "__main__":
    main()
