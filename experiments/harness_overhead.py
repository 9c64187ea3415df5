"""How much of a run is harness: wall time minus the time inside fit, predict and index builds,
and where the harness seconds go.

    python experiments/harness_overhead.py                      # the default run (880 items); ~7 minutes on 2 cores
    python experiments/harness_overhead.py data.scale=0.05      # Hydra overrides

Runs ``fashionbench.pipeline.experiment.run_experiment`` six times in one process, into a
temporary MLflow store, catalogue store and trunk cache created before timing:

- ``cache off, first``: ``train.cache=false``, paying what an experiment pays once: the catalogue
  drawn and stored, the backbone stored in the experiment's backbone store;
- ``cache off``: the uncached run as a sweep repeats it (issue 23's uncached goal);
- ``cache on, cold``: the trunk's activations computed and stored (a first cached run), and the
  classifier's build recorded;
- ``cache on, warm``: read back, the classifier's tail built alone from the recorded build
  (``training.trunk_free``; the cached default run of issue 23's goal), three times: from
  run to run on a shared 2-core machine its harness moves by half a second, so the median is
  the figure to quote.

Each run is what a new process pays for it (imports aside): the users, splits and classifier a
process keeps for a sweep's next job are dropped between runs, and no run reuses another's
training (``tracking.reuse_training=false``). ``keras.Model.fit``, ``keras.Model.predict`` (and
the per-model tf.functions ``predict_in_batches`` calls) and ``AnnoyCategoryIndex.build`` are
model work; the rest is the harness, split into the parts ``model_work.py`` names, each exclusive
of the timed calls inside it. Times are measured, never asserted.
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

import fashionbench.pipeline.experiment as experiment  # noqa: E402
from fashionbench.config import compose_config  # noqa: E402
from fashionbench.pipeline.reuse import MEMORY  # noqa: E402
from fashionbench.tracking.settings import tracking_settings  # noqa: E402
from fashionbench.tracking.store import ensure_experiment  # noqa: E402

DEFAULT_OVERRIDES = ["model.weights=null", "tracking.reuse_training=false"]
ROWS = (("cache off, first", "false"), ("cache off", "false"), ("cache on, cold", "true"),
        *((f"cache on, warm {i}", "true") for i in (1, 2, 3)))
WARM = [name for name, _ in ROWS if name.startswith("cache on, warm")]
inside = model_work.inside


def main() -> None:
    model_work.install()

    scratch = Path(tempfile.mkdtemp(prefix="fashionbench-overhead-"))
    store = "sqlite:///" + str(scratch / "mlflow.db")
    ensure_experiment(tracking_settings(store, "overhead"))  # creating the store is a one-off, not per run
    overrides = [*DEFAULT_OVERRIDES, *sys.argv[1:], f"tracking.uri={store}", "tracking.experiment_name=overhead",
                 f"train.cache_dir={scratch / 'trunk'}", f"data_store.dir={scratch / 'catalogues'}"]
    print(f"machine: {os.cpu_count()} CPU cores ({platform.machine()}); overrides: {' '.join(sys.argv[1:]) or '-'}")
    print(f"{'run':<17} {'wall s':>7} {'fit s':>7} {'predict s':>9} {'index s':>8} {'harness s':>9} {'harness':>8}")
    profile, shares = {}, {}
    for name, cache in ROWS:
        cfg = compose_config([*overrides, f"train.cache={cache}"])
        experiment._USERS.clear()  # what a new process would compute again
        MEMORY.forget()
        model_work.reset()
        start = time.perf_counter()
        experiment.run_experiment(cfg)
        wall = time.perf_counter() - start
        harness = wall - model_work.model_seconds()
        profile[name] = {part: inside[part] for part in model_work.parts()}
        profile[name]["~rest"] = harness - sum(profile[name].values())
        shares[name] = harness / wall
        print(f"{name:<17} {wall:>7.1f} {inside['fit']:>7.1f} {inside['predict']:>9.1f} {inside['index build']:>8.2f} "
              f"{harness:>9.2f} {100 * harness / wall:>7.1f}%", flush=True)
    print(f"cached runs' median harness share: {100 * sorted(shares[name] for name in WARM)[len(WARM) // 2]:.1f}%")
    print("ratio: harness seconds / run wall seconds, per row above (goal: <= 10 % cached, <= 3 % uncached)")
    print()
    print("where the harness seconds go (each part exclusive of the model work and parts it calls):")
    print(f"{'part':<24}" + "".join(f"{name.removeprefix('cache '):>14}" for name, _ in ROWS))
    for part in [*model_work.parts(), "~rest"]:
        print(f"{part.removeprefix('~'):<24}" + "".join(f"{profile[name][part]:>14.2f}" for name, _ in ROWS))


if __name__ == "__main__":
    main()
