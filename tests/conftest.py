"""Shared fixtures: tiny synthetic catalogues, Hydra composition, a temp MLflow store."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

# Before TensorFlow/Keras are imported: quiet logs, and an empty Keras cache so that no test
# can pick up ImageNet weights a developer happens to have.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="fashionbench-keras-home-")
# A fresh trunk cache per test session: no activations left over from earlier sessions.
os.environ["FASHIONBENCH_CACHE_DIR"] = tempfile.mkdtemp(prefix="fashionbench-trunk-cache-")
# Likewise a fresh catalogue store: runs decode/draw their data in this session at least once.
os.environ["FASHIONBENCH_DATA_STORE"] = tempfile.mkdtemp(prefix="fashionbench-data-store-")
os.environ.pop("MLFLOW_TRACKING_URI", None)

import pytest  # noqa: E402

from fashionbench.config import compose_config  # noqa: E402,F401  (the tests compose configs as users do)
from fashionbench.data import Catalogue  # noqa: E402
from fashionbench.data.synthetic import SyntheticSource  # noqa: E402

SHARED_DATA = Path(os.environ.get("FASHIONBENCH_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data"

# Overrides that shrink a whole run to seconds: 32 px, a few items per split, one epoch.
TINY_RUN = [
    "data.image_size=32",
    "data.scale=0.01",
    "data.min_per_split=3",
    "train.epochs=1",
    "train.batch_size=16",
    "users.n_users=6",
    # Every user rates the whole tiny shop (18 items, 3 Skirts) and favourites start at 3, so
    # each category has users with >= 2 favourites to split into queries and held-out items.
    "users.items_per_user=40",
    "users.favourite_threshold=3",
    "eval.k=2",
    "model.weights=null",
]


@pytest.fixture(scope="session")
def tiny_catalogue() -> Catalogue:
    return SyntheticSource(seed=0, image_size=32, scale=0.01, min_per_split=3).load()


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    """A fresh SQLite MLflow store in the test's temp dir."""
    return "sqlite:///" + str(tmp_path / "mlflow.db")


@pytest.fixture(autouse=True)
def no_inherited_tracking_uri():
    """``mlflow.set_tracking_uri`` exports MLFLOW_TRACKING_URI; keep one test's store out of the next."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def tracked_store(tmp_path_factory):
    """One real tiny run plus planted decoy runs in one MLflow store (tests/tracked_store.py),
    shared by the promote, recommend, report and notebook tests: built once, about 25 s."""
    from tests.tracked_store import make_tracked_store

    return make_tracked_store(tmp_path_factory.mktemp("tracked-store"))


@pytest.fixture(scope="session")
def champion(tracked_store):
    """The tracked store's real run promoted to ``models:/<MODEL_NAME>@champion``."""
    from tests.tracked_store import promote_champion

    return promote_champion(tracked_store)


def free_port() -> int:
    """A free TCP port on 127.0.0.1, for a server a test starts (mlflow server, mlflow models serve)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_answers(url: str, process: subprocess.Popen, log: Path, seconds: float) -> None:
    """Wait until GET ``url`` answers 200 from the server ``process`` started; fail with the end of
    its ``log`` if it exits or does not answer within ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer in {seconds:.0f} s\n" + log.read_text()[-3000:]
        time.sleep(0.5)
