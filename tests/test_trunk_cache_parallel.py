"""The trunk cache shared by parallel jobs, for real: jobs are subprocesses, locks are the kernel's,
and the killed job is killed with SIGKILL. A job that computes is held, once it holds the entry's
lock, until the test lets it go on (``--pause-until``): the other job surely arrives meanwhile."""

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from fashionbench.model.freeze_split import split_at_freeze
from fashionbench.training.trunk_cache import META, TrunkCache
from tests.test_trunk_cache import toy_classifier

PROJECT = Path(__file__).resolve().parents[1]

JOB = textwrap.dedent("""
    import argparse, logging, os, sys, time
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    parser = argparse.ArgumentParser()
    parser.add_argument("project"); parser.add_argument("cache")
    parser.add_argument("--freeze", type=int)  # a ResNet50 cut at this freeze value, else the toy classifier
    parser.add_argument("--pause-until")  # holding the lock, wait for this file before computing
    parser.add_argument("--hold", type=float, default=0)  # seconds to keep what was read (and its lease)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    import fashionbench.model.freeze_split as freeze_split
    import fashionbench.training.trunk_cache as trunk_cache
    from fashionbench.model.schema import ModelConfig
    from fashionbench.model.classifier import build_classifier
    from tests.test_trunk_cache import toy_classifier
    model = build_classifier(ModelConfig(weights=None, freeze=args.freeze), 32).model if args.freeze else toy_classifier()
    split, _ = freeze_split.split_at_freeze(model)
    images = np.random.default_rng(0).integers(0, 255, (12, 32, 32, 3), dtype=np.uint8)
    compute = trunk_cache.predict_batches
    def paused(*arguments, **options):
        print("COMPUTING", flush=True)
        while not os.path.exists(args.pause_until):
            time.sleep(0.05)
        return compute(*arguments, **options)
    if args.pause_until:
        trunk_cache.predict_batches = paused
    print("READY", flush=True)
    features = trunk_cache.TrunkCache(args.cache).features(split, images)
    print("HIT", features.hit, "DERIVED", features.derived_from, flush=True)
    time.sleep(args.hold)
""")


class Job:
    """A job in a subprocess, its printed output and its log kept in files beside the cache."""

    def __init__(self, cache: Path, name: str, *options: str) -> None:
        self.out, self.log = cache.parent / f"{name}.out", cache.parent / f"{name}.log"
        with self.out.open("w") as out, self.log.open("w") as log:
            self.process = subprocess.Popen([sys.executable, "-c", JOB, str(PROJECT), str(cache), *options],
                                            stdout=out, stderr=log, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})

    def wait_for(self, text: str, where: str = "out") -> None:
        """Until ``text`` appears in the job's output (or log); fails if the job ends first."""
        path = self.out if where == "out" else self.log
        deadline = time.monotonic() + 120
        while text not in path.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the job did not print {text!r}: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def finish(self) -> tuple[str, str]:
        """The job's output and log, once it exited cleanly."""
        assert self.process.wait(timeout=120) == 0, self.log.read_text()[-2000:]
        return self.out.read_text(), self.log.read_text()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def test_two_jobs_needing_one_entry_compute_it_once_and_the_other_reads_it(tmp_path):
    cache, go = tmp_path / "cache", tmp_path / "go"
    first = Job(cache, "first", "--pause-until", str(go))
    first.wait_for("COMPUTING")  # it holds the entry's lock
    second = Job(cache, "second")
    second.wait_for("trunk cache: waiting for entry", where="log")
    go.touch()
    (first_out, first_log), (second_out, second_log) = first.finish(), second.finish()
    assert "HIT False DERIVED None" in first_out and "HIT True" in second_out
    assert (first_log + second_log).count("trunk cache: computing boundary") == 1
    assert "which another job is computing" in second_log


def test_jobs_with_different_freeze_values_run_the_images_once(tmp_path):
    # freeze=4 and freeze=8 cut the last residual block: both start from the output of the one
    # before, stored as an entry of its own, computed by whichever job locks it first.
    cache, go = tmp_path / "cache", tmp_path / "go"
    first = Job(cache, "first", "--freeze", "4", "--pause-until", str(go))
    first.wait_for("COMPUTING")
    second = Job(cache, "second", "--freeze", "8")
    second.wait_for("trunk cache: waiting for entry", where="log")
    go.touch()
    (first_out, first_log), (second_out, second_log) = first.finish(), second.finish()
    assert "HIT False DERIVED None" in first_out
    assert "HIT False DERIVED ['conv5_block2_out']" in second_out
    assert (first_log + second_log).count("trunk cache: computing boundary ['conv5_block2_out'] from the images") == 1
    assert len([p for p in cache.iterdir() if (p / META).exists()]) == 3  # the block's output, freeze=4, freeze=8


def test_a_killed_lock_holder_does_not_block_the_waiter(tmp_path):
    cache = tmp_path / "cache"
    holder = Job(cache, "holder", "--pause-until", str(tmp_path / "never"))
    holder.wait_for("COMPUTING")
    waiter = Job(cache, "waiter")
    waiter.wait_for("trunk cache: waiting for entry", where="log")
    holder.kill()
    out, log = waiter.finish()  # within the timeout: the kernel released the dead holder's lock
    assert "HIT False" in out and "trunk cache: computing boundary" in log
    images = np.random.default_rng(0).integers(0, 255, (12, 32, 32, 3), dtype=np.uint8)  # the jobs' images
    assert TrunkCache(cache).features(split_at_freeze(toy_classifier())[0], images).hit


def test_eviction_passes_over_an_entry_another_job_is_reading(tiny_catalogue, tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    split, _ = split_at_freeze(toy_classifier())
    images = np.random.default_rng(0).integers(0, 255, (12, 32, 32, 3), dtype=np.uint8)  # the job's images
    entry_bytes = 12 * 30 * 30 * 4 * 4
    cache = TrunkCache(cache_dir, max_gb=1.5 * entry_bytes / 1e9)  # room for one entry
    cache.features(split, images)
    (read,) = [p for p in cache_dir.iterdir() if (p / META).exists()]
    staging = cache_dir / f".staging-{read.name}-planted"  # another job's, being written (this process is alive)
    staging.mkdir()
    (staging / "writer.json").write_text(f'{{"host": "{socket.gethostname()}", "pid": {os.getpid()}}}')
    (staging / META).write_text("{}")
    reader = Job(cache_dir, "reader", "--hold", "600")
    try:
        reader.wait_for("HIT True")  # it holds the entry's shared lock
        with caplog.at_level(logging.INFO, logger="fashionbench.training.trunk_cache"):
            cache.features(split, tiny_catalogue.images[:12])  # a second entry: over the limit
        assert read.exists() and staging.exists()
        assert "1 entry is in use by other jobs" in caplog.text
    finally:
        reader.kill()
    cache.features(split, tiny_catalogue.images[12:24])  # no reader now: the least recently used entries go
    assert not read.exists() and staging.exists()
