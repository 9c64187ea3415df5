"""What every stage returns: the values it measured, in the form one tracking object logs.

A stage (load the data, build the model, train, evaluate, index, simulate users, recommend)
is a function or a small object with explicit inputs; its result is a frozen dataclass that
subclasses ``StageResult`` and says what it measured. The orchestrator (``pipeline.experiment``)
hands each result to ``TrackedRun.record``; stages never call MLflow themselves, so each one
runs alone in a notebook, a benchmark or a test without a tracking server.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pandas as pd


@dataclass(frozen=True)
class Dataset:
    """A table a run used: its rows, a name, a digest that changes when the data does, where it
    came from, and what it was used for (``context``: training, validation, testing)."""

    table: pd.DataFrame
    name: str
    digest: str
    source: str
    context: str


class StageResult:
    """The loggable part of a stage's result; subclasses override what they have."""

    stage: ClassVar[str] = ""  # the stage's name in the console's one-line summaries ("" for none)

    def summary(self) -> str:
        """What the stage did, in one short line for the console."""
        return ""

    def metrics(self) -> dict[str, float]:
        """Metric name -> value, as logged."""
        return {}

    def stepped_metrics(self) -> dict[str, list[float]]:
        """Metric name -> one value per step (an epoch), as logged with ``step=i``."""
        return {}

    def tags(self) -> dict[str, str]:
        """Tag name -> value, as set on the run."""
        return {}

    def datasets(self) -> list[Dataset]:
        """The data a stage read, as MLflow dataset inputs (the UI's Dataset column and filter)."""
        return []

    def write_artifacts(self, directory: Path) -> None:
        """Write this stage's artifact files under ``directory``, at their paths in the run
        (``directory / "data/split_table.csv"``): the run logs the folder as it is."""

    def write_diagnostics(self, directory: Path) -> None:
        """Like ``write_artifacts``, for files that only help a person read the run (plots): one
        that cannot be drawn or logged is a warning recorded on the run, never a failed run."""
