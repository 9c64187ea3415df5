"""A freeze=2,4,8 sweep with the frozen-trunk cache against the same sweep without it.

    python experiments/trunk_cache/sweep.py                 # ~ 3-4 minutes on 2 cores
    python experiments/trunk_cache/sweep.py --freeze 8 4 2   # later values start from earlier boundaries
    python experiments/trunk_cache/sweep.py --image-size 32 --scale 0.02 --epochs 2

For each freeze value: build the classifier (same seed) and train it, uncached, then cached
with an empty cache (cold: the activations are computed), then again (warm: a second run of
the sweep, everything read from disk). The seconds are what a sweep pays for training:
building the model, getting the activations, and fit. Test-set probabilities and accuracy of
the cached classifier are compared with the uncached one's (float rounding differences of
~1e-6 at the boundary can grow over epochs when training from random weights is chaotic).
Times are measured, never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from fashionbench.config import ModelConfig, TrainConfig  # noqa: E402
from fashionbench.data.synthetic import SyntheticSource  # noqa: E402
from fashionbench.model import build_classifier, predict_in_batches  # noqa: E402
from fashionbench.train import train_classifier  # noqa: E402
from fashionbench.trunk_cache import TrunkCache  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--freeze", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--scale", type=float, default=0.05, help="times the course's split sizes")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    args = parser.parse_args()

    catalogue = SyntheticSource(seed=0, image_size=args.image_size, scale=args.scale, min_per_split=2).load()
    train, val, test = (catalogue.split(s) for s in ("train", "val", "test"))
    print(f"machine: {os.cpu_count()} CPU cores ({platform.machine()}), no GPU; {len(train)} train / {len(val)} "
          f"val / {len(test)} test images at {args.image_size} px, {args.epochs} epochs, batch {args.batch_size}, "
          f"cache dtype {args.dtype}")
    cache_dir = tempfile.mkdtemp(prefix="fashionbench-trunk-cache-bench-")
    derived_in_cold_sweep = 0

    def attempt(freeze: int, cache: TrunkCache | None) -> tuple[float, np.ndarray, str]:
        start = time.perf_counter()
        classifier = build_classifier(ModelConfig(weights=None, freeze=freeze, seed=0), args.image_size)
        options = TrainConfig(epochs=args.epochs, batch_size=args.batch_size)
        training = train_classifier(classifier.model, train, val, options, seed=0, cache=cache)
        seconds = time.perf_counter() - start
        report = training.cache
        hits = f"{report.hits} hit / {report.misses} miss ({report.derived} derived)" if report.used else "-"
        return seconds, predict_in_batches(classifier.model, test.images), hits

    # Start TensorFlow's runtime before timing, so that the first attempt does not pay for it.
    predict_in_batches(build_classifier(ModelConfig(weights=None), args.image_size).model, test.images[:2])

    totals = {"uncached": 0.0, "cold": 0.0, "warm": 0.0}
    print(f"{'freeze':>6} {'uncached s':>10} {'cold s':>8} {'warm s':>8} {'warm cache':>26} {'max |dp|':>9} "
          f"{'test acc uncached / cached':>26}")
    for freeze in args.freeze:
        uncached, reference, _ = attempt(freeze, None)
        cold, cold_probabilities, cold_hits = attempt(freeze, TrunkCache(cache_dir, dtype=args.dtype))
        derived_in_cold_sweep += "(2 derived)" in cold_hits
        warm, warm_probabilities, hits = attempt(freeze, TrunkCache(cache_dir, dtype=args.dtype))
        difference = max(np.abs(cold_probabilities - reference).max(), np.abs(warm_probabilities - reference).max())
        totals["uncached"] += uncached
        totals["cold"] += cold
        totals["warm"] += warm
        accuracy = [float(np.mean(p.argmax(axis=1) == test.labels)) for p in (reference, warm_probabilities)]
        print(f"{freeze:>6} {uncached:>10.1f} {cold:>8.1f} {warm:>8.1f} {hits:>26} {difference:>9.1e} "
              f"{accuracy[0]:>17.3f} / {accuracy[1]:.3f}", flush=True)
    print(f"{'total':>6} {totals['uncached']:>10.1f} {totals['cold']:>8.1f} {totals['warm']:>8.1f}")
    print(f"first sweep: {derived_in_cold_sweep} freeze value(s) started from another's stored boundary "
          f"(possible when a smaller freeze follows a larger one)")
    print(f"ratio cached/uncached: first sweep (cold cache) {totals['cold'] / totals['uncached']:.2f}, "
          f"second sweep (warm cache) {totals['warm'] / totals['uncached']:.2f}   (target <= 0.4)")


if __name__ == "__main__":
    main()
