"""How much of a run is harness: wall time minus the time inside fit, predict and index builds.

    python experiments/harness_overhead.py                       # ~ 3 minutes on 2 cores
    python experiments/harness_overhead.py data.scale=0.02 train.epochs=1   # Hydra overrides

Runs ``fashionbench.pipeline.experiment.run_experiment`` twice in one process (trunk cache off, then on with
an empty cache), into a temporary MLflow store created before timing. ``keras.Model.fit``,
``keras.Model.predict`` (and the per-model tf.functions ``predict_in_batches`` calls) and
``AnnoyCategoryIndex.build`` are wrapped with timers (``model_work.py``); everything else
(data generation, model construction, evaluation maths, users, Annoy-vs-exact measurement,
MLflow logging including the run's model) is the harness. Times are measured, never asserted.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import model_work  # noqa: E402  (experiments/model_work.py: the timers)

from fashionbench.config import compose_config  # noqa: E402
from fashionbench.pipeline.experiment import run_experiment  # noqa: E402
from fashionbench.tracking.settings import tracking_settings  # noqa: E402
from fashionbench.tracking.store import ensure_experiment  # noqa: E402

DEFAULT_OVERRIDES = ["data.scale=0.05", "model.weights=null"]
inside = model_work.inside


def main() -> None:
    model_work.install()

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
        harness = wall - model_work.model_seconds()
        named = [inside["~data"], inside["~model build"], inside["~model logging"]]
        print(f"{name:<12} {wall:>7.1f} {inside['fit']:>7.1f} {inside['predict']:>9.1f} {inside['index build']:>8.2f} "
              f"{harness:>9.1f} {100 * harness / wall:>8.1f}%   {' / '.join(f'{s:.1f}' for s in named)} / "
              f"{harness - sum(named):.1f}", flush=True)
    print("ratio: harness seconds / run wall seconds, per row above (target <= 5%)")


if __name__ == "__main__":
    main()
