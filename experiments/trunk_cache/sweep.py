"""A freeze sweep with the frozen-trunk cache against the same sweep without it, in both orders,
and parallel cold jobs sharing one cache.

    python experiments/trunk_cache/sweep.py                       # freeze=2,4,8 and 8,4,2; ~7 min on 2 cores
    python experiments/trunk_cache/sweep.py --freeze 2 12 --image-size 32 --scale 0.02 --epochs 2
    python experiments/trunk_cache/sweep.py --parallel 4 --no-sequential   # Hydra's joblib launcher; ~4 min

Sequential (in the order given, then reversed; each order from an empty cache): for each freeze
value, build the classifier (same seed) and train it uncached, then cached (cold: the cache holds
only what earlier values of this sweep stored), and after the sweep again (warm: a second run of
the sweep, everything read from disk). The seconds are what a sweep pays for training: building
the model, getting the activations, and fit. Test-set probabilities of the cached classifier are
compared with the uncached one's (float rounding differences of ~1e-6 at the boundary can grow
over epochs when training from random weights is chaotic).

Parallel (``--parallel N``, needs hydra-joblib-launcher): two multiruns of ``fashionbench.run``
with N jobs at once on an empty cache, one over N learning rates (every job needs the same
entries) and one over N freeze values; prints the hits and misses the runs logged. Times are
measured, never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from fashionbench.artifacts import CACHE_SECTION, TRUNK_CACHE_USED  # noqa: E402
from fashionbench.data.synthetic import SyntheticSource  # noqa: E402
from fashionbench.model.classifier import build_classifier, predict_in_batches  # noqa: E402
from fashionbench.model.schema import ModelConfig  # noqa: E402
from fashionbench.tracking.settings import tracking_settings  # noqa: E402
from fashionbench.tracking.store import experiment_runs  # noqa: E402
from fashionbench.training.fit import train_classifier  # noqa: E402
from fashionbench.training.schema import TrainConfig  # noqa: E402
from fashionbench.training.trunk_cache import TrunkCache  # noqa: E402

# What a parallel job runs: a small whole experiment (its trunk-cache figures are what is read).
PARALLEL_RUN = ["data.image_size=64", "data.scale=0.05", "train.epochs=2", "model.weights=null", "users.n_users=20",
                "tracking.log_model=false"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--freeze", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--scale", type=float, default=0.05, help="times the course's split sizes")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--parallel", type=int, default=0, metavar="N", help="also run N cold jobs at once")
    parser.add_argument("--no-sequential", action="store_true", help="only the parallel jobs")
    args = parser.parse_args()
    if not args.no_sequential:
        sequential(args)
    if args.parallel:
        parallel(args.parallel)


def sequential(args: argparse.Namespace) -> None:
    catalogue = SyntheticSource(seed=0, image_size=args.image_size, scale=args.scale, min_per_split=2).load()
    train, val, test = (catalogue.split(s) for s in ("train", "val", "test"))
    print(f"machine: {os.cpu_count()} CPU cores ({platform.machine()}), no GPU; {len(train)} train / {len(val)} "
          f"val / {len(test)} test images at {args.image_size} px, {args.epochs} epochs, batch {args.batch_size}, "
          f"cache dtype {args.dtype}; load average {os.getloadavg()[0]:.1f}")

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

    ratios = {}
    for order in (args.freeze, args.freeze[::-1]):
        cache_dir = tempfile.mkdtemp(prefix="fashionbench-trunk-cache-bench-")
        totals = {"uncached": 0.0, "cold": 0.0, "warm": 0.0}
        print(f"\nfreeze={','.join(map(str, order))}, each value uncached then cached (first sweep, empty cache)")
        print(f"{'freeze':>6} {'uncached s':>10} {'cold s':>8} {'first-sweep cache':>28} {'max |dp|':>9}")
        for freeze in order:
            uncached, reference, _ = attempt(freeze, None)
            cold, probabilities, hits = attempt(freeze, TrunkCache(cache_dir, dtype=args.dtype))
            totals["uncached"] += uncached
            totals["cold"] += cold
            difference = np.abs(probabilities - reference).max()
            print(f"{freeze:>6} {uncached:>10.1f} {cold:>8.1f} {hits:>28} {difference:>9.1e}", flush=True)
        for freeze in order:  # a second run of the sweep
            totals["warm"] += attempt(freeze, TrunkCache(cache_dir, dtype=args.dtype))[0]
        ratios[tuple(order)] = (totals["cold"] / totals["uncached"], totals["warm"] / totals["uncached"])
        print(f"{'total':>6} {totals['uncached']:>10.1f} {totals['cold']:>8.1f}   second sweep {totals['warm']:.1f} s")
    print()
    for order, (first, second) in ratios.items():
        print(f"freeze={','.join(map(str, order))}: cached/uncached, first sweep {first:.2f}, second sweep "
              f"{second:.2f}   (target: first sweep <= 0.35)")
    print(f"load average {os.getloadavg()[0]:.1f}")


def parallel(jobs: int) -> None:
    """Two multiruns of N jobs at once through Hydra's joblib launcher, each on an empty cache."""
    sweeps = {
        f"{jobs} learning rates, freeze=4": ["freeze=4", "train.learning_rate=" + ",".join(
            f"{3e-4 * (i + 1):.0e}" for i in range(jobs))],
        f"{jobs} freeze values": ["freeze=" + ",".join(str(2 * (i + 1)) for i in range(jobs))],
    }
    print(f"\n{jobs} parallel cold jobs (hydra/launcher=joblib), {' '.join(PARALLEL_RUN)}")
    print(f"{'sweep':<28} {'hits':>5} {'misses':>7} {'derived':>8} {'ran the images':>15} {'wall s':>7}")
    for name, overrides in sweeps.items():
        folder = Path(tempfile.mkdtemp(prefix="fashionbench-trunk-cache-parallel-"))
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        command = [sys.executable, "-m", "fashionbench.run", "-m", "hydra/launcher=joblib",
                   f"hydra.launcher.n_jobs={jobs}", f"hydra.sweep.dir={folder / 'multirun'}", f"tracking.uri={uri}",
                   f"train.cache_dir={folder / 'trunk'}", f"data_store.dir={folder / 'store'}", *PARALLEL_RUN,
                   *overrides]
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"the sweep {name!r} failed:\n{result.stderr[-3000:]}")
        runs = [run for run in experiment_runs(tracking_settings(uri)) if TRUNK_CACHE_USED in run.metrics]
        hits, misses, derived = (int(sum(run.metrics[f"{CACHE_SECTION}trunk_cache_{what}"] for run in runs))
                                 for what in ("hits", "misses", "derived"))
        print(f"{name:<28} {hits:>5} {misses:>7} {derived:>8} {misses - derived:>15} {seconds:>7.1f}   "
              f"({len(runs)} runs; load average {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
