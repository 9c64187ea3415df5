"""Timers on the model work of a run, for the benchmarks that split a run's wall time into model
work and harness (``harness_overhead.py``, ``sweep_throughput/``).

Model work is the time inside ``keras.Model.fit``, ``keras.Model.predict`` (and the per-model
tf.functions ``fashionbench.model.classifier.predict_in_batches`` calls) and
``AnnoyCategoryIndex.build``. Everything else in a run is the harness: data, model construction,
evaluation maths, users, the index's quality measurement and MLflow logging. A few harness parts
are timed too, under names that start with "~", to say where the harness goes.
"""

from __future__ import annotations

import time
from collections import defaultdict

import keras

import fashionbench.model.classifier
import fashionbench.pipeline.experiment
import fashionbench.pipeline.reuse
from fashionbench.data.synthetic import SyntheticSource
from fashionbench.index.annoy import AnnoyCategoryIndex
from fashionbench.tracking.runs import TrackedRun

MODEL_WORK = ("fit", "predict", "index build")

# Seconds per part since the last reset(), in this process.
inside: dict[str, float] = defaultdict(float)
_installed = False


def _timed(name: str, function):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            inside[name] += time.perf_counter() - start
    return wrapper


def install() -> None:
    """Wrap the model work (and the named harness parts) with timers, once per process."""
    global _installed
    if _installed:
        return
    keras.Model.fit = _timed("fit", keras.Model.fit)
    keras.Model.predict = _timed("predict", keras.Model.predict)
    # fashionbench predicts through one tf.function per model (fashionbench.model.classifier._compiled).
    compiled = fashionbench.model.classifier._compiled
    fashionbench.model.classifier._compiled = lambda model: _timed("predict", compiled(model))
    AnnoyCategoryIndex.build = classmethod(_timed("index build", AnnoyCategoryIndex.build.__func__))
    # run_experiment and the reuse of a trained run build the classifier; both names are wrapped.
    build = _timed("~model build", fashionbench.pipeline.experiment.build_classifier)
    fashionbench.pipeline.experiment.build_classifier = fashionbench.pipeline.reuse.build_classifier = build
    SyntheticSource.load = _timed("~data", SyntheticSource.load)
    TrackedRun.log_classifier = _timed("~model logging", TrackedRun.log_classifier)
    _installed = True


def reset() -> None:
    inside.clear()


def model_seconds() -> float:
    return sum(inside[part] for part in MODEL_WORK)
