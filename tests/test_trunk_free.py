"""A cached run that builds its classifier's tail alone (training.trunk_free): the same run as
one that builds the whole ResNet50, metric for metric and weight for weight, and the whole
build whenever the record or an activation is missing, damaged or not this run's."""

import json
import logging
import random
import tempfile
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from fashionbench.model.built_tail import TailClassifier
from fashionbench.model.classifier import IMAGENET_NOTOP_FILE, build_classifier
from fashionbench.model.parts import ModelParts
from fashionbench.model.schema import ModelConfig
from fashionbench.pipeline.experiment import run_experiment
from fashionbench.pipeline.reuse import MEMORY
from fashionbench.training.trunk_cache import META, TrunkCache
from fashionbench.training.trunk_free import (
    REDONE,
    VARIABLES_FILE,
    BuildRecorder,
    _read_record,
    _write_record,
    build_key,
    trunk_free_start,
)
from tests.conftest import TINY_RUN, compose_config

TRUNK_FREE = "its frozen trunk is not built"
# What differs between two runs of one config besides the times: where their activations came from.
CACHE_COUNTS = {"pipeline/cache/trunk_cache_hits", "pipeline/cache/trunk_cache_misses",
                "pipeline/data/catalogue_store_hit"}


def measured(metrics: dict) -> dict:
    """A run's metrics but its times and speeds (and where its activations came from)."""
    return {name: value for name, value in metrics.items()
            if name not in CACHE_COUNTS and not any(word in name for word in ("seconds", "qps", "speedup"))}


def stored_model(client: MlflowClient, run_id: str) -> ModelParts:
    with tempfile.TemporaryDirectory() as scratch:
        return ModelParts.load(Path(client.download_artifacts(run_id, "model", scratch)))


def records(cache_dir: Path) -> list[Path]:
    """The trunk cache's built-tail records (not activations)."""
    return [meta.parent for meta in cache_dir.glob(f"*/{META}") if (meta.parent / VARIABLES_FILE).exists()]


@pytest.mark.slow
def test_a_cached_run_builds_the_tail_alone_and_is_the_same_run(tmp_path, caplog):
    store = "sqlite:///" + str(tmp_path / "mlflow.db")
    cache_dir = tmp_path / "trunk"
    overrides = [*TINY_RUN, f"tracking.uri={store}", f"train.cache_dir={cache_dir}", "tracking.reuse_training=false",
                 f"data_store.dir={tmp_path / 'catalogues'}"]

    def run(*more: str) -> tuple[str, str]:
        MEMORY.forget()  # as a new process: nothing kept from the run before
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="fashionbench"):
            return run_experiment(compose_config([*overrides, *more])).run_id, caplog.text

    whole, log_whole = run()
    assert TRUNK_FREE not in log_whole and len(records(cache_dir)) == 1
    tail_only, log_tail = run()
    assert TRUNK_FREE in log_tail
    client = MlflowClient(store)
    first, second = (client.get_run(run_id).data for run_id in (whole, tail_only))
    assert measured(second.metrics) == measured(first.metrics)
    assert second.tags["trunk_cache"] == first.tags["trunk_cache"]
    assert second.metrics["pipeline/cache/trunk_cache_hits"] == 2
    # The model it stores is the one the whole build stores: architecture, weights, backbone.
    stored = [stored_model(client, run_id) for run_id in (whole, tail_only)]
    assert stored[1].architecture == stored[0].architecture
    assert stored[1].backbone_fingerprint == stored[0].backbone_fingerprint
    assert stored[1].own.keys() == stored[0].own.keys()
    assert all(np.array_equal(a, b) for name in stored[0].own for a, b in zip(stored[0].own[name], stored[1].own[name],
                                                                             strict=True))
    assert second.tags["backbone"] == first.tags["backbone"]

    # A damaged record is removed and the whole classifier built again: the same run, recorded anew.
    (record,) = records(cache_dir)
    variables = record / VARIABLES_FILE
    variables.write_bytes(variables.read_bytes()[: variables.stat().st_size // 2])
    damaged, log_damaged = run()
    assert f"{record} is damaged" in log_damaged and TRUNK_FREE not in log_damaged
    assert measured(client.get_run(damaged).data.metrics) == measured(first.metrics)
    assert len(records(cache_dir)) == 1

    # An experiment whose backbone store lacks the backbone: the whole build logs it there.
    other, log_other = run("tracking.experiment_name=another")
    assert "is not in this experiment's backbone store" in log_other and TRUNK_FREE not in log_other
    assert measured(client.get_run(other).data.metrics) == measured(first.metrics)

    # Activations evicted: the whole classifier computes them again.
    for entry in cache_dir.iterdir():
        if entry.is_dir() and not entry.name.startswith(".") and entry not in records(cache_dir):
            for file in entry.iterdir():
                file.unlink()
            entry.rmdir()
    evicted, log_evicted = run()
    assert "not every split's activations are stored" in log_evicted and TRUNK_FREE not in log_evicted
    assert measured(client.get_run(evicted).data.metrics) == measured(first.metrics)


def test_the_tail_built_alone_is_the_tail_of_the_whole_build(tmp_path):
    options = ModelConfig(weights=None, freeze=4, embedding_layer="dense_128", seed=3)
    cache = TrunkCache(tmp_path / "trunk")
    classifier = build_classifier(options, 32)
    after_build = random.getstate()
    recorder = BuildRecorder(cache, build_key(options, 32), options.seed)
    recorder.start(classifier, {})
    recorder.finish()
    draws_after_whole_build = [random.random() for _ in range(3)]

    (record,) = records(tmp_path / "trunk")
    assert record.name == build_key(options, 32)
    tail = _read_record(record, record.name).classifier()
    assert isinstance(tail, TailClassifier)
    # Python's random state is where the whole build left it: what draws after it sees the same numbers.
    assert [random.random() for _ in range(3)] == draws_after_whole_build
    random.setstate(after_build)
    split = classifier.shop_tail().split
    activations = tuple(np.random.default_rng(0).random((5, *t.shape[1:]), dtype=np.float32)
                        for t in split.tail.inputs)
    expected = classifier.probabilities_and_embeddings(None, 8, activations)
    got = tail.probabilities_and_embeddings(None, 8, activations)
    assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))
    assert [v.path for v in tail.model.trainable_variables] == [v.path for v in split.tail.trainable_variables]
    with pytest.raises(TypeError, match="activations"):
        tail.probabilities_and_embeddings(np.zeros((1, 32, 32, 3), np.uint8), 8)


def test_an_edited_record_is_not_used_and_is_removed(tmp_path, caplog):
    options = ModelConfig(weights=None, freeze=4, seed=0)
    cache = TrunkCache(tmp_path / "trunk")
    recorder = BuildRecorder(cache, build_key(options, 32), options.seed)
    recorder.start(build_classifier(options, 32), {})
    recorder.finish()
    (record,) = records(tmp_path / "trunk")
    intact = {path.name: path.read_bytes() for path in record.iterdir()}

    def read_after(damage) -> str:
        """What reading the record says once ``damage(record)`` was done to it (it must be refused and removed)."""
        record.mkdir(exist_ok=True)
        for name, content in intact.items():
            (record / name).write_bytes(content)
        assert cache.read_entry(record.name, lambda folder: _read_record(folder, record.name), REDONE) is not None
        damage(record)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fashionbench"):
            assert cache.read_entry(record.name, lambda folder: _read_record(folder, record.name), REDONE) is None
        assert not record.exists() and f"{record} is damaged" in caplog.text and REDONE in caplog.text
        return caplog.text

    def edit(change):
        def damage(folder):
            meta = json.loads((folder / META).read_text())
            change(meta)
            (folder / META).write_text(json.dumps(meta))
        return damage

    # Valid JSON, another trunk: its hash no longer matches.
    assert "hash differs" in read_after(edit(lambda meta: meta["record"].update(trunk_fingerprint="0" * 32)))
    # The record of another build copied under this key.
    assert "records the build of key" in read_after(edit(lambda meta: meta.update(key="f" * 32)))
    # Other arrays than a tail's variables; a JSON nested too deep to read.
    assert "IndexError" in read_after(lambda folder: np.savez(folder / VARIABLES_FILE, a=np.zeros(3)))
    assert "RecursionError" in read_after(lambda folder: (folder / META).write_text("[" * 200_000))


def test_a_record_that_hashes_right_but_builds_no_tail_is_removed(tiny_catalogue, tmp_path, caplog):
    options = ModelConfig(weights=None, freeze=4, seed=0)
    cache = TrunkCache(tmp_path / "trunk")
    classifier = build_classifier(options, 32)
    recorder = BuildRecorder(cache, build_key(options, 32), options.seed)
    recorder.start(classifier, {})
    recorder.finish()
    splits = [tiny_catalogue.split(name) for name in ("train", "val", "test")]
    for part in splits:  # every split's activations stored, as a first run leaves them
        cache.features(classifier.shop_tail().split, part.images).release()
    start = trunk_free_start(cache, build_key(options, 32), *splits)
    assert start is not None  # the intact record starts a run
    start.release()
    (record,) = records(tmp_path / "trunk")
    built = _read_record(record, record.name)
    # Hashed as written, yet Python refuses the random state it records.
    for name in (VARIABLES_FILE, META):
        (record / name).unlink()
    _write_record(replace(built, random_state=(3, (2**70,) * 625, None)), record.name, record)
    with caplog.at_level(logging.WARNING, logger="fashionbench"):
        assert trunk_free_start(cache, build_key(options, 32), *splits) is None
    assert "does not fit its tail: OverflowError" in caplog.text and not record.exists()
    # The next whole build records it again.
    recorder = BuildRecorder(cache, build_key(options, 32), options.seed)
    recorder.start(build_classifier(options, 32), {})
    recorder.finish()
    assert len(records(tmp_path / "trunk")) == 1


def test_the_key_names_everything_the_build_depends_on(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    base = ModelConfig(weights=None, freeze=4, seed=0)
    key = build_key(base, 32)
    others = [build_key(ModelConfig(weights=None, freeze=8, seed=0), 32),
              build_key(ModelConfig(weights=None, freeze=4, seed=1), 32),
              build_key(ModelConfig(weights=None, freeze=4, seed=0, dropout=0.5), 32),
              build_key(ModelConfig(weights=None, freeze=4, seed=0, embedding_layer="dense_512"), 32),
              build_key(base, 64)]
    assert len({key, *others}) == 6
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        assert build_key(base, 32) != key
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # A weights file is named by its bytes, not its path.
    weights = tmp_path / "weights.h5"
    weights.write_bytes(b"one")
    from_file = build_key(ModelConfig(weights=str(weights), freeze=4, seed=0), 32)
    weights.write_bytes(b"two")
    assert build_key(ModelConfig(weights=str(weights), freeze=4, seed=0), 32) not in (from_file, None)
    # ImageNet weights outside the Keras cache may be downloaded by one run and not by another: never recorded.
    assert build_key(ModelConfig(weights="auto", freeze=4, seed=0), 32) is None
    (tmp_path / "keras" / "models").mkdir(parents=True)
    (tmp_path / "keras" / "models" / IMAGENET_NOTOP_FILE).write_bytes(b"imagenet")
    assert build_key(ModelConfig(weights="auto", freeze=4, seed=0), 32) is not None
