"""How much of a run is harness: wall time minus the time inside fit, predict and index builds.

    python experiments/harness_overhead.py                       # ~ 3 minutes on 2 cores
    python experiments/harness_overhead.py data.scale=0.02 train.epochs=1   # Hydra overrides

Runs ``fashionbench.pipeline.experiment.run_experiment`` twice in one process (trunk cache off, then on with
an empty cache), into a temporary MLflow store created before timing. ``keras.Model.fit``,
``keras.Model.predict`` (and the per-model tf.functions ``predict_in_batches`` calls) and
``AnnoyCategoryIndex.build`` are wrapped with timers; everything else
(data generation, model construction, evaluation maths, users, Annoy-vs-exact measurement,
MLflow logging including the run's model) is the harness. Times are measured, never asserted.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import fashionbench.model.classifier  # noqa: E402
import fashionbench.pipeline.experiment  # noqa: E402
import fashionbench.pipeline.reuse  # noqa: E402
from fashionbench.config import compose_config  # noqa: E402
from fashionbench.data.synthetic import SyntheticSource  # noqa: E402
from fashionbench.index.annoy import AnnoyCategoryIndex  # noqa: E402
from fashionbench.pipeline.experiment import run_experiment  # noqa: E402
from fashionbench.tracking.runs import TrackedRun  # noqa: E402
from fashionbench.tracking.settings import tracking_settings  # noqa: E402
from fashionbench.tracking.store import ensure_experiment  # noqa: E402

DEFAULT_OVERRIDES = ["data.scale=0.05", "model.weights=null"]

inside: dict[str, float] = defaultdict(float)


def timed(name: str, function):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            inside[name] += time.perf_counter() - start
    return wrapper


def main() -> None:
    keras.Model.fit = timed("fit", keras.Model.fit)
    keras.Model.predict = timed("predict", keras.Model.predict)
    # fashionbench predicts through one tf.function per model (fashionbench.model.classifier._compiled).
    compiled = fashionbench.model.classifier._compiled
    fashionbench.model.classifier._compiled = lambda model: timed("predict", compiled(model))
    AnnoyCategoryIndex.build = classmethod(timed("index build", AnnoyCategoryIndex.build.__func__))
    # Harness parts worth naming (counted as harness, shown to say where it goes):
    # run_experiment and the reuse of a trained run build the classifier; both names are patched.
    build = timed("~model build", fashionbench.pipeline.experiment.build_classifier)
    fashionbench.pipeline.experiment.build_classifier = fashionbench.pipeline.reuse.build_classifier = build
    SyntheticSource.load = timed("~data", SyntheticSource.load)
    TrackedRun.log_classifier = timed("~model logging", TrackedRun.log_classifier)

    scratch = Path(tempfile.mkdtemp(prefix="fashionbench-overhead-"))
    store = "sqlite:///" + str(scratch / "mlflow.db")
    ensure_experiment(tracking_settings(store, "overhead"))  # creating the store is a one-off, not per run
    overrides = [*DEFAULT_OVERRIDES, *sys.argv[1:], f"tracking.uri={store}", "tracking.experiment_name=overhead",
                 f"train.cache_dir={scratch / 'trunk'}"]
    print(f"machine: {os.cpu_count()} CPU cores ({platform.machine()}), no GPU; "
          f"overrides: {' '.join(sys.argv[1:]) or DEFAULT_OVERRIDES}")
    print(f"{'run':<12} {'wall s':>7} {'fit s':>7} {'predict s':>9} {'index s':>8} {'harness s':>9} {'harness %':>9}"
          f"   of which: data / model build / model logging / rest s")
    for name, cache in (("cache off", "false"), ("cache on", "true")):
        cfg = compose_config([*overrides, f"train.cache={cache}"])
        inside.clear()
        start = time.perf_counter()
        run_experiment(cfg)
        wall = time.perf_counter() - start
        harness = wall - sum(seconds for part, seconds in inside.items() if not part.startswith("~"))
        named = [inside["~data"], inside["~model build"], inside["~model logging"]]
        print(f"{name:<12} {wall:>7.1f} {inside['fit']:>7.1f} {inside['predict']:>9.1f} {inside['index build']:>8.2f} "
              f"{harness:>9.1f} {100 * harness / wall:>8.1f}%   {' / '.join(f'{s:.1f}' for s in named)} / "
              f"{harness - sum(named):.1f}", flush=True)
    print("ratio: harness seconds / run wall seconds, per row above (target <= 5%)")


if __name__ == "__main__":
    main()
