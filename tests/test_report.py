"""``python -m fashionbench.report``: the course's tables and the sweep table from planted runs."""

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from fashionbench.analysis.report import ReportError
from fashionbench.analysis.written_report import write_report
from fashionbench.report import main
from fashionbench.tracking.settings import tracking_settings
from tests.conftest import compose_config
from tests.tracked_store import plant_run

SPLIT_CSV = pd.DataFrame({"train": [5, 18, 8, 21], "val": [2, 6, 4, 7], "test": [3, 5, 3, 7]},
                         index=pd.Index(["Skirts", "Dresses", "Shorts", "Blouses"], name="category")).to_csv()


PER_CLASS = {c: {"f1": base, "recall": base + 0.05, "precision": base - 0.05, "support": 5.0}
             for c, base in [("Blouses", 0.8), ("Dresses", 0.7), ("Shorts", 0.6), ("Skirts", 0.5)]}
CLASSIFICATION_CSV = pd.DataFrame.from_dict(PER_CLASS, orient="index").rename_axis("category").to_csv()


def metrics(seconds, accuracy, precision, random=0.1):
    return {"model/training/train_seconds": seconds, "model/test_accuracy": accuracy, "headline/precision_at_k": precision,
            "headline/random_precision_at_k": random, "pipeline/users/eval_pairs": 100.0,
            **{f"model/test_f1/{c}": scores["f1"] for c, scores in PER_CLASS.items()}}


@pytest.fixture
def sweep(store_uri, tmp_path):
    """A sweep parent, three finished runs (freeze 8, 2, 4 in start order), one failed run, and a run
    of another sweep that must not appear."""
    client = MlflowClient(store_uri)
    # Artifacts beside the store: MLflow's default for a SQLite store is ./mlruns, in the checkout.
    experiment_id = client.create_experiment("study", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = plant_run(client, experiment_id, "FINISHED", {}, tags={"sweep": "parent"})
    child = {"sweep_id": parent, "weights_used": "random", "data_fingerprint": "abc"}
    params = {"data.name": "synthetic", "data.image_size": "32", "train.epochs": "1", "eval.k": "2",
              "index.metric": "angular", "tracking.uri": "x"}
    ids = []
    for freeze, seconds, accuracy, precision in [(8, 30.0, 0.70, 0.21), (2, 10.0, 0.60, 0.35), (4, 20.0, 0.65, 0.25)]:
        ids.append(plant_run(client, experiment_id, "FINISHED", metrics(seconds, accuracy, precision),
                             params={**params, "freeze": str(freeze), "model.freeze": str(freeze)}, tags=child))
        client.log_text(ids[-1], SPLIT_CSV, "data/split_table.csv")
        client.log_text(ids[-1], CLASSIFICATION_CSV, "eval/classification.csv")
    failed = plant_run(client, experiment_id, "FAILED", {}, params={**params, "freeze": "999", "model.freeze": "999"},
                       tags=child)
    plant_run(client, experiment_id, "FINISHED", metrics(1.0, 0.99, 0.99), params={**params, "freeze": "1"},
              tags={"sweep_id": "another-sweep"})
    return tracking_settings(store_uri, "study"), parent, ids, failed


def test_the_report_puts_every_table_beside_the_courses(sweep, tmp_path):
    settings, parent, ids, _ = sweep
    text = write_report(settings, tmp_path / "report.md", sweep_id=parent).markdown.read_text()

    assert "| Attempt | #1 | #2 | #3 | #4 |" in text
    assert "| Seconds (these runs) | 30.0 | 10.0 | 20.0 |  |" in text  # start order, not sorted
    assert "| Seconds (course) | 301 | 283 | 290 | 120 |" in text
    assert "the runs below are those that timed the same (`train.cache=false`: `train_seconds`)." in text
    assert "| Categories | Train | Val | Test | Course Train | Course Val | Course Test |" in text
    assert "| Dresses | 18 | 6 | 5 | 1829 | 638 | 545 |" in text
    assert "| **Total** | 52 | 19 | 18 | 5232 | 1914 | 1666 |" in text
    # Classification of the best run (freeze=2, precision@k 0.35) beside the course's.
    assert f"The run with the highest headline/precision_at_k: `{ids[1]}`" in text
    assert "| Blouses | 0.800 | 0.850 | 0.750 | 0.817 | 0.781 | 0.856 |" in text
    assert "| Skirts | 0.500 | 0.550 | 0.450 | 0.602 | 0.796 | 0.484 |" in text
    assert "| **Accuracy** | 0.600 |  |  | 0.760 |  |  |" in text


def test_the_sweep_table_lists_swept_params_marks_the_best_and_is_plotted(sweep, tmp_path):
    settings, parent, ids, failed = sweep
    written = write_report(settings, tmp_path / "report.md", sweep_id=parent)
    out, report_run = written.markdown, written.run_id
    plot = next((p for p in written.pictures if "precision_at_k" in p.name), None)
    text = out.read_text()

    assert "Swept: `freeze`." in text  # model.freeze always equals freeze: one column, not two
    assert f"| #1 | `{ids[0][:8]}` | FINISHED | 8 | 30.0 | 0.700 | 0.210 | 0.100 |  |" in text
    # Planted runs have no per-pair results: the highest is marked, as untested, never "best".
    assert f"| #2 | `{ids[1][:8]}` | FINISHED | 2 | 10.0 | 0.600 | 0.350 | 0.100 | highest (untested) |" in text
    assert "**best**" not in text
    assert "No paired comparison: 3 run(s) have no per-pair results (eval/pairs.csv)" in text
    assert f"| #4 | `{failed[:8]}` | FAILED | 999 | – | – | – | – |  |" in text
    assert "0.990" not in text  # the other sweep's run
    assert f"![headline/precision_at_k against each swept parameter]({plot.name})" in text
    assert Image.open(plot).size[0] > 0

    logged = {a.path for a in MlflowClient(settings.uri).list_artifacts(report_run, "report")}
    assert logged == {"report/report.md", "report/report.html", "report/report_tables.tex", f"report/{plot.name}"}
    # The same report as one page with its picture inline, and its tables as LaTeX.
    page = written.html.read_text()
    assert "<table>" in page and 'src="data:image/png;base64,' in page and plot.name not in page
    latex = written.latex.read_text()
    tables = sum(line.startswith("|---") for line in text.splitlines())
    assert latex.count("\\begin{tabular}") == tables == 4 and "Course Train" in latex


def test_the_training_time_table_leaves_out_runs_that_timed_something_else(sweep, tmp_path):
    settings, parent, ids, _ = sweep
    client = MlflowClient(settings.uri)
    client.log_metric(ids[1], "pipeline/cache/trunk_cache_used", 1.0)  # freeze=2 fitted the tail on cached activations
    client.log_metric(ids[1], "model/training/fit_seconds", 2.5)
    text = write_report(settings, tmp_path / "report.md", sweep_id=parent, log_run=False).markdown.read_text()
    assert "| Seconds (these runs) | 30.0 | 20.0 |  |  |" in text
    assert "1 of 3 run(s) used the trunk cache" in text and "(`fit_seconds`: 2.5)" in text


def test_latest_sweep_and_report_runs_are_not_reported_on(sweep, tmp_path, capsys):
    settings, parent, ids, _ = sweep
    args = ["--tracking-uri", settings.uri, "--experiment", "study", "--out", str(tmp_path / "r.md")]
    assert main([*args, "--sweep", "latest"]) == 0
    assert f"sweep `{parent}`" in capsys.readouterr().out
    # Reporting on the whole experiment again: the first report's run is not a row.
    assert main(args) == 0
    text = (tmp_path / "r.md").read_text()
    assert "| #5 |" in text and "| #6 |" not in text  # 4 runs of the sweep + the other sweep's run


def test_nothing_to_report_is_an_error_naming_the_experiment(store_uri, capsys):
    MlflowClient(store_uri).create_experiment("empty")
    with pytest.raises(ReportError, match="no finished run in experiment empty"):
        write_report(tracking_settings(store_uri, "empty"), Path("unused.md"))
    assert main(["--tracking-uri", store_uri, "--experiment", "missing"]) == 1
    assert "no experiment 'missing'" in capsys.readouterr().err


def test_the_course_preset_is_the_courses_setup_and_quick_keeps_its_design():
    course = compose_config(["experiment=course"])
    assert (course.model.freeze, course.data.image_size, course.train.epochs, course.index.metric) == (4, 224, 4, "angular")
    assert (course.model.weights, course.train.learning_rate, list(course.model.dense_units)) == ("imagenet", 0.001, [512, 128])
    assert not course.train.cache  # timed like the course: the frozen trunk runs every epoch
    quick = compose_config(["experiment=quick", "freeze=8"])  # a sweep's override wins over the preset
    assert (quick.model.freeze, quick.train.epochs, quick.index.metric, quick.model.weights) == (8, 4, "angular", "auto")
    assert quick.data.image_size < course.data.image_size
