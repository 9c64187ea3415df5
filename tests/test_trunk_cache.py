"""The frozen-trunk cache: same training result as without it, reuse, keys, limits, refusals."""

import keras
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from fashionbench.artifacts import INDEX_BYTES, INDEX_EXACT_QPS, INDEX_RECALL, TAG_INDEX_BACKEND
from fashionbench.model.classifier import build_classifier, predict_in_batches
from fashionbench.model.embed import classify_and_embed
from fashionbench.model.freeze_split import split_at_freeze
from fashionbench.model.schema import ModelConfig
from fashionbench.pipeline.experiment import run_experiment
from fashionbench.training.fit import train_classifier
from fashionbench.training.schema import TrainConfig, TrunkCacheConfigError
from fashionbench.training.shop_pass import shop_outputs
from fashionbench.training.trunk_cache import TrunkCache
from tests.conftest import TINY_RUN, compose_config

# Cached and uncached training differ only by float rounding (the trunk runs in predict
# batches instead of training batches): the stated tolerance for float32 activations.
PROBABILITY_TOLERANCE = 1e-4
LOSS_RELATIVE_TOLERANCE = 1e-4


def toy_classifier(seed: int = 0, frozen_dropout: bool = False) -> keras.Model:
    """conv -> BatchNorm (both frozen) -> pool -> softmax: a trunk/tail split in miniature."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    if frozen_dropout:
        x = keras.layers.Dropout(0.5, name="frozen_dropout")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="softmax")(x))
    for layer in model.layers[:-2]:
        layer.trainable = False
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_cached_training_gives_the_uncached_result(tiny_catalogue, tmp_path):
    train, val, test = (tiny_catalogue.split(s) for s in ("train", "val", "test"))
    results, optimizers = {}, {}
    # A hit reads back exactly the arrays a miss stored (test_a_second_read_...), so training
    # on a hit is training on a miss; the end-to-end test below runs a hit.
    for name, cache in (("uncached", None), ("miss", TrunkCache(tmp_path))):
        classifier = build_classifier(ModelConfig(weights=None, freeze=4, seed=0), 32)
        untrained = predict_in_batches(classifier.model, test.images)
        training = train_classifier(classifier.model, train, val, TrainConfig(epochs=2, batch_size=16), seed=0,
                                    cache=cache)
        # What run.py evaluates and embeds: the full classifier, trained through the tail.
        results[name] = training, predict_in_batches(classifier.model, test.images)
        optimizers[name] = classifier.model.optimizer
    assert np.abs(results["uncached"][1] - untrained).max() > 100 * PROBABILITY_TOLERANCE  # training changed it
    (uncached, uncached_probabilities), (cached, cached_probabilities) = results["uncached"], results["miss"]
    assert cached.cache.used and (cached.cache.misses, cached.cache.hits) == (2, 0)  # train and val
    assert uncached.cache.reason == "train.cache=false"
    # The classifier's optimizer carries the training state, as uncached (what a saved model keeps).
    assert int(optimizers["miss"].iterations) == int(optimizers["uncached"].iterations) > 0
    assert len(optimizers["miss"].variables) == len(optimizers["uncached"].variables)
    assert np.abs(cached_probabilities - uncached_probabilities).max() < PROBABILITY_TOLERANCE
    assert cached.history.keys() == uncached.history.keys()
    for metric, values in uncached.history.items():
        assert cached.history[metric] == pytest.approx(values, rel=LOSS_RELATIVE_TOLERANCE), metric


@pytest.mark.parametrize(("freeze", "embedding_layer"), [(4, "pool"), (2, "dense_128"), (4, "softmax")])
def test_the_shop_is_classified_and_embedded_on_the_cached_trunk_as_through_the_network(
        tiny_catalogue, tmp_path, freeze, embedding_layer):
    """A run's passes over the shop (untrained, then trained) run the tail on the trunk's cached activations:
    the probabilities and embeddings the whole network gives (on this CPU bit for bit), the second pass a hit."""
    train, val, shop = (tiny_catalogue.split(s) for s in ("train", "val", "test"))
    classifier = build_classifier(ModelConfig(weights=None, freeze=freeze, seed=0, embedding_layer=embedding_layer), 32)
    cache = TrunkCache(tmp_path)
    outputs = {}
    for when in ("untrained", "trained"):
        if when == "trained":
            train_classifier(classifier.model, train, val, TrainConfig(epochs=1, batch_size=16), seed=0)
        whole = classify_and_embed(classifier, shop, 8)
        tail = shop_outputs(classifier, shop, 8, cache, {})
        for a, b in ((whole[0], tail[0]), (whole[1].vectors, tail[1].vectors)):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
        assert list(tail[1].item_ids) == list(shop.items["item_id"]) and tail[1].layer == embedding_layer
        outputs[when] = tail
    assert np.abs(outputs["trained"][0] - outputs["untrained"][0]).max() > 1e-3  # the tail's weights did change
    assert len([entry for entry in tmp_path.iterdir() if not entry.name.startswith(".")]) >= 1  # stored once, read


def test_a_frozen_embedding_layer_embeds_through_the_whole_network(tiny_catalogue, tmp_path):
    """freeze=2 with a backbone layer below the boundary as the embedding: the tail does not compute it."""
    shop = tiny_catalogue.split("test")
    classifier = build_classifier(ModelConfig(weights=None, freeze=2, seed=0, embedding_layer="conv5_block2_out"), 32)
    assert classifier.shop_tail() is None
    cache = TrunkCache(tmp_path / "cache")
    np.testing.assert_array_equal(shop_outputs(classifier, shop, 8, cache)[1].vectors,
                                  classify_and_embed(classifier, shop, 8)[1].vectors)
    assert not [entry for entry in (tmp_path / "cache").iterdir() if not entry.name.startswith(".")]  # not used


def test_the_boundary_of_a_resnet_includes_the_residual_branch():
    split, _ = split_at_freeze(build_classifier(ModelConfig(weights=None, freeze=4), 32).model)
    # conv5_block3_3_conv reads the main branch; conv5_block3_add reads the shortcut.
    assert split.boundary == ("conv5_block3_2_relu", "conv5_block2_out")
    assert all(not layer.trainable for layer in split.trunk.layers)
    split, _ = split_at_freeze(build_classifier(ModelConfig(weights=None, freeze=0), 32).model)
    assert split.boundary == ("conv5_block3_out",)
    classifier = build_classifier(ModelConfig(weights=None, freeze=175), 32)
    split, reason = split_at_freeze(classifier.model)
    assert split is None and "no frozen layers" in reason


def test_a_frozen_dropout_layer_is_not_cached():
    split, reason = split_at_freeze(toy_classifier(frozen_dropout=True))
    assert split is None and "frozen_dropout" in reason and "random" in reason


def test_the_key_changes_with_weights_images_and_boundary(tiny_catalogue, tmp_path):
    cache = TrunkCache(tmp_path)
    images = tiny_catalogue.images[:8]
    split, _ = split_at_freeze(toy_classifier(seed=0))
    key = cache.key(split, images)
    assert cache.key(split_at_freeze(toy_classifier(seed=0))[0], images) == key  # same weights, same key
    assert cache.key(split_at_freeze(toy_classifier(seed=1))[0], images) != key
    assert cache.key(split, tiny_catalogue.images[1:9]) != key
    assert cache.key(split, images[:, :16, :16]) != key  # another image size
    assert TrunkCache(tmp_path, dtype="float16").key(split, images) != key
    freeze_4 = build_classifier(ModelConfig(weights=None, freeze=4, seed=0), 32).model
    freeze_8 = build_classifier(ModelConfig(weights=None, freeze=8, seed=0), 32).model
    assert cache.key(split_at_freeze(freeze_4)[0], images) != cache.key(split_at_freeze(freeze_8)[0], images)


def test_a_second_read_returns_the_stored_activations(tiny_catalogue, tmp_path):
    split, _ = split_at_freeze(toy_classifier())
    images = tiny_catalogue.images[:10]
    first = TrunkCache(tmp_path, dtype="float16").features(split, images)
    second = TrunkCache(tmp_path, dtype="float16").features(split, images)
    assert (first.hit, second.hit) == (False, True)
    assert second.arrays[0].dtype == np.float16 and second.arrays[0].shape == (10, 30, 30, 4)
    np.testing.assert_array_equal(first.arrays[0], second.arrays[0])
    expected = split.trunk.predict(keras.applications.resnet50.preprocess_input(images.astype("float32")), verbose=0)
    np.testing.assert_allclose(second.arrays[0], expected, rtol=2e-3, atol=2e-3)


def test_past_the_size_limit_the_least_recently_used_entry_goes(tiny_catalogue, tmp_path):
    split, _ = split_at_freeze(toy_classifier())
    entry_bytes = 10 * 30 * 30 * 4 * 4
    cache = TrunkCache(tmp_path, max_gb=2.5 * entry_bytes / 1e9)  # room for two entries
    first, second, third = (tiny_catalogue.images[i:i + 10] for i in (0, 10, 20))
    cache.features(split, first)
    cache.features(split, second)
    assert cache.features(split, first).hit  # first is now the most recently used
    cache.features(split, third)
    assert cache.features(split, first).hit and cache.features(split, third).hit
    assert not cache.features(split, second).hit
    too_small = TrunkCache(tmp_path / "small", max_gb=entry_bytes / 2 / 1e9)
    too_small.features(split, first)
    assert too_small.size_bytes() == 0 and not too_small.features(split, first).hit


def test_augmentation_turns_the_cache_off_and_says_why(tiny_catalogue, tmp_path):
    training = train_classifier(toy_classifier(), tiny_catalogue.split("train"), tiny_catalogue.split("val"),
                                TrainConfig(epochs=1, batch_size=16, augment=True), seed=0, cache=TrunkCache(tmp_path))
    assert not training.cache.used and "train.augment=true" in training.cache.reason
    assert training.epochs == 1 and not list(tmp_path.iterdir())


@pytest.mark.parametrize("options, message", [
    ({"max_gb": 0}, "train.cache_max_gb must be a number > 0"),
    ({"dtype": "int8"}, "train.cache_dtype must be one of"),
])
def test_invalid_cache_options_name_the_option(tmp_path, options, message):
    with pytest.raises(TrunkCacheConfigError, match=message):
        TrunkCache(tmp_path, **options)


@pytest.mark.slow
def test_a_second_run_reads_the_whole_cache_and_logs_it(store_uri, tmp_path):
    cache_dir = tmp_path / "trunk"
    overrides = [*TINY_RUN, f"tracking.uri={store_uri}", f"train.cache_dir={cache_dir}", "tracking.log_model=false"]
    first, second = (run_experiment(compose_config(overrides)) for _ in range(2))
    client = MlflowClient(store_uri)
    runs = [client.get_run(summary.run_id).data for summary in (first, second)]
    assert [(r.metrics["pipeline/cache/trunk_cache_misses"], r.metrics["pipeline/cache/trunk_cache_hits"]) for r in runs] == [(2, 0), (0, 2)]
    assert runs[1].metrics["pipeline/cache/trunk_cache_seconds_saved"] > 0 and runs[0].metrics["pipeline/cache/trunk_cache_derived"] == 0
    assert runs[0].tags["trunk_cache"] == "boundary ['conv5_block3_2_relu', 'conv5_block2_out']"
    assert runs[1].metrics["model/test_accuracy"] == pytest.approx(runs[0].metrics["model/test_accuracy"])
    # The Annoy indexes are measured against exact search in every run.
    assert runs[0].tags[TAG_INDEX_BACKEND] == "annoy"
    assert 0 < runs[0].metrics[INDEX_RECALL] <= 1 and runs[0].metrics[INDEX_EXACT_QPS] > 0
    assert runs[0].metrics[INDEX_BYTES] > 0


def test_another_freeze_value_starts_from_a_stored_upstream_boundary(tiny_catalogue, tmp_path):
    images = tiny_catalogue.images[:12]
    freeze_8 = split_at_freeze(build_classifier(ModelConfig(weights=None, freeze=8, seed=0), 32).model)[0]
    freeze_4 = split_at_freeze(build_classifier(ModelConfig(weights=None, freeze=4, seed=0), 32).model)[0]
    TrunkCache(tmp_path / "fresh").features(freeze_4, images)  # a reference computed from the images
    reference = TrunkCache(tmp_path / "fresh").features(freeze_4, images)
    cache = TrunkCache(tmp_path / "sweep")
    assert cache.features(freeze_8, images).derived_from is None  # nothing upstream stored yet
    derived = cache.features(freeze_4, images)
    assert not derived.hit and derived.derived_from == list(freeze_8.boundary)
    for mine, expected in zip(derived.arrays, reference.arrays, strict=True):
        np.testing.assert_allclose(mine, expected, rtol=1e-5, atol=1e-5)
    # Downstream to upstream is impossible, but freeze=4 stored the block it cuts (conv5_block2's
    # output), which freeze=8 starts from; other weights never qualify.
    assert TrunkCache(tmp_path / "fresh").features(freeze_8, images).derived_from == ["conv5_block2_out"]
    other_weights = split_at_freeze(build_classifier(ModelConfig(weights=None, freeze=2, seed=1), 32).model)[0]
    assert cache.features(other_weights, images).derived_from is None
