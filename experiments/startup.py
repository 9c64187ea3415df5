"""Commands that answer in a second: wall seconds of the answers that need no TensorFlow (issue 23,
point 2), each the median of several runs as a user types it.

    python experiments/startup.py            # 5 runs of each; ~1 minute on 2 cores
    python experiments/startup.py --runs 9

Prints each command's median and the slowest run, the import of ``fashionbench.run`` alone (the
floor every answer pays), and, as the ratio measured in the same run, the command's own ``--help``
against Hydra's (``--config-name config`` hands ``--help`` to Hydra, which composes the config
once per group). Goal: every answer <= 1.5 s. Times are measured, never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

RUN = [sys.executable, "-m", "fashionbench.run"]
COMMANDS = {
    "import fashionbench.run (floor)": [sys.executable, "-c", "import fashionbench.run"],
    "run --help": [*RUN, "--help"],
    "run --help (Hydra's own)": [*RUN, "--help", "--config-name", "config"],
    "run --cfg job": [*RUN, "--cfg", "job"],
    "run eval.k=0 (range error)": [*RUN, "eval.k=0"],
    "run train.epochs=abc (type error)": [*RUN, "train.epochs=abc"],
    "compare --help": [sys.executable, "-m", "fashionbench.compare", "--help"],
    "report --help": [sys.executable, "-m", "fashionbench.report", "--help"],
    "promote --help": [sys.executable, "-m", "fashionbench.promote", "--help"],
}


def seconds(command: list[str], folder: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    print(f"machine: {os.cpu_count()} CPU cores ({platform.machine()}), load average {os.getloadavg()[0]:.1f}; "
          f"median of {runs} runs")
    print(f"{'command':<36} {'median s':>9} {'slowest s':>10}")
    medians = {}
    with tempfile.TemporaryDirectory() as folder:  # no store or output folder is left behind
        for name, command in COMMANDS.items():
            times = [seconds(command, folder) for _ in range(runs)]
            medians[name] = statistics.median(times)
            print(f"{name:<36} {medians[name]:>9.2f} {max(times):>10.2f}", flush=True)
    ours, hydras = medians["run --help"], medians["run --help (Hydra's own)"]
    print(f"ratio: run --help / Hydra's own help = {ours / hydras:.2f}; goal: every answer <= 1.5 s")


if __name__ == "__main__":
    main()
