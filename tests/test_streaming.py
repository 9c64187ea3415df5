"""Bounded memory: stored images and activations are read a batch at a time, with the results
of the arrays in memory (the pipeline as it was: from_tensor_slices over whole arrays)."""

import pickle

import keras
import numpy as np
import pytest
import tensorflow as tf

from fashionbench.data.catalogue_store import load_catalogue
from fashionbench.data.rows import StoredRows, batched_rows
from fashionbench.data.synthetic import SyntheticSource
from fashionbench.model.classifier import build_classifier, predict_in_batches, preprocess_images
from fashionbench.model.embed import embed_items
from fashionbench.model.freeze_split import split_at_freeze
from fashionbench.model.schema import ModelConfig
from fashionbench.training.fit import train_classifier
from fashionbench.training.schema import TrainConfig
from fashionbench.training.trunk_cache import TrunkCache
from tests.test_trunk_cache import toy_classifier

SOURCE = SyntheticSource(seed=0, image_size=32, scale=0.01, min_per_split=3)


@pytest.fixture(scope="module")
def catalogues(tmp_path_factory):
    """(the catalogue in memory, the same catalogue read back from the catalogue store)."""
    stored = load_catalogue(SOURCE, tmp_path_factory.mktemp("store")).catalogue
    return SOURCE.load(), stored


def test_the_store_hands_out_rows_on_disk_with_the_loaded_bytes(catalogues):
    loaded, stored = catalogues
    assert isinstance(stored.images, StoredRows) and stored.fingerprint() == loaded.fingerprint()
    test = stored.split("test")
    assert isinstance(test.images, StoredRows)  # a split selects rows, it reads none
    expected = loaded.split("test").images
    np.testing.assert_array_equal(np.asarray(test.images), expected)
    np.testing.assert_array_equal(test.images[3], expected[3])
    np.testing.assert_array_equal(test.images[[5, 1, 2]], expected[[5, 1, 2]])
    np.testing.assert_array_equal(test.images[:, :4, :4], expected[:, :4, :4])
    np.testing.assert_array_equal(np.stack(list(test.images)), expected)
    np.testing.assert_array_equal(np.asarray(pickle.loads(pickle.dumps(test.images))), expected)


def test_batches_are_shuffled_as_from_tensor_slices_shuffles_them(catalogues):
    _, stored = catalogues
    labels = stored.labels
    keras.utils.set_random_seed(0)
    before = tf.data.Dataset.from_tensor_slices(labels).shuffle(len(labels), seed=3, reshuffle_each_iteration=True)
    now = batched_rows((stored.images, labels), 16, shuffle_seed=3)
    for _ in range(2):  # and reshuffled alike every epoch
        assert list(before.as_numpy_iterator()) == np.concatenate([y for _, y in now.as_numpy_iterator()]).tolist()


def fit_as_before(model: keras.Model, train, val, options: TrainConfig, seed: int) -> None:
    """Training as it was before images were streamed: whole arrays through from_tensor_slices."""
    def dataset(catalogue, shuffle_seed=None):
        data = tf.data.Dataset.from_tensor_slices((catalogue.images, catalogue.labels))
        if shuffle_seed is not None:
            data = data.shuffle(len(catalogue), seed=shuffle_seed, reshuffle_each_iteration=True)
        return data.batch(options.batch_size).map(lambda x, y: (preprocess_images(x), y))

    model.compile(optimizer=keras.optimizers.Adam(learning_rate=float(options.learning_rate)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(dataset(train, seed), validation_data=dataset(val), epochs=options.epochs, verbose=0, shuffle=False)


OPTIONS = TrainConfig(epochs=1, batch_size=16)


@pytest.fixture(scope="module")
def trained_before(catalogues):
    """A classifier trained on the catalogue in memory, as before streaming, and the test split."""
    loaded, _ = catalogues
    before = build_classifier(ModelConfig(weights=None, freeze=4, seed=0), 32)
    fit_as_before(before.model, loaded.split("train"), loaded.split("val"), OPTIONS, seed=0)
    return before, loaded.split("test")


# Uncached, the same batches in the same order give the same weights. Cached, the trunk ran in
# prediction batches, not training ones: float rounding, within test_trunk_cache's tolerance for
# probabilities (the pooled embeddings, ~1 in size, move by up to ~3e-4).
@pytest.mark.parametrize(("cached", "tolerance"), [(False, 1e-6), (True, 1e-3)], ids=["uncached", "trunk-cache"])
def test_streamed_training_predicts_and_embeds_as_whole_arrays_did(catalogues, trained_before, tmp_path, cached,
                                                                   tolerance):
    _, stored = catalogues
    before, test_loaded = trained_before
    now = build_classifier(ModelConfig(weights=None, freeze=4, seed=0), 32)
    training = train_classifier(now.model, stored.split("train"), stored.split("val"), OPTIONS, seed=0,
                                cache=TrunkCache(tmp_path) if cached else None)
    assert training.cache.used == cached
    if cached:  # the tail was fitted on activations read back from the cache's files
        features = TrunkCache(tmp_path).features(split_at_freeze(now.model)[0], stored.split("train").images)
        assert features.hit and all(isinstance(array, StoredRows) for array in features.arrays)
    test_stored = stored.split("test")
    expected = before.model.predict(preprocess_images(test_loaded.images), batch_size=128, verbose=0)
    np.testing.assert_allclose(predict_in_batches(now.model, test_stored.images), expected, atol=min(tolerance, 1e-4))
    np.testing.assert_allclose(embed_items(now, test_stored).vectors, embed_items(before, test_loaded).vectors,
                               atol=tolerance, rtol=tolerance)


def test_activations_larger_than_the_cache_train_uncached_and_say_why(catalogues, tmp_path):
    _, stored = catalogues
    training = train_classifier(toy_classifier(), stored.split("train"), stored.split("val"),
                                TrainConfig(epochs=1, batch_size=16, cache_max_gb=1e-6), seed=0,
                                cache=TrunkCache(tmp_path, max_gb=1e-6))
    assert not training.cache.used
    assert "exceed train.cache_max_gb" in training.cache.reason
    assert not any(tmp_path.iterdir())  # nothing computed into the cache


def test_a_first_load_writes_images_as_they_are_drawn_not_all_in_memory(tmp_path, monkeypatch):
    """The catalogue store's first load of a source never holds its images whole: traced
    allocations peak far below the images' bytes, while loading into memory needs them all."""
    import tracemalloc

    from fashionbench.data import rows

    monkeypatch.setattr(rows, "CHUNK_BYTES", 256 * 2**10)  # buffers of 256 KB instead of 8 MB: a small test
    source = SyntheticSource(seed=1, image_size=64, scale=0.06, min_per_split=1)
    tracemalloc.start()
    try:
        stored = load_catalogue(source, tmp_path / "store").catalogue
        streamed_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        in_memory = source.load()
        in_memory_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    image_bytes = in_memory.images.nbytes
    assert image_bytes > 6 * 2**20 and isinstance(stored.images, StoredRows)
    assert in_memory_peak > image_bytes  # what the store avoids (and why this test can fail)
    assert streamed_peak < image_bytes / 4, (streamed_peak, image_bytes)
    assert stored.fingerprint() == in_memory.fingerprint()


def test_a_disabled_store_streams_into_a_nameless_temporary_file(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    loaded = load_catalogue(SOURCE, tmp_path / "store", enabled=False)
    assert isinstance(loaded.catalogue.images, StoredRows) and not loaded.hit
    assert list(tmp_path.iterdir()) == []  # nothing named, nothing left behind
    assert loaded.catalogue.fingerprint() == SOURCE.load().fingerprint()
    test = loaded.catalogue.split("test")
    np.testing.assert_array_equal(np.asarray(test.images), SOURCE.load().split("test").images)
    with pytest.raises(pickle.PicklingError, match="anonymous or removed"):
        pickle.dumps(test.images)
