"""The soak test of parallel sweeps (experiments/soak/soak.py), small: one parallel joblib sweep
into a real `mlflow server` on SQLite, counted as the soak counts it. Every job must have exactly
one run, FINISHED. Four runs at once on one fresh SQLite file, the PostgreSQL scenario, three
repetitions and the faults (a killed worker, a server restart) are the script's: minutes each on
two cores. (Processes racing on one fresh SQLite file, and for one dataset row, are in
tests/test_tracking_server.py and tests/test_tracking_races.py, without TensorFlow.)"""

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SOAK_SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "soak" / "soak.py"
SWEEP_JOBS = 2  # scenario a with two jobs at once, not four: about half the time on two cores


def load_soak():
    spec = importlib.util.spec_from_file_location("experiments_soak", SOAK_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


soak = load_soak()


@pytest.fixture(scope="module")
def soak_root(tmp_path_factory) -> Path:
    """Where the commands run, with their caches (shared by this module's tests) and stores."""
    return tmp_path_factory.mktemp("soak")


def assert_every_job_finished_once(outcome, jobs: int) -> None:
    shown = soak.table([outcome])
    assert not outcome.lost and not outcome.duplicated, shown
    assert not [r for r in outcome.reasons if r.endswith("(no reason recorded)")], shown
    assert outcome.expected == jobs and outcome.statuses == Counter(FINISHED=jobs), shown


def test_a_parallel_sweep_into_a_server_on_sqlite_finishes_every_job_once(soak_root):
    outcome = soak.Soak(soak_root, jobs=SWEEP_JOBS, server_workers=1, sweep_seconds=600).scenario_a(1)
    assert_every_job_finished_once(outcome, SWEEP_JOBS)
    assert [parent.split()[-1] for parent in outcome.parents] == ["FINISHED"], soak.table([outcome])
