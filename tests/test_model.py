"""The classifier: freezing, embedding layers and weights, as the config describes them."""

import numpy as np
import pytest

from fashionbench.model.classifier import WeightsUnavailableError, build_classifier, embedding_layers
from fashionbench.model.schema import ModelConfig, ModelConfigError


@pytest.fixture(scope="module")
def classifier():
    return build_classifier(ModelConfig(weights=None, freeze=4, embedding_layer="dense_128"), 32)


def test_freeze_n_trains_exactly_the_last_n_backbone_layers(classifier):
    backbone = classifier.model.layers[: classifier.backbone_layers]
    trainable = [layer.name for layer in backbone if layer.trainable]
    assert trainable == [layer.name for layer in backbone[-4:]]
    assert trainable[-1] == "conv5_block3_out"
    # The head is always trained.
    assert all(classifier.model.get_layer(name).trainable for name in ("dense_512", "dense_128", "softmax"))


def test_head_is_the_courses(classifier):
    assert classifier.model.get_layer("dense_512").units == 512
    assert classifier.model.get_layer("dropout").rate == pytest.approx(0.3)
    assert classifier.model.get_layer("dense_128").units == 128
    assert classifier.model.output_shape == (None, 4)


@pytest.mark.parametrize("layer, dim", [("pool", 2048), ("dense_512", 512), ("dense_128", 128), ("softmax", 4)])
def test_embedding_layers_give_their_width(classifier, layer, dim):
    assert layer in embedding_layers([512, 128])
    embedder = type(classifier)(classifier.model, "random", classifier.backbone_layers, 4, layer,
                                classifier.head).shop_model()
    assert embedder.outputs[-1].shape == (None, dim)  # the embedding, beside the probabilities


def test_a_few_batches_predicted_without_a_pipeline_give_what_the_pipeline_gives(classifier, tmp_path, monkeypatch):
    """Inputs of at most BATCHES_WITHOUT_PIPELINE batches are read and run batch by batch without tf.data,
    images in memory or on disk alike: the same batches, the same outputs, bit for bit."""
    import fashionbench.model.classifier as module
    from fashionbench.data.rows import RowsWriter

    images = np.random.default_rng(0).integers(0, 256, (11, 32, 32, 3), dtype=np.uint8)
    writer = RowsWriter(tmp_path / "images.npy", (32, 32, 3))
    for image in images:
        writer.append(image)
    stored = writer.finish()
    model = classifier.shop_model()
    outputs = {}
    for limit in (0, 10):  # 0: every input through the pipeline; 10: these 3 batches without it
        monkeypatch.setattr(module, "BATCHES_WITHOUT_PIPELINE", limit)
        outputs[limit] = [module.predict_in_batches(model, source, batch_size=4) for source in (images, stored)]
    for piped, direct in zip(outputs[0], outputs[10], strict=True):
        for a, b in zip(piped, direct, strict=True):
            assert a.shape[0] == 11 and np.array_equal(a, b)
    for a, b in zip(outputs[10][0], outputs[10][1], strict=True):  # memory and disk alike
        assert np.array_equal(a, b)


@pytest.mark.parametrize("freeze", [-1, 176, 2.5])
def test_invalid_freeze_names_the_valid_range(freeze):
    with pytest.raises(ModelConfigError, match=r"model.freeze must be an integer in \[0, 175\]"):
        build_classifier(ModelConfig(weights=None, freeze=freeze), 32)


def test_the_head_layers_are_named_by_their_widths():
    narrow = build_classifier(ModelConfig(weights=None, dense_units=[64, 16], embedding_layer="dense_16"), 32)
    assert (narrow.model.get_layer("dense_64").units, narrow.model.get_layer("dense_16").units) == (64, 16)
    assert narrow.head == ("pool", "dense_64", "dropout", "dense_16", "softmax")
    assert narrow.shop_model().outputs[-1].shape == (None, 16)
    with pytest.raises(ModelConfigError, match="'pool', 'dense_64', 'dense_16', 'softmax'"):
        build_classifier(ModelConfig(weights=None, dense_units=[64, 16], embedding_layer="dense_128"), 32)
    assert embedding_layers([32, 32]) == ("pool", "dense_32", "dense_32_2", "softmax")  # equal widths, two names


def test_unknown_embedding_layer_lists_the_valid_names():
    with pytest.raises(ModelConfigError, match="'pool', 'dense_512', 'dense_128', 'softmax'"):
        build_classifier(ModelConfig(weights=None, embedding_layer="fc7"), 32)


def test_weights_file_is_loaded(tmp_path):
    import keras

    source = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "backbone.weights.h5"
    source.save_weights(path)
    loaded = build_classifier(ModelConfig(weights=str(path), seed=123), 32)
    assert loaded.weights_used == f"file:{path.resolve()}"
    np.testing.assert_array_equal(
        loaded.model.get_layer("conv1_conv").get_weights()[0], source.get_layer("conv1_conv").get_weights()[0]
    )


def test_missing_weights_file_is_a_config_error(tmp_path):
    with pytest.raises(ModelConfigError, match="no file is at"):
        build_classifier(ModelConfig(weights=str(tmp_path / "nope.weights.h5")), 32)


def test_wrong_weights_file_is_a_config_error(tmp_path):
    path = tmp_path / "notes.weights.h5"
    path.write_bytes(b"not hdf5")
    with pytest.raises(ModelConfigError, match="not a weights file for ResNet50"):
        build_classifier(ModelConfig(weights=str(path)), 32)


def test_imagenet_without_cache_or_network_says_how_to_provide_the_file():
    # conftest points KERAS_HOME at an empty directory; this machine cannot download.
    try:
        build_classifier(ModelConfig(weights="imagenet"), 32)
    except WeightsUnavailableError as error:
        message = str(error)
        assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
        assert "model.weights=/path/to/" in message
        assert "model.weights=auto" in message
    else:
        pytest.skip("ImageNet weights were downloadable here; the offline error cannot be shown")


def test_auto_falls_back_to_random_and_says_so(caplog, capsys):
    classifier = build_classifier(ModelConfig(weights="auto"), 32)
    assert classifier.weights_used in ("random", "imagenet")
    if classifier.weights_used == "random":
        assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in classifier.summary()
        assert "Downloading data from" not in capsys.readouterr().out  # trying is quiet
