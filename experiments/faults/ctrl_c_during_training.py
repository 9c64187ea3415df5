"""Ctrl-C at a random moment of a run: is it ever lost?

    python experiments/faults/ctrl_c_during_training.py --trials 60     # ~ 6 min on 2 cores

Python runs a signal's handler between any two bytecodes, finalizers and weakref callbacks
included, and drops the KeyboardInterrupt raised there ("Exception ignored in: ..."). TensorFlow
frees objects all the time while it trains, so some Ctrl-C's were dropped: the run went on and
ended FINISHED. This probe runs the pipeline on a tiny catalogue in this process (its own SQLite
store each time, 6 epochs so that most of a run is training) and sends SIGINT to itself from a
timer at a random moment of the run. Each trial prints the delay and what happened: KILLED (the
run ended as a Ctrl-C should end it), LOST (the run returned FINISHED although the signal came
while it ran), "early" (before the run was created: the store still opens afterwards) or "late"
(after the run had returned). The last line
counts them. LOST is a defect. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from mlflow.tracking import MlflowClient  # noqa: E402

from fashionbench.config import compose_config  # noqa: E402
from fashionbench.pipeline.experiment import run_experiment  # noqa: E402

TINY = ["data.image_size=32", "data.scale=0.01", "data.min_per_split=3", "train.epochs=6", "train.batch_size=4",
        "users.n_users=6", "users.items_per_user=40", "users.favourite_threshold=3", "eval.k=2",
        "model.weights=null", "tracking.log_model=false", "train.cache=false"]


def trial(directory: Path, delay: float) -> str:
    uri = "sqlite:///" + str(directory / "mlflow.db")
    job = compose_config([*TINY, f"tracking.uri={uri}", f"train.cache_dir={directory / 'cache'}"])
    sent = threading.Event()

    def ctrl_c() -> None:
        sent.set()
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(delay, ctrl_c)
    timer.start()
    try:
        run_experiment(job)
    except KeyboardInterrupt:
        experiment = MlflowClient(uri).get_experiment_by_name("fashionbench")
        runs = MlflowClient(uri).search_runs([experiment.experiment_id]) if experiment else []
        if not runs:
            return "early"  # before the run was created: nothing to end
        return "KILLED" if [r.info.status for r in runs] == ["KILLED"] else f"interrupted, runs {runs}"
    finally:
        timer.cancel()
    if not sent.is_set():
        return "late"
    try:  # the signal came while the run was returning: its handler runs by the next bytecodes
        time.sleep(1)
    except KeyboardInterrupt:
        return "late"
    return "LOST"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as a terminal gives it
    draw = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        trial(Path(scratch) / "warm-up", 1e6)  # compiles and caches what every run shares
        run_seconds = time.perf_counter() - start
        print(f"one run: {run_seconds:.1f} s; Ctrl-C at a uniform moment of it", flush=True)
        outcomes = Counter()
        for number in range(args.trials):
            delay = draw.uniform(0.0, run_seconds)
            outcome = trial(Path(scratch) / str(number), delay)
            outcomes[outcome.split(",")[0]] += 1
            print(f"{number:3d}  Ctrl-C after {delay:5.2f} s: {outcome}", flush=True)
    print(f"{args.trials} trials: " + ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items())))
    sys.exit(0)


if __name__ == "__main__":
    main()
