"""The trunk cache may make a run faster, never wrong and never failed: damaged, partial and
orphaned entries, abandoned staging folders and a full disk, injected for real."""

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from fashionbench.model.freeze_split import split_at_freeze
from fashionbench.pipeline.experiment import run_experiment
from fashionbench.training.trunk_cache import TrunkCache, images_fingerprint
from tests.conftest import TINY_RUN, compose_config
from tests.test_trunk_cache import toy_classifier

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stored(tiny_catalogue, tmp_path):
    """A cache with one stored entry: (cache folder, split, images, the fresh activations, the entry)."""
    split, _ = split_at_freeze(toy_classifier())
    images = tiny_catalogue.images[:10]
    fresh = TrunkCache(tmp_path / "cache").features(split, images)
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    # A copy: the entry's file is read when used, and the tests damage it.
    return tmp_path / "cache", split, images, np.array(fresh.arrays[0]), entry


def zero_bytes(path: Path) -> None:
    path.write_bytes(b"\0" * path.stat().st_size)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", [
    lambda entry: zero_bytes(entry / "boundary_0.npy"),  # same size, wrong bytes
    lambda entry: (entry / "boundary_0.npy").write_bytes(  # a valid .npy of the right shape, other values
        (entry / "boundary_0.npy").read_bytes()[:-8] + b"\x00\x00\x80\x3f" * 2),
    lambda entry: truncate(entry / "boundary_0.npy"),
    lambda entry: (entry / "meta.json").write_text("{ not json"),
    lambda entry: (entry / "boundary_0.npy").unlink(),
    lambda entry: (entry / "meta.json").write_text("null"),  # JSON, but not an entry's record
    lambda entry: (entry / "meta.json").write_text("[]"),
    lambda entry: (entry / "meta.json").write_text(json.dumps(  # its arrays, but not what computing them took
        {k: v for k, v in json.loads((entry / "meta.json").read_text()).items() if k != "compute_seconds"})),
], ids=["zeroed", "changed-values", "truncated", "garbage-meta", "missing-array", "null-meta", "list-meta",
        "meta-without-seconds"])
def test_a_damaged_entry_is_reported_removed_and_computed_again(stored, damage, caplog):
    directory, split, images, fresh, entry = stored
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="fashionbench.training.trunk_cache"):
        again = TrunkCache(directory).features(split, images)
    assert not again.hit and again.stored  # never served; stored again
    np.testing.assert_array_equal(again.arrays[0], fresh)
    assert f"trunk cache: {entry} is damaged" in caplog.text and "computed again" in caplog.text
    repaired = TrunkCache(directory).features(split, images)  # the entry was rewritten, whole
    assert repaired.hit
    np.testing.assert_array_equal(repaired.arrays[0], fresh)


@pytest.mark.parametrize("record", [
    lambda meta: None, lambda meta: [],
    lambda meta: {**meta, "boundary": 3},  # the images' entry but for its boundary
], ids=["null", "list", "boundary-not-a-list"])
def test_a_miss_goes_on_past_another_entry_whose_record_is_not_one(stored, record):
    """A miss looks through every entry's meta.json for a stored upstream boundary: one that is
    JSON but not an entry's record is passed over, not a failed run."""
    directory, split, images, fresh, entry = stored
    others = images[::-1].copy()  # other images: a miss
    meta = {**json.loads((entry / "meta.json").read_text()), "images_fingerprint": images_fingerprint(others)}
    other = directory / ("0" * 32)
    other.mkdir()
    (other / "meta.json").write_text(json.dumps(record(meta)))
    features = TrunkCache(directory).features(split, others)
    assert not features.hit
    np.testing.assert_array_equal(features.arrays[0], fresh[::-1])


@contextlib.contextmanager
def undeletable(entry: Path):
    """``entry``'s files cannot be removed: immutable for root (chattr), a read-only folder otherwise."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(entry)]).returncode != 0:
            pytest.skip("chattr +i is not available on this file system")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(entry)], check=True)
    else:
        entry.chmod(0o555)
        try:
            yield
        finally:
            entry.chmod(0o755)


def test_a_damaged_entry_that_cannot_be_removed_is_never_served(stored, caplog):
    directory, split, images, fresh, entry = stored
    zero_bytes(entry / "boundary_0.npy")
    with undeletable(entry):
        for _ in range(2):  # and not on a later call either
            with caplog.at_level(logging.WARNING, logger="fashionbench.training.trunk_cache"):
                again = TrunkCache(directory).features(split, images)
            assert not again.hit and not again.stored  # this job's own activations, in memory
            np.testing.assert_array_equal(again.arrays[0], fresh)
            assert "could not be removed" in caplog.text and "could not be replaced" in caplog.text
            assert not any(p.name.startswith(".staging") for p in directory.iterdir())
            caplog.clear()


def test_a_file_in_an_entrys_place_is_removed_and_the_entry_stored(stored, caplog):
    """Else no job could ever store the entry, and every run would compute it again."""
    directory, split, images, fresh, entry = stored
    shutil.rmtree(entry)
    entry.write_bytes(b"not an entry")
    with caplog.at_level(logging.WARNING, logger="fashionbench.training.trunk_cache"):
        cache = TrunkCache(directory)
    assert not entry.exists() and "not a folder" in caplog.text
    assert not cache.features(split, images).hit
    again = TrunkCache(directory).features(split, images)
    assert again.hit
    np.testing.assert_array_equal(again.arrays[0], fresh)


def test_an_entry_without_metadata_is_an_orphan_removed_and_repaired(stored, caplog):
    directory, split, images, fresh, entry = stored
    (entry / "meta.json").unlink()
    with caplog.at_level(logging.WARNING, logger="fashionbench.training.trunk_cache"):
        cache = TrunkCache(directory)
    assert not entry.exists() and "a partial or orphaned entry" in caplog.text
    assert not cache.features(split, images).hit
    assert cache.features(split, images).hit  # repaired, not recomputed on every run


def test_staging_folders_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for name, pid in (("abandoned", int(dead.stdout)), ("in-use", os.getpid())):
        staging = tmp_path / f".staging-{name}"
        staging.mkdir()
        (staging / "writer.json").write_text(json.dumps({"host": os.uname().nodename, "pid": pid}))
        (staging / "boundary_0.npy").write_bytes(b"\0" * 1000)
    TrunkCache(tmp_path)
    assert not (tmp_path / ".staging-abandoned").exists()
    assert (tmp_path / ".staging-in-use").exists()


FULL_DISK = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np
    sys.path.insert(0, sys.argv[2])
    from fashionbench.training.trunk_cache import TrunkCache
    from fashionbench.model.freeze_split import split_at_freeze
    from tests.test_trunk_cache import toy_classifier
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit raise OSError (EFBIG)
    split, _ = split_at_freeze(toy_classifier())
    images = np.random.default_rng(0).integers(0, 255, (10, 32, 32, 3), dtype=np.uint8)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # a file may hold 4 kB: the disk is "full"
    features = TrunkCache(sys.argv[1]).features(split, images)
    print("SHAPE", features.arrays[0].shape, "HIT", features.hit)
""")


def test_a_full_disk_is_logged_and_the_activations_are_still_returned(tmp_path):
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path / "cache"), str(PROJECT)],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SHAPE (10, 30, 30, 4) HIT False" in result.stdout
    assert "could not store" in result.stderr and "continuing without storing" in result.stderr
    # No partial entry, no staging folder, no lock file left; only the (empty) folder of lock files.
    assert [p.name for p in (tmp_path / "cache").rglob("*")] == [".locks"]


@pytest.mark.slow
def test_a_run_with_a_zeroed_cache_entry_gives_the_result_of_a_fresh_run(store_uri, tmp_path):
    cache_dir = tmp_path / "trunk"
    overrides = [*TINY_RUN, f"tracking.uri={store_uri}", f"train.cache_dir={cache_dir}", "tracking.log_model=false"]
    first = run_experiment(compose_config(overrides))
    for array in cache_dir.glob("*/boundary_*.npy"):
        zero_bytes(array)
    second = run_experiment(compose_config(overrides))
    client = MlflowClient(store_uri)
    runs = [client.get_run(summary.run_id) for summary in (first, second)]
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert runs[1].data.metrics["pipeline/cache/trunk_cache_hits"] == 0 and runs[1].data.metrics["pipeline/cache/trunk_cache_misses"] == 2
    assert runs[1].data.metrics["model/test_accuracy"] == runs[0].data.metrics["model/test_accuracy"]
    assert runs[1].data.metrics["headline/precision_at_k"] == runs[0].data.metrics["headline/precision_at_k"]
