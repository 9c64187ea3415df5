"""Ctrl-C at every step of a run's talk with its store: is the run always ended KILLED?

    python experiments/faults/interrupt_everywhere.py                    # SIGINT, calls 1..4000 every 13th: ~ 15 min
    python experiments/faults/interrupt_everywhere.py --signal SIGTERM --first 400 --last 600 --step 1

A real signal lands anywhere, including inside the store's client between two of its calls. This
probe runs the pipeline on a tiny catalogue in this process (``run_experiment``, a SQLite store of
its own each time) and sends the signal to itself at the k-th call that SQLAlchemy makes into C
code after the run was created (a ``sys.setprofile`` hook counts them), for k over the range. Each
attempt prints k, the seconds it took, and the run's status; an attempt that leaves the run other
than KILLED also prints where the signal landed. The last line counts them. A run left RUNNING,
or an attempt near 20 s (SQLite's busy timeout in MLflow), is a defect. An attempt still going
after 90 s is hung: the probe presses Ctrl-C again, as a user would, and says so. Asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from mlflow.tracking import MlflowClient  # noqa: E402

from fashionbench.config import compose_config  # noqa: E402
from fashionbench.pipeline.experiment import run_experiment  # noqa: E402

TINY = ["data.image_size=32", "data.scale=0.01", "data.min_per_split=3", "train.epochs=1", "train.batch_size=16",
        "users.n_users=6", "users.items_per_user=40", "users.favourite_threshold=3", "eval.k=2",
        "model.weights=null", "tracking.log_model=false", "train.cache=false"]
HANG_SECONDS = 90.0  # longer than any ending that works (the store's busy timeout is 20 s a write)


def attempt(k: int, signum: int) -> tuple[str, float, str]:
    """Run once, signalled at the k-th SQLAlchemy call into C after the run exists: (status, seconds, where)."""
    uri = "sqlite:///" + str(Path(tempfile.mkdtemp(prefix="fashionbench-interrupt-")) / "mlflow.db")
    config = compose_config([*TINY, f"tracking.uri={uri}"])
    state = {"created": False, "calls": 0, "where": ""}

    def hook(frame, event, arg):
        if event == "return" and frame.f_code.co_name == "create_run" and \
                frame.f_code.co_filename.endswith(os.path.join("mlflow", "tracking", "client.py")):
            state["created"] = True
        elif event == "c_call" and state["created"] and not state["where"] and "sqlalchemy" in frame.f_code.co_filename:
            state["calls"] += 1
            if state["calls"] == k:
                state["where"] = "".join(traceback.format_stack(frame, limit=12)) + f"  C call: {arg!r}"
                os.kill(os.getpid(), signum)

    start = time.perf_counter()
    # A user whose Ctrl-C seems to do nothing presses it again: after HANG_SECONDS, so does this probe.
    second = threading.Timer(HANG_SECONDS, lambda: os.kill(os.getpid(), signum))
    sys.setprofile(hook)
    try:
        second.start()
        run_experiment(config)
    except BaseException:  # noqa: BLE001 - the interruption this probe sends
        pass
    finally:
        sys.setprofile(None)
        second.cancel()
    seconds = time.perf_counter() - start
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("fashionbench")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    status = ",".join(run.info.status for run in runs) or "no run"
    if seconds >= HANG_SECONDS:
        status += f" (hung: a second {signal.Signals(signum).name} after {HANG_SECONDS:.0f} s ended the attempt)"
    return (status if state["where"] else f"{status} (the run ended before call {k})"), seconds, state["where"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signal", default="SIGINT", choices=["SIGINT", "SIGTERM"])
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--last", type=int, default=4000)
    parser.add_argument("--step", type=int, default=13)
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    signum = signal.Signals[args.signal]
    counts = Counter()
    for k in range(args.first, args.last + 1, args.step):
        status, seconds, where = attempt(k, signum)
        counts[status.split(" ")[0] if where else "ended before the signal"] += 1
        print(f"{k:>5} {seconds:>6.1f} s  {status}", flush=True)
        if where and status != "KILLED":
            print(where, flush=True)
        if not where:  # later calls would not be reached either
            break
    print(f"{args.signal} at SQLAlchemy calls {args.first}..{args.last} every {args.step}: "
          + ", ".join(f"{n} {status}" for status, n in counts.most_common()))


if __name__ == "__main__":
    main()
