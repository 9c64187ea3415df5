"""The GPU path's options, checked on a CPU: mixed precision, XLA, and the course-shape device script."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from fashionbench.model.classifier import build_classifier, predict_in_batches
from fashionbench.model.schema import ModelConfig
from fashionbench.runtime.device import DeviceConfig, configure_device
from fashionbench.training.fit import train_classifier
from fashionbench.training.schema import TrainConfig
from fashionbench.training.trunk_cache import TrunkCache
from tests.test_trunk_cache import toy_classifier

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def device_defaults():
    """Each test starts and ends with the defaults: the dtype policy is per process."""
    configure_device(DeviceConfig())
    yield
    configure_device(DeviceConfig())


def test_mixed_precision_computes_in_float16_and_answers_in_float32(tiny_catalogue, tmp_path, device_defaults):
    configure_device(DeviceConfig(mixed_precision=True))
    classifier = build_classifier(ModelConfig(weights=None, freeze=4, seed=0), 32)
    assert classifier.model.get_layer("conv5_block3_3_conv").compute_dtype == "float16"
    assert classifier.model.get_layer("softmax").compute_dtype == "float32"
    training = train_classifier(classifier.model, tiny_catalogue.split("train"), tiny_catalogue.split("val"),
                                TrainConfig(epochs=1, batch_size=16), seed=0, cache=TrunkCache(tmp_path))
    assert training.cache.used and np.isfinite(training.history["loss"]).all()
    probabilities = predict_in_batches(classifier.model, tiny_catalogue.split("test").images)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_the_default_policy_is_float32_again_after_a_mixed_run(device_defaults):
    configure_device(DeviceConfig(mixed_precision=True))
    configure_device(DeviceConfig())
    assert keras.mixed_precision.global_policy().name == "float32"


def test_jit_compile_reaches_the_training_step(tiny_catalogue, device_defaults):
    model = toy_classifier()
    training = train_classifier(model, tiny_catalogue.split("train"), tiny_catalogue.split("val"),
                                TrainConfig(epochs=1, batch_size=16), seed=0, jit_compile=True)
    assert model.jit_compile and np.isfinite(training.history["loss"]).all()
    auto = toy_classifier()
    train_classifier(auto, tiny_catalogue.split("train"), tiny_catalogue.split("val"),
                     TrainConfig(epochs=1, batch_size=16), seed=0)
    assert not auto.jit_compile  # Keras' "auto": no XLA on a CPU-only machine


def test_the_course_shape_script_runs_end_to_end_at_a_tiny_size():
    result = subprocess.run([sys.executable, "experiments/gpu/course_shape.py", "--smoke"],  # mixed precision: above
                            cwd=PROJECT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 4 |")]
    assert len(rows) == 2  # uncached and cached
    assert "course 301/283/290/120 s" in result.stdout and "CPU only" in result.stdout
