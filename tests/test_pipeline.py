"""The whole pipeline into a real MLflow store: single runs, failures, and a Hydra multirun."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fashionbench.artifacts import (
    INDEX_BUILD_SECONDS,
    INDEX_BYTES,
    INDEX_EXACT_QPS,
    INDEX_QPS,
    INDEX_QUALITY_TABLE,
    INDEX_RECALL,
    TAG_INDEX_BACKEND,
)
from fashionbench.data import CATEGORIES
from fashionbench.evaluation.pairs import load_pairs
from fashionbench.model.classifier import build_classifier
from fashionbench.model.schema import ModelConfig
from fashionbench.pipeline.experiment import run_experiment
from fashionbench.tracking.run_models import load_run_model
from fashionbench.tracking.settings import tracking_settings
from tests.conftest import TINY_RUN, compose_config

pytestmark = pytest.mark.slow
PROJECT = Path(__file__).resolve().parents[1]


def artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found = set()
    for entry in client.list_artifacts(run_id, path):
        found.add(entry.path)
        if entry.is_dir:
            found |= artifact_paths(client, run_id, entry.path)
    return found


def test_a_run_logs_params_metrics_artifacts_and_tags(store_uri):
    cfg = compose_config([*TINY_RUN, f"tracking.uri={store_uri}", "tracking.experiment_name=e2e"])
    summary = run_experiment(cfg)

    client = MlflowClient(store_uri)
    run = client.get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "e2e"
    metrics = run.data.metrics
    for name in ("model/training/train_seconds", "model/test_accuracy", "headline/precision_at_k", "headline/recall_at_k", "headline/random_precision_at_k"):
        assert name in metrics, name
    assert metrics["model/training/train_seconds"] > 0
    # Each epoch's value of each training curve, at its step (logged in one request).
    history = client.get_metric_history(summary.run_id, "model/training/epoch_loss")
    assert [point.step for point in history] == list(range(int(cfg.train.epochs)))
    # Every logged number is the mean of the run's own tables: the per-pair results and the classification.
    with tempfile.TemporaryDirectory() as scratch:
        pairs = load_pairs(Path(client.download_artifacts(summary.run_id, "eval/pairs.csv", scratch)))
        per_class = pd.read_csv(client.download_artifacts(summary.run_id, "eval/classification.csv", scratch),
                                index_col="category")
    for category in CATEGORIES:
        assert metrics[f"model/test_f1/{category}"] == pytest.approx(per_class.loc[category, "f1"])
        for recommender in ("model", "random"):
            rows = pairs[(pairs.category == category) & (pairs.recommender == recommender)]
            assert metrics[f"ladder/precision_at_2/{recommender}/{category}"] == pytest.approx(rows.precision_at_2.mean())
    assert metrics["pipeline/data/items_test"] == sum(max(3, round(n * 0.01)) for n in (160, 545, 267, 694))
    # One param per knob: model.freeze only repeats the top-level freeze (``${freeze}``).
    assert run.data.params["freeze"] == "4" and "model.freeze" not in run.data.params
    assert run.data.params["index.metric"] == "angular"
    assert run.data.tags["weights_used"] == "random"
    assert len(run.data.tags["data_fingerprint"]) == 16
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT, capture_output=True, text=True)
    assert run.data.tags["git_commit"] == (head.stdout.strip() if head.returncode == 0 else "unknown")

    artifacts = artifact_paths(client, summary.run_id)
    assert {"config.yaml", "plots/confusion_matrix.png", "data/split_table.csv", "data/shop_items.csv",
            "data/shop_images.npz"} <= artifacts
    assert {f"indexes/{c}.ann" for c in CATEGORIES} <= artifacts

    # The logged model (lean: its trainable layers, the backbone in the experiment's store) loads back whole.
    assert run.data.tags["model_uri"] == f"runs:/{summary.run_id}/model"
    model = load_run_model(tracking_settings(store_uri, "e2e"), summary.run_id)
    assert model.output_shape == (None, 4)
    assert model.count_params() == build_classifier(ModelConfig(weights=None), 32).model.count_params()


def test_a_failing_run_is_marked_failed_with_its_error(store_uri):
    # The embedding layer is checked against the built model: inside the run.
    cfg = compose_config([*TINY_RUN, f"tracking.uri={store_uri}", "model.embedding_layer=fc7",
                          "tracking.log_model=false"])
    with pytest.raises(ValueError, match="model.embedding_layer 'fc7' is not a layer of the model"):
        run_experiment(cfg)
    client = MlflowClient(store_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("fashionbench").experiment_id])
    assert run.info.status == "FAILED"
    assert "model.embedding_layer" in run.data.tags["error"]
    assert "error.txt" in artifact_paths(client, run.info.run_id)


def test_an_invalid_option_fails_before_any_run_starts(store_uri):
    cfg = compose_config([*TINY_RUN, f"tracking.uri={store_uri}", "freeze=999"])
    with pytest.raises(ValueError, match=r"model.freeze must be an integer in \[0, 175\]"):
        run_experiment(cfg)
    client = MlflowClient(store_uri)
    experiment = client.get_experiment_by_name("fashionbench")
    assert experiment is None or not client.search_runs([experiment.experiment_id])


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, "-m", "fashionbench.run", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_cli_reports_a_bad_option_without_a_traceback(tmp_path):
    result = run_cli([*TINY_RUN, "index.metric=cosine", "tracking.log_model=false"], tmp_path)
    assert result.returncode != 0
    assert "index.metric must be one of ['angular', 'euclidean', 'manhattan', 'dot'], got 'cosine'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("option, message", [
    ("eval.k=100000", "eval.k=100000 is larger than any category's candidates"),
    ("users.n_users=0", "users.n_users must be >= 1"),
    ("train.learning_rate=-1", "train.learning_rate must be > 0"),
])
def test_cli_checks_every_option_before_any_run_starts(tmp_path, option, message):
    result = run_cli([*TINY_RUN, option], tmp_path)
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr
    if (tmp_path / "mlflow.db").exists():
        client = MlflowClient("sqlite:///" + str(tmp_path / "mlflow.db"))
        experiment = client.get_experiment_by_name("fashionbench")
        assert experiment is None or not client.search_runs([experiment.experiment_id])


def test_cli_single_run_uses_a_store_in_the_working_directory(tmp_path):
    # With index=hnsw: the run measures its HNSW graphs against exact search and stores them.
    result = run_cli([*TINY_RUN, "tracking.log_model=false", "index=hnsw"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "precision@2 by recommender" in result.stdout and "mlflow ui --backend-store-uri sqlite:////" in result.stdout
    # The console shows the stages and the summary; MLflow's start-up chatter (creating the store) stays out.
    assert "INFO mlflow" not in result.stdout + result.stderr
    client = MlflowClient("sqlite:///" + str(tmp_path / "mlflow.db"))
    (run,) = client.search_runs([client.get_experiment_by_name("fashionbench").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags[TAG_INDEX_BACKEND] == "hnsw" and run.data.params["index.ef_search"] == "64"
    metrics = run.data.metrics
    assert 0 < metrics[INDEX_RECALL] <= 1
    assert metrics[INDEX_QPS] > 0 and metrics[INDEX_EXACT_QPS] > 0 and metrics[INDEX_BUILD_SECONDS] > 0
    per_category = pd.read_csv(client.download_artifacts(run.info.run_id, INDEX_QUALITY_TABLE, str(tmp_path)),
                               index_col="category")
    assert set(per_category["backend"]) == {"hnsw"} and per_category.loc["Skirts", "recall"] == 1.0  # 3 Skirts
    assert metrics[INDEX_BYTES] == per_category["bytes"].sum() > 0
    assert {f"indexes/{c}.faiss" for c in CATEGORIES} <= artifact_paths(client, run.info.run_id)


def test_multirun_goes_on_after_a_failed_job_and_groups_runs_under_a_parent(tmp_path):
    result = run_cli(["-m", "model.embedding_layer=fc7,pool", *TINY_RUN, "tracking.log_model=false"], tmp_path)
    assert result.returncode == 0, result.stderr
    client = MlflowClient("sqlite:///" + str(tmp_path / "mlflow.db"))
    experiment_id = client.get_experiment_by_name("fashionbench").experiment_id
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time ASC"])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep_id") == parent.info.run_id]
    assert [(c.data.params["model.embedding_layer"], c.info.status) for c in children] == [
        ("fc7", "FAILED"), ("pool", "FINISHED")]
    assert [c.info.run_name for c in children] == ["model.embedding_layer=fc7", "model.embedding_layer=pool"]
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics == {"sweep/runs": 2.0, "sweep/runs_finished": 1.0, "sweep/runs_failed": 1.0,
                                   "sweep/runs_killed": 0.0, "sweep/runs_unfinished": 0.0, "sweep/runs_skipped": 0.0,
                                   "sweep/jobs_not_run": 0.0}
    # The sweep ends with one line per job: its swept values, status and headline metrics.
    assert "model.embedding_layer=fc7" in result.stdout and "FAILED" in result.stdout
    assert "headline/precision_at_k" in children[1].data.metrics


def test_every_logged_recommendation_mean_is_computed_from_the_per_pair_table(store_uri, tmp_path):
    cfg = compose_config([*TINY_RUN, f"tracking.uri={store_uri}", "tracking.log_model=false", "eval.ks=[2,3]"])
    summary = run_experiment(cfg)
    client = MlflowClient(store_uri)
    run = client.get_run(summary.run_id)
    table = load_pairs(Path(mlflow.artifacts.download_artifacts(run_id=summary.run_id, artifact_path="eval/pairs.csv",
                                                                dst_path=str(tmp_path), tracking_uri=store_uri)))
    assert list(dict.fromkeys(table.recommender)) == ["random", "popularity", "pixels", "untrained", "model", "oracle"]
    assert table.groupby(["user_id", "category"]).size().eq(6).all()
    metrics = run.data.metrics
    for recommender, rows in table.groupby("recommender"):
        for k in (2, 3):
            assert metrics[f"ladder/ndcg_at_{k}/{recommender}"] == pytest.approx(rows[f"ndcg_at_{k}"].mean())
    model = table[table.recommender == "model"]
    assert metrics["headline/precision_at_k"] == pytest.approx(model.precision_at_2.mean())
    assert metrics["pipeline/users/eval_pairs"] == len(model)
    # The random floor is an exact expectation, not a draw: E[hits] = k * held-out / candidates.
    random = table[table.recommender == "random"]
    np.testing.assert_allclose(random.hits_at_2, 2 * random.n_held_out / random.n_candidates)
    assert run.data.tags["oracle_attributes"].startswith("the catalogue's: colour")
    assert len(run.data.tags["eval_fingerprint"]) == 16
    per_class = pd.read_csv(MlflowClient(store_uri).download_artifacts(summary.run_id, "eval/classification.csv"),
                            index_col="category")
    assert metrics["model/test_balanced_accuracy"] == pytest.approx(per_class.loc[list(CATEGORIES), "recall"].mean())
    assert "model/test_majority_rate" in metrics
