"""What the commands print: the stages' one-liners and results, not the dependencies' start-up noise.

TensorFlow 2.21 writes C++ messages while it is imported and probes for CUDA (absl's "All log
messages before absl::InitializeLog()", oneDNN, cudart, cuInit) that ``TF_CPP_MIN_LOG_LEVEL``
no longer silences; ``quiet_tensorflow`` imports it with the process's stderr set aside, and
shows what was written only if the import fails. ``progress`` is a tqdm bar on a terminal and
nothing elsewhere (CI logs keep the stages' one-line summaries instead).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


@contextlib.contextmanager
def stderr_set_aside() -> Iterator[None]:
    """Send file descriptor 2 (C++ code writes there directly) to a temporary file for the
    block; on an exception, copy what was written back to stderr before it propagates."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def quiet_tensorflow() -> None:
    """Import TensorFlow (and find its devices) without its start-up messages; Python-level
    TensorFlow and absl warnings are limited to errors. Does nothing once TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules:
        return
    with stderr_set_aside():
        import tensorflow as tf

        tf.config.list_physical_devices()  # CUDA is probed here, not at the first operation
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    logging.getLogger("absl").setLevel(logging.ERROR)


def progress(items: Iterable[T], description: str, total: int | None = None) -> Iterable[T]:
    """``items``, with a progress bar on stderr when it is a terminal (and never in CI logs)."""
    return tqdm(items, desc=description, total=total, disable=None, leave=False, unit="", dynamic_ncols=True)


# The loggers whose INFO lines the console shows: the stages' one-liners and Hydra's job list.
CONSOLE_INFO = ("fashionbench.stages", "HYDRA")


class ConsoleFilter(logging.Filter):
    """Lets through the stage lines, Hydra's job list and every warning or error; the rest of
    the INFO lines (details of the caches, the data) go to the log file only."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name in CONSOLE_INFO


class ConsoleFormatter(logging.Formatter):
    """The console's format: a stage line as it is, anything else with its level and logger
    (``WARNING fashionbench.evaluation.classification: the classifier does not beat ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno == logging.INFO and record.name in CONSOLE_INFO:
            return message
        return f"{record.levelname} {record.name}: {message}"
