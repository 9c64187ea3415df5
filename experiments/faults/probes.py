"""Fault probes: what a user sees, the run's status and what is kept, for every way a run can go wrong.

    python experiments/faults/probes.py            # ~5 min on 2 CPU cores; a temporary folder
    python experiments/faults/probes.py --small-cache-disk /mnt/5mb --small-work-disk /mnt/20mb

Each probe runs the real command (`python -m fashionbench.run` on a tiny catalogue, `promote`)
in a fresh working directory and injects a real fault: damaged trunk-cache files, SIGTERM and
SIGKILL sent to the process, a full disk (small file systems the caller mounted, e.g.
``mount -t tmpfs -o size=5m tmpfs /mnt/5mb``, or else a file-size limit, RLIMIT_FSIZE, for the
process), invalid options, a missing or damaged store. It prints one Markdown row per probe: the fault,
the last line the user sees, the MLflow status of the runs, and what was kept. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

TINY = ["data.image_size=32", "data.scale=0.01", "data.min_per_split=3", "train.epochs=1", "train.batch_size=16",
        "users.n_users=6", "users.items_per_user=40", "users.favourite_threshold=3", "eval.k=2",
        "model.weights=null", "tracking.log_model=false"]
LIMITED = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
sys.argv = ["fashionbench.run", *sys.argv[2:]]
runpy.run_module("fashionbench.run", run_name="__main__")
"""


def zero_values(path: Path) -> None:
    """Overwrite an .npy file's values with zeros in place, its header (shape, dtype) kept."""
    with path.open("r+b") as handle:
        np.lib.format.read_magic(handle)
        np.lib.format.read_array_header_1_0(handle)
        start = handle.tell()
        handle.write(b"\0" * (path.stat().st_size - start))


def command(args: list[str], cwd: Path, limit: int | None = None) -> subprocess.CompletedProcess:
    prefix = [sys.executable, "-c", LIMITED, str(limit)] if limit else [sys.executable, "-m", "fashionbench.run"]
    return subprocess.run([*prefix, *args], cwd=cwd, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HYDRA_FULL_ERROR": "0", "TF_CPP_MIN_LOG_LEVEL": "3"})


def statuses(cwd: Path) -> str:
    if not (cwd / "mlflow.db").exists():
        return "no store"
    client = MlflowClient("sqlite:///" + str(cwd / "mlflow.db"))
    experiment = client.get_experiment_by_name("fashionbench")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return ", ".join(run.info.status for run in runs) or "no run"


def metric(cwd: Path, name: str) -> str:
    client = MlflowClient("sqlite:///" + str(cwd / "mlflow.db"))
    runs = client.search_runs([client.get_experiment_by_name("fashionbench").experiment_id],
                              order_by=["attributes.start_time ASC"])
    return " → ".join(f"{run.data.metrics.get(name, float('nan')):.3f}" for run in runs)


def last_line(result: subprocess.CompletedProcess) -> str:
    """What the user is told: the command's own last word on failure, else its last warning."""
    lines = (result.stderr + result.stdout).strip().splitlines()
    told = [line for line in lines if line.startswith("fashionbench.")] or \
        [line.split("] - ", 1)[-1] for line in lines if "[WARNING]" in line and "fashionbench" in line] or \
        [line for line in lines if "WARNING" in line and "fashionbench" in line] or lines[-1:]
    return told[-1].replace("|", "/")[:220] if told else ""


def row(fault: str, seen: str, status: str, kept: str) -> None:
    print(f"| {fault} | {seen} | {status} | {kept} |", flush=True)


def signal_probe(root: Path, name: str, sig: signal.Signals) -> None:
    cwd = root / name
    cwd.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "fashionbench.run", *TINY, "train.epochs=400",
                                "train.cache=false"], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "HYDRA_FULL_ERROR": "0", "TF_CPP_MIN_LOG_LEVEL": "3"})
    client = MlflowClient("sqlite:///" + str(cwd / "mlflow.db"))
    while True:
        time.sleep(1)
        experiment = client.get_experiment_by_name("fashionbench") if (cwd / "mlflow.db").exists() else None
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        if runs and "trainable_backbone_layers" in runs[0].data.metrics:
            break
    time.sleep(3)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=300)
    seen = [line for line in stderr.strip().splitlines() if "fashionbench" in line][-1:] or ["(nothing: killed)"]
    status = statuses(cwd)
    if sig == signal.SIGKILL:
        promote = subprocess.run([sys.executable, "-m", "fashionbench.promote"], cwd=cwd, capture_output=True,
                                 text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        reaped = [line for line in promote.stderr.splitlines() if "orphaned" in line]
        seen = [seen[0] + "; then `promote`: " + (reaped[0].split(": ", 1)[-1][:90] if reaped else "?")]
        status = f"{status} → {statuses(cwd)}"
    row(f"{sig.name} during training", seen[0].replace("|", "/")[:220], status,
        "the run, its config and data artifacts; `error` tag")


def disk_size(path: Path) -> str:
    return f"{shutil.disk_usage(path).total / 1e6:.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-cache-disk", type=Path, help="a small, empty file system for the trunk cache")
    parser.add_argument("--small-work-disk", type=Path, help="a small, empty file system for the working directory")
    args = parser.parse_args()
    print("| fault | what the user sees (last line) | run status | what is kept |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        for name, damage in (("zeroed (its values, header kept)", zero_values),
                             ("truncated", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
                             ("garbage meta.json", None), ("deleted meta.json", None)):
            cwd = root / name.replace(" ", "-")
            cwd.mkdir()
            command(TINY, cwd)
            for entry in (cwd / ".cache" / "trunk").iterdir():
                if damage:
                    for array in entry.glob("boundary_*.npy"):
                        damage(array)
                elif name.startswith("garbage"):
                    (entry / "meta.json").write_text("{ not json")
                else:
                    (entry / "meta.json").unlink()
            result = command(TINY, cwd)
            row(f"trunk-cache entry {name}", last_line(result), statuses(cwd),
                f"accuracy {metric(cwd, 'model/test_accuracy')}; "
                f"misses {metric(cwd, 'pipeline/cache/trunk_cache_misses')}")
        if args.small_cache_disk:
            cwd = root / "cache-disk-full"
            cwd.mkdir()
            cache = args.small_cache_disk / "trunk"
            result = command([*TINY, "data.scale=0.1", f"train.cache_dir={cache}"], cwd)
            row(f"trunk cache on a full disk ({disk_size(args.small_cache_disk)})", last_line(result), statuses(cwd),
                f"cache folder: {sorted(p.name for p in cache.iterdir()) if cache.exists() else 'none'}")
        signal_probe(root, "sigterm", signal.SIGTERM)
        signal_probe(root, "sigkill", signal.SIGKILL)
        if args.small_work_disk:
            cwd = args.small_work_disk / "work"
            cwd.mkdir()
            result = command([a for a in TINY if a != "tracking.log_model=false"], cwd)
            where = f"working directory on a full disk ({disk_size(args.small_work_disk)})"
        else:
            cwd = root / "work-disk-full"
            cwd.mkdir()
            result = command([a for a in TINY if a != "tracking.log_model=false"], cwd, limit=20_000_000)
            where = "full disk while logging the model (files over 20 MB refused)"
        files = [p for p in (cwd / "mlartifacts").rglob("*") if p.is_file()]
        row(where, last_line(result), statuses(cwd), f"{len(files)} artifact files left")
        for option in ("eval.k=0", "eval.holdout_fraction=1.5", "users.n_users=0", "train.epochs=0",
                       "train.batch_size=0", "eval.k=100000", "train.learning_rate=-1.0", "data.image_size=7"):
            cwd = root / option.replace("=", "-")
            cwd.mkdir()
            start = time.perf_counter()
            result = command([*TINY, option], cwd)
            row(f"`{option}`", f"{last_line(result)} ({time.perf_counter() - start:.0f} s)", statuses(cwd), "-")
        cwd = root / "lr-int"
        cwd.mkdir()
        result = command([*TINY, "train.learning_rate=1"], cwd)
        row("`train.learning_rate=1` (valid)", "runs", statuses(cwd), "-")
        for what, uri in (("a typo'd store", f"sqlite:///{root}/typo_dir/mlflow.db"),
                          ("a plain path to a damaged store", str(root / "damaged.db"))):
            (root / "damaged.db").write_bytes(b"not a database" * 100)
            result = subprocess.run([sys.executable, "-m", "fashionbench.promote", "--tracking-uri", uri],
                                    capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            row(f"`promote --tracking-uri` {what}", last_line(result), "-",
                f"typo_dir created: {(root / 'typo_dir').exists()}")


if __name__ == "__main__":
    main()
