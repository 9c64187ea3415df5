"""A real MLflow store for the tests of promote, recommend, report and the notebook.

One real tiny run (TINY_RUN, with its Keras model) and three decoy runs planted with
MlflowClient that must never be promoted although their precision@k is higher: one FAILED,
one still RUNNING, one FINISHED without the metric. The ``tracked_store`` and ``champion``
fixtures in conftest.py build this once per test session (about 35 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from fashionbench.analysis.promotion import Promotion, promote
from fashionbench.pipeline.experiment import run_experiment
from fashionbench.tracking.settings import tracking_settings
from tests.conftest import TINY_RUN, compose_config

EXPERIMENT = "tracked"
MODEL_NAME = "test-shop-recommender"


@dataclass(frozen=True)
class TrackedStore:
    uri: str
    experiment: str
    real_run_id: str
    decoys: dict[str, str]  # "failed" | "running" | "no_metric" -> run id

    @property
    def settings(self):
        return tracking_settings(self.uri, self.experiment)


def plant_run(client: MlflowClient, experiment_id: str, status: str, metrics: dict[str, float],
              params: dict[str, str] | None = None, tags: dict[str, str] | None = None, name: str = "") -> str:
    """A run with the given metrics, params and tags, ended with ``status`` (RUNNING: left open)."""
    run = client.create_run(experiment_id, run_name=name or None, tags=tags or {})
    run_id = run.info.run_id
    for key, value in (params or {}).items():
        client.log_param(run_id, key, value)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    if status != "RUNNING":
        client.set_terminated(run_id, status)
    return run_id


def make_tracked_store(directory: Path) -> TrackedStore:
    uri = "sqlite:///" + str(directory / "mlflow.db")
    cfg = compose_config([*TINY_RUN, f"tracking.uri={uri}", f"tracking.experiment_name={EXPERIMENT}"])
    real = run_experiment(cfg)
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(EXPERIMENT).experiment_id
    model_tag = {"model_uri": "models:/m-decoy-without-artifacts"}
    decoys = {
        "failed": plant_run(client, experiment_id, "FAILED", {"headline/precision_at_k": 0.99, "model/test_accuracy": 0.99},
                            tags=model_tag, name="decoy-failed"),
        "running": plant_run(client, experiment_id, "RUNNING", {"headline/precision_at_k": 0.98}, tags=model_tag,
                             name="decoy-running"),
        "no_metric": plant_run(client, experiment_id, "FINISHED", {"model/test_accuracy": 0.97}, tags=model_tag,
                               name="decoy-no-metric"),
    }
    return TrackedStore(uri, EXPERIMENT, real.run_id, decoys)


def promote_champion(store: TrackedStore) -> Promotion:
    promotion, _ = promote(store.settings, model_name=MODEL_NAME)
    return promotion
