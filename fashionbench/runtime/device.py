"""The machine's accelerator, set up once at the start of a run: GPU memory growth, mixed
precision and XLA (``device.*``; every default suits a CPU).

TensorFlow and Keras keep these settings per process, so each run sets all of them, whatever
an earlier run in the same process (a notebook, a test session) chose.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fashionbench.options import Stage, option

log = logging.getLogger(__name__)

MIXED_PRECISION_POLICY = "mixed_float16"


@dataclass
class DeviceConfig:
    """How TensorFlow uses the machine (fashionbench.runtime.device), set at the start of a run.

    Top level, not a config group: every default suits a CPU and a GPU alike."""

    # Keras' mixed_float16: float16 compute with float32 weights and a float32 softmax, loss
    # scaling on. About 2x on GPUs with tensor cores; runs (slowly) on a CPU. Probabilities move.
    mixed_precision: bool = option(False, decides=Stage.TRAINING)
    # XLA-compile the training step (model.fit) and, when true, let XLA cluster the prediction
    # functions. null: Keras' "auto" (XLA on a GPU, off on a CPU-only machine).
    jit_compile: bool | None = option(None, decides=Stage.TRAINING)
    # Take GPU memory as needed instead of all of it at start, so parallel jobs can share a GPU.
    memory_growth: bool = option(True, decides=Stage.PLACEMENT)


def configure_device(options: DeviceConfig) -> list[str]:
    """Apply ``options`` to this process; the names of the GPUs TensorFlow sees (none on a CPU)."""
    # TensorFlow loads where a run sets the machine up, not where the config is read: a config
    # error or --help answers without it.
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, options.memory_growth)
        except RuntimeError:  # the GPU is in use already in this process: the first run's choice stands
            log.info("device.memory_growth: %s is initialised already; its memory growth is unchanged", gpu.name)
    keras.mixed_precision.set_global_policy(MIXED_PRECISION_POLICY if options.mixed_precision else "float32")
    # Prediction runs through plain tf.functions (fashionbench.model.classifier): XLA's auto-clustering
    # compiles them on a GPU when asked; model.fit gets jit_compile from train_classifier.
    tf.config.optimizer.set_jit("autoclustering" if options.jit_compile else False)
    names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    log.info("device: %s, %s, jit_compile %s", ", ".join(names) or "CPU only",
             MIXED_PRECISION_POLICY if options.mixed_precision else "float32",
             "auto" if options.jit_compile is None else options.jit_compile)
    return names
