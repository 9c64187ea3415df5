"""Timers that split a run's wall time into model work and named harness parts, for the benchmarks
that measure the harness (``harness_overhead.py``, ``sweep_throughput/``, ``index_only_sweep/``).

Model work is the time inside ``keras.Model.fit``, ``keras.Model.predict`` (and the per-model
tf.functions ``fashionbench.model.classifier.predict_in_batches`` calls) and
``AnnoyCategoryIndex.build``. Everything else in a run is the harness. Its parts are timed under
names that start with "~" (the pipeline's stage functions and the run's logging), each part
*exclusive* of what it calls that is timed too: ``~train setup`` is ``train_classifier`` minus the
fit and the trunk's predictions inside it. What no part covers is ``~rest``.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import keras

import fashionbench.model.classifier
import fashionbench.pipeline.experiment as experiment
import fashionbench.pipeline.reuse as reuse
from fashionbench.index.annoy import AnnoyCategoryIndex
from fashionbench.tracking.runs import TrackedRun

MODEL_WORK = ("fit", "predict", "index build")
# The harness's parts: the name each is shown under, and the pipeline function it times.
HARNESS_PARTS = {
    "~data": "load_catalogue",
    "~users": "_users_and_splits",
    "~run start/end": "tracked_run",
    "~orphans, reuse lookup": ("reap_orphaned_runs", "trained_run", "check_server_answers"),
    # The whole classifier built, or its tail alone from the trunk cache (training.trunk_free).
    "~model build": ("build_classifier", "trunk_free_start"),
    "~train setup": "train_classifier",
    # Classifying and embedding the shop, outside the predictions: its input pipeline and the scores.
    "~classify, embed": ("evaluate_classifier", "score_classification", "embed_items", "classify_and_embed",
                         "shop_outputs"),
    "~index quality": "measure_shop_index",
    "~index setup": "build_shop_index",
    "~evaluation": ("evaluate_shop", "same_item_retrieval"),
}
LOGGING_PARTS = {"~logging": ("record", "log_config"), "~model logging": ("log_classifier",)}

# Exclusive seconds per part since the last reset(), in this process.
inside: dict[str, float] = defaultdict(float)
_open: list[list] = []  # the timed calls in progress, innermost last: [name, seconds of timed calls inside]
_installed = False


def _timed(name: str, function):
    def wrapper(*args, **kwargs):
        frame = [name, 0.0]
        _open.append(frame)
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            _open.pop()
            inside[name] += elapsed - frame[1]
            if _open:
                _open[-1][1] += elapsed
    return wrapper


def _timed_context(name: str, manager):
    """A context manager's entering and exiting, timed as one part (not what runs inside it)."""
    @contextlib.contextmanager
    def wrapper(*args, **kwargs):
        context = manager(*args, **kwargs)
        value = _timed(name, context.__enter__)()
        try:
            yield value
        except BaseException as error:
            if not _timed(name, context.__exit__)(type(error), error, error.__traceback__):
                raise
        else:
            _timed(name, context.__exit__)(None, None, None)
    return wrapper


def install() -> None:
    """Wrap the model work and the harness's parts with timers, once per process."""
    global _installed
    if _installed:
        return
    keras.Model.fit = _timed("fit", keras.Model.fit)
    keras.Model.predict = _timed("predict", keras.Model.predict)
    # fashionbench predicts through one tf.function per model (fashionbench.model.classifier._compiled).
    compiled = fashionbench.model.classifier._compiled
    fashionbench.model.classifier._compiled = lambda model: _timed("predict", compiled(model))
    AnnoyCategoryIndex.build = classmethod(_timed("index build", AnnoyCategoryIndex.build.__func__))
    for part, functions in HARNESS_PARTS.items():
        for function in (functions,) if isinstance(functions, str) else functions:
            if not hasattr(experiment, function):  # a name this version of the pipeline does not use
                continue
            original = getattr(experiment, function)
            timed = _timed_context(part, original) if function == "tracked_run" else _timed(part, original)
            setattr(experiment, function, timed)
            if hasattr(reuse, function):  # the reuse of a trained run builds the classifier too
                setattr(reuse, function, timed)
    for part, methods in LOGGING_PARTS.items():
        for method in methods:
            setattr(TrackedRun, method, _timed(part, getattr(TrackedRun, method)))
    _installed = True


def reset() -> None:
    inside.clear()


def model_seconds() -> float:
    return sum(inside[part] for part in MODEL_WORK)


def parts() -> list[str]:
    """The harness's part names, in pipeline order."""
    return [*HARNESS_PARTS, *LOGGING_PARTS]
