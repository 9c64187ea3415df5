"""Promotion: which run wins, constraints, idempotence, the no-eligible-run error, and the
registered model answering like its run in a fresh process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fashionbench.analysis.promotion import PromotionError, promote
from fashionbench.index.store import load_index
from fashionbench.promote import main
from fashionbench.tracking.records import Constraint, select_runs
from fashionbench.tracking.settings import tracking_settings
from fashionbench.tracking.store import download_run_artifacts, experiment_runs
from tests.tracked_store import MODEL_NAME, plant_run

PROJECT = Path(__file__).resolve().parents[1]


@pytest.fixture
def planted(store_uri, tmp_path):
    """A store of metric-only runs (no artifacts): enough for the selection logic."""
    client = MlflowClient(store_uri)
    experiment_id = client.create_experiment("planted", artifact_location=(tmp_path / "artifacts").as_uri())
    model = {"model_uri": "models:/m-planted"}
    ids = {
        "low": plant_run(client, experiment_id, "FINISHED", {"headline/precision_at_k": 0.30, "model/test_accuracy": 0.90}, tags=model),
        "best": plant_run(client, experiment_id, "FINISHED", {"headline/precision_at_k": 0.50, "model/test_accuracy": 0.60}, tags=model),
        "mid": plant_run(client, experiment_id, "FINISHED", {"headline/precision_at_k": 0.40, "model/test_accuracy": 0.80}, tags=model),
        "failed": plant_run(client, experiment_id, "FAILED", {"headline/precision_at_k": 0.90, "model/test_accuracy": 0.95}, tags=model),
        "running": plant_run(client, experiment_id, "RUNNING", {"headline/precision_at_k": 0.95}, tags=model),
        "no_metric": plant_run(client, experiment_id, "FINISHED", {"model/test_accuracy": 0.99}, tags=model),
        "no_model": plant_run(client, experiment_id, "FINISHED", {"headline/precision_at_k": 0.97}),
        "parent": plant_run(client, experiment_id, "FINISHED", {"headline/precision_at_k": 0.99}, tags={**model, "sweep": "parent"}),
    }
    return tracking_settings(store_uri, "planted"), ids


def test_the_best_finished_run_wins_and_failed_running_or_incomplete_runs_never_do(planted):
    settings, ids = planted
    selection = select_runs(experiment_runs(settings))
    assert [run.run_id for run in selection.ranked] == [ids["best"], ids["mid"], ids["low"]]
    assert selection.excluded == {"status FAILED": 1, "status RUNNING": 1, "no metric 'headline/precision_at_k'": 1,
                                  "no logged model (tracking.log_model=false)": 1}


def test_direction_and_metric_are_configurable(planted):
    settings, ids = planted
    runs = experiment_runs(settings)
    assert select_runs(runs, higher_is_better=False).best.run_id == ids["low"]
    by_accuracy = select_runs(runs, metric="model/test_accuracy")
    assert [r.run_id for r in by_accuracy.ranked][:2] == [ids["no_metric"], ids["low"]]


def test_constraints_filter_runs_before_ranking(planted):
    settings, ids = planted
    runs = experiment_runs(settings)
    selection = select_runs(runs, constraints=(Constraint.parse("model/test_accuracy>=0.7"),))
    assert selection.best.run_id == ids["mid"]
    assert selection.excluded["fails model/test_accuracy >= 0.7"] == 1
    both = (Constraint.parse("model/test_accuracy >= 0.7"), Constraint.parse("headline/precision_at_k<0.35"))
    assert [r.run_id for r in select_runs(runs, constraints=both).ranked] == [ids["low"]]


@pytest.mark.parametrize("text", ["accuracy", "test_accuracy=>0.7", "test_accuracy >= high", ">= 0.7"])
def test_a_malformed_constraint_is_refused_naming_the_option(text):
    with pytest.raises(ValueError, match=r"--constraint .*expected <metric><op><number>"):
        Constraint.parse(text)


def test_no_eligible_run_exits_non_zero_saying_where_and_why(planted, capsys):
    settings, _ = planted
    code = main(["--tracking-uri", settings.uri, "--experiment", "planted", "--constraint", "test_accuracy>0.95"])
    assert code == 1
    error = capsys.readouterr().err
    assert "no eligible run in experiment 'planted'" in error
    assert "1 status FAILED" in error and "1 status RUNNING" in error
    assert "fails model/test_accuracy > 0.95" in error  # the short name on the command line is resolved
    with pytest.raises(PromotionError, match="7 run\\(s\\) searched"):
        promote(settings, constraints=(Constraint.parse("test_accuracy>0.95"),))


def test_an_unknown_experiment_is_named_in_the_error(planted, capsys):
    settings, _ = planted
    assert main(["--tracking-uri", settings.uri, "--experiment", "nope"]) == 1
    assert "no experiment 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_promotion_registers_the_best_real_run_with_alias_and_tags(tracked_store, champion):
    assert champion.run.run_id == tracked_store.real_run_id  # not the decoys with higher precision@k
    assert champion.created
    client = MlflowClient(tracked_store.uri)
    version = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert str(version.version) == champion.version
    assert version.run_id == tracked_store.real_run_id
    assert version.tags["source_run_id"] == tracked_store.real_run_id
    assert version.tags["selected_by"] == "headline/precision_at_k"
    assert float(version.tags["headline/precision_at_k"]) == champion.run.metrics["headline/precision_at_k"]


@pytest.mark.slow
def test_promoting_the_same_run_again_makes_no_new_version(tracked_store, champion, capsys):
    code = main(["--tracking-uri", tracked_store.uri, "--experiment", tracked_store.experiment,
                 "--model-name", MODEL_NAME])
    assert code == 0
    out = capsys.readouterr().out
    assert f"already registered as version {champion.version}" in out
    assert tracked_store.real_run_id in out.splitlines()[2]  # first row of the candidates table
    versions = MlflowClient(tracked_store.uri).search_model_versions(f"name = '{MODEL_NAME}'")
    assert [str(v.version) for v in versions] == [champion.version]


FRESH_PROCESS = """
import json, sys
import mlflow, pandas as pd
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(f"models:/{sys.argv[2]}@champion")
table = model.predict(pd.DataFrame({"item_id": json.loads(sys.argv[3])}), params={"k": 2})
print("RESULT" + table.to_json(orient="records"))
"""


@pytest.mark.slow
def test_the_registered_model_answers_in_a_fresh_process_like_the_runs_indexes(tracked_store, champion, tmp_path):
    indexes = download_run_artifacts(tracked_store.settings, tracked_store.real_run_id, "indexes", tmp_path)
    queries = {}
    for category in ("Dresses", "Blouses"):
        index = load_index(indexes, category)
        queries[category] = index.item_ids[:2].tolist()
    favourites = queries["Dresses"] + queries["Blouses"]
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, tracked_store.uri, MODEL_NAME,
                             json.dumps(favourites)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout.split("RESULT", 1)[1])
    for category, items in queries.items():
        expected = load_index(indexes, category).recommend(items, 2)
        got = sorted((r for r in rows if r["category"] == category), key=lambda r: r["rank"])
        assert [r["item_id"] for r in got] == [item for item, _ in expected]
        assert [r["distance"] for r in got] == pytest.approx([d for _, d in expected])


@pytest.mark.slow
def test_promote_registers_a_run_without_tensorflow(tracked_store, tmp_path):
    """The bundle's classifier is the run's files checked against their hashes: registering a version
    never imports TensorFlow, and the version's classifier is the run's (test_run_models checks it whole)."""
    code = ("import sys\nfrom fashionbench import promote\n"
            f"code = promote.main(['--tracking-uri', {tracked_store.uri!r}, '--experiment', "
            f"{tracked_store.experiment!r}, '--model-name', 'promoted-without-tensorflow'])\n"
            "print('CODE', code, 'LOADED', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "CODE 0 LOADED []" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    assert "registered as new version 1 of 'promoted-without-tensorflow'" in result.stdout
    version = MlflowClient(tracked_store.uri).get_model_version_by_alias("promoted-without-tensorflow", "champion")
    assert version.tags["source_run_id"] == tracked_store.real_run_id
