"""Where runs are tracked: the ``tracking.*`` options, and the store and experiment they resolve to.

``TrackingConfig`` is the schema of ``configs/tracking/*.yaml``; ``tracking_settings`` resolves it
(and ``$MLFLOW_TRACKING_URI``) to the absolute store URI every job of a sweep shares. The read-side
commands (``compare``, ``report``, ``promote``, ``recommend``) compose the same config, so their
defaults (the experiment's name, ``tracking=server``) are these.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fashionbench.options import Stage, option
from fashionbench.runtime.paths import absolute_path

DEFAULT_STORE_FILE = "mlflow.db"
SQLITE = "sqlite:///"
SERVER_SCHEMES = ("http://", "https://")


@dataclass
class TrackingConfig:
    """Where runs are tracked (fashionbench.tracking)."""

    # null: $MLFLOW_TRACKING_URI if set, else mlflow.db where the command is launched (a SQLite file);
    # a server: http://host:5000 (configs/tracking/server.yaml, experiments/scale_out/README.md).
    uri: str | None = option(None, decides=Stage.PLACEMENT)
    experiment_name: str = option("fashionbench", decides=Stage.PLACEMENT)
    # null: mlartifacts/ beside a SQLite store; a server's artifact root
    artifact_location: str | None = option(None, decides=Stage.PLACEMENT)
    # log the run's model: its trainable layers; the frozen backbone once per experiment
    log_model: bool = option(True, decides=Stage.PLACEMENT)
    # Set by the sweep callback on every job of a multirun (an override Hydra passes to each
    # job's config, so it reaches workers under any launcher): the sweep's parent run.
    parent_run_id: str | None = option(None, decides=Stage.PLACEMENT)
    # A multirun skips a job whose config (tracking and naming aside) has a FINISHED run in the
    # experiment, and returns that run's headline metric; false runs every job again.
    resume: bool = option(True, decides=Stage.PLACEMENT)
    # A run whose data, model, training and seed settings and code match a FINISHED run with a
    # logged model reuses its trained weights instead of training (tag training_reused_from).
    reuse_training: bool = option(True, decides=Stage.PLACEMENT)



@dataclass(frozen=True)
class TrackingSettings:
    """Where runs go: a tracking URI, an experiment, and where its artifacts live."""

    uri: str
    experiment_name: str
    artifact_location: str | None


def tracking_settings(uri: str | None = None, experiment_name: str = TrackingConfig.experiment_name,
                      artifact_location: str | None = None) -> TrackingSettings:
    """Resolve the store: the configured ``uri`` wins over ``MLFLOW_TRACKING_URI``, which wins
    over the default ``mlflow.db``; a plain path is a SQLite file. A relative SQLite path is made
    absolute against the directory the command was launched from (fashionbench.runtime.paths), the same
    for every job of a sweep. (Explicit config first also because ``mlflow.set_tracking_uri``
    exports the variable to the process.) A SQLite store keeps its artifacts beside it in
    ``mlartifacts/`` unless ``artifact_location`` says otherwise; a server keeps them in its own
    artifact root."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_STORE_FILE
    if "://" not in uri and not uri.startswith(("databricks", "file:")):  # a plain path: a SQLite file
        uri = SQLITE + uri
    if uri.startswith(SQLITE):  # sqlite:///relative/path or sqlite:////absolute/path
        uri = SQLITE + str(absolute_path(uri[len(SQLITE):]).resolve())
    if artifact_location is None and uri.startswith(SQLITE):
        database = Path(uri[len(SQLITE):])
        artifact_location = (database.parent / "mlartifacts" / experiment_name).as_uri()
    return TrackingSettings(uri, experiment_name, artifact_location)
