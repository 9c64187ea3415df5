"""Every option of the read-side commands that names something (a sweep, a run, an experiment, a
metric, a param, a model, an alias, a version) and does not find it: one line naming it and what
exists instead, exit status 1, no traceback."""

import pytest
from mlflow.tracking import MlflowClient

from fashionbench import compare, promote, recommend, report
from tests.tracked_store import MODEL_NAME, plant_run

COMMANDS = {"compare": compare.main, "promote": promote.main, "report": report.main, "recommend": recommend.main}
SWEEPS = "tracked-sweeps"  # an experiment of its own, so the shared store's other readers see no sweep


@pytest.fixture(scope="module")
def planted_sweep(tracked_store):
    """A sweep parent and one of its jobs, planted in an experiment of the tracked store."""
    client = MlflowClient(tracked_store.uri)
    experiment_id = client.get_experiment_by_name(SWEEPS)
    experiment_id = experiment_id.experiment_id if experiment_id else client.create_experiment(SWEEPS)
    parent = plant_run(client, experiment_id, "FINISHED", {}, tags={"sweep": "parent"}, name="freeze=2,4")
    job = plant_run(client, experiment_id, "FINISHED", {"headline/precision_at_k": 0.5}, params={"freeze": "2"},
                    tags={"sweep_id": parent}, name="freeze=2")
    return parent, job


def cases(store, sweep):
    """(command, arguments, what the one line must say), for every option that names something."""
    real, (parent, job) = store.real_run_id, sweep
    tracked, sweeps = ["--experiment", store.experiment], ["--experiment", SWEEPS]
    model = ["--model-name", MODEL_NAME, "--user", "user-0000"]
    found = [
        *[(command, ["--experiment", "nope"], ["no experiment 'nope'", store.experiment])
          for command in ("compare", "promote", "report")],
        *[(command, [*sweeps, "--sweep", "nope"], ["--sweep nope", f"experiment {SWEEPS!r} has no run nope",
                                                   f"its sweeps, newest first: {parent} (freeze=2,4)"])
          for command in ("compare", "promote", "report")],
        *[(command, [*sweeps, "--sweep", job], [f"--sweep {job}", "is not a sweep's parent run", parent])
          for command in ("compare", "promote", "report")],
        *[(command, [*tracked, "--sweep", "latest"], ["--sweep latest", "has no sweep"])
          for command in ("compare", "promote", "report")],
        ("compare", [*tracked, "--runs", "nope"], ["--runs: no such run(s) ['nope']", real]),
        ("compare", [*tracked, "--runs", real, "--metric", "nope"], ["--metric 'nope'", "precision_at_2"]),
        ("compare", [*tracked, "--runs", real, "--group-by", "frezee"], ["--group-by", "['frezee']", "freeze"]),
        ("promote", [*tracked, "--metric", "nope"], ["--metric: no run logged a metric 'nope'",
                                                     "headline/precision_at_k"]),
        ("promote", [*tracked, "--metric", "precision_at"], ["'precision_at'", "headline/precision_at_k"]),
        ("promote", [*tracked, "--constraint", "test_acuracy>=0.5"], ["--constraint test_acuracy >= 0.5",
                                                                     "no run logged a metric 'test_acuracy'"]),
        ("report", [*tracked, "--metric", "nope", "--no-log"], ["--metric: no run logged a metric 'nope'"]),
        ("recommend", [*tracked, "--model-name", "nope", "--user", "user-0000"],
         ["--model-name 'nope': no such registered model", repr(MODEL_NAME)]),
        ("recommend", [*tracked, *model, "--alias", "nope"], ["--alias 'nope'", "its aliases: champion -> version"]),
        ("recommend", [*tracked, *model, "--version", "99"], ["--version '99'", "its versions are"]),
        ("recommend", [*tracked, *model, "--version", "latest"], ["--version 'latest'", "its versions are"]),
        ("recommend", [*tracked, "--run", "nope", "--user", "user-0000"], ["--run nope: no such run"]),
        ("recommend", [*tracked, "--model-name", MODEL_NAME, "--user", "nope"], ["unknown user 'nope'", "user-0000"]),
        ("recommend", ["--experiment", "nope", "--run", real, "--user", "user-0000"], ["no experiment 'nope'"]),
    ]
    return found


def test_every_option_that_names_something_missing_says_what_exists(tracked_store, champion, planted_sweep,
                                                                    tmp_path, capsys):
    for command, arguments, expected in cases(tracked_store, planted_sweep):
        out = tmp_path / f"{command}.out"
        extra = ["--out", str(out)] if command in ("compare", "report", "recommend") else []
        status = COMMANDS[command](["--tracking-uri", tracked_store.uri, *arguments, *extra])
        captured = capsys.readouterr()
        lines = [line for line in captured.err.splitlines() if line.startswith(f"fashionbench.{command}:")]
        assert status == 1, (command, arguments, captured.out[-500:], captured.err[-2000:])
        assert len(lines) == 1 and "Traceback" not in captured.err, (command, arguments, captured.err[-2000:])
        for fragment in expected:
            assert fragment in lines[0], (command, arguments, lines[0])
        assert not out.exists(), (command, arguments)  # nothing was written for a command that found nothing


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_read_side_takes_its_store_and_experiment_from_the_runs_config(command, tracked_store, capsys,
                                                                           monkeypatch):
    """No argparse default of their own: the run's config (tracking.*, overridden as on run's command line)
    says where to read, so what `run tracking.experiment_name=x` logged is what `compare
    tracking.experiment_name=x` reads; a bad override is one line naming it."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracked_store.uri)
    extra = ["--user", "user-0000", "--run", tracked_store.real_run_id] if command == "recommend" else []
    assert COMMANDS[command]([*extra, "tracking.experiment_name=not-logged-here"]) == 1
    error = capsys.readouterr().err.strip()
    assert "'not-logged-here'" in error and len(error.splitlines()) == 1
    assert COMMANDS[command]([*extra, "tracking.no_such_option=1"]) == 1
    assert "tracking.no_such_option" in capsys.readouterr().err
