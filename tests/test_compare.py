"""``python -m fashionbench.compare`` on real tiny runs: verdicts from per-pair results, refusals."""

import pytest
from mlflow.tracking import MlflowClient

from fashionbench.compare import main
from fashionbench.pipeline.experiment import run_experiment
from tests.conftest import TINY_RUN, compose_config
from tests.tracked_store import plant_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """freeze=2 and freeze=4 on the same users; freeze=4 again with other users (users.seed=1)."""
    uri = "sqlite:///" + str(tmp_path_factory.mktemp("compare") / "mlflow.db")
    base = [*TINY_RUN, f"tracking.uri={uri}", "tracking.log_model=false"]
    ids = {name: run_experiment(compose_config([*base, *overrides])).run_id for name, overrides in
           [("freeze2", ["freeze=2"]), ("freeze4", ["freeze=4"]), ("other_users", ["freeze=4", "users.seed=1"])]}
    return uri, ids


def test_runs_on_the_same_users_are_compared_pair_by_pair(three_runs, tmp_path, capsys):
    uri, ids = three_runs
    out = tmp_path / "compare.md"
    assert main(["--tracking-uri", uri, "--runs", ids["freeze2"], ids["freeze4"], "--resamples", "999",
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out.split("written to")[0].rstrip("\n") + "\n"
    assert "| configuration | runs | precision_at_2 (model) | 95 % CI |" in text
    assert "| freeze=2 |" in text and "| freeze=4 |" in text
    assert "| a | b | difference | 95 % CI | p | Holm p | seeds agreeing |" in text
    assert "**Verdict:**" in text


def test_runs_with_other_users_are_refused_naming_what_differs(three_runs, capsys):
    uri, ids = three_runs
    assert main(["--tracking-uri", uri, "--runs", ids["freeze2"], ids["other_users"]]) == 1
    error = capsys.readouterr().err
    assert f"runs {ids['freeze2']} (freeze=2) and {ids['other_users']} (freeze=4)" in error or \
        f"runs {ids['other_users']} (freeze=4) and {ids['freeze2']} (freeze=2)" in error
    assert "do not share users and held-out splits" in error and "users.seed: " in error


def test_a_run_without_per_pair_results_is_named(three_runs, capsys):
    uri, ids = three_runs
    client = MlflowClient(uri)
    old = plant_run(client, client.get_experiment_by_name("fashionbench").experiment_id, "FINISHED",
                    {"headline/precision_at_k": 0.5}, params={"eval.k": "2", "freeze": "8"}, name="before-pairs")
    assert main(["--tracking-uri", uri, "--runs", ids["freeze2"], old]) == 1
    error = capsys.readouterr().err
    assert f"1 run(s) have no per-pair results (eval/pairs.csv): {old} (before-pairs)" in error


@pytest.mark.parametrize(("command", "option"), [("compare", "--calibrate"), ("report", "--no-log"),
                                               ("promote", "--force")])
def test_help_answers_before_mlflow_scipy_or_tensorflow_is_loaded(command, option, tmp_path):
    """``--help`` of the reading commands costs the interpreter and the read side's imports, not MLflow's
    and SciPy's (2.3-2.8 s before they were imported after the command line is parsed)."""
    import subprocess
    import sys

    code = ("import runpy, sys\n"
            f"sys.argv = ['fashionbench.{command}', '--help']\n"
            f"try:\n    runpy.run_module('fashionbench.{command}', run_name='__main__')\n"
            "except SystemExit as error:\n    print('EXIT', error.code)\n"
            "print('LOADED', sorted(m for m in ('mlflow', 'scipy', 'tensorflow') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert option in result.stdout and "EXIT 0" in result.stdout, result.stdout + result.stderr
    assert "LOADED []" in result.stdout, result.stdout + result.stderr
