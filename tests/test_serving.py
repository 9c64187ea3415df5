"""The promoted recommender served by a real `mlflow models serve` on 127.0.0.1, asked over HTTP."""

import base64
import io
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from fashionbench.data.artifact_files import load_shop
from fashionbench.tracking.store import download_run_artifacts
from tests.conftest import free_port, wait_until_answers
from tests.tracked_store import MODEL_NAME

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def server(tracked_store, champion, tmp_path_factory):
    """`mlflow models serve` of the champion on a free port; stopped by its process id."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL_NAME}@champion",
             "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, "MLFLOW_TRACKING_URI": tracked_store.uri, "TF_CPP_MIN_LOG_LEVEL": "3"},
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(f"{url}/ping", process, log, 240)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)


def ask(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/invocations", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_favourites_get_the_nearest_items_of_their_category_with_the_query_named(server, tracked_store, tmp_path):
    shop = load_shop(*(download_run_artifacts(tracked_store.settings, tracked_store.real_run_id, path, tmp_path)
                       for path in ("data/shop_items.csv", "data/shop_images.npz")))
    dresses = shop.items.loc[shop.items.category == "Dresses", "item_id"].tolist()[:2]
    status, answer = ask(server, {"dataframe_split": {"columns": ["item_id"], "data": [[i] for i in dresses]},
                                  "params": {"k": 2}})
    assert status == 200, answer
    rows = answer["predictions"]
    assert [(r["category"], r["rank"]) for r in rows] == [("Dresses", 1), ("Dresses", 2)]
    assert all(r["query"] == " ".join(dresses) and r["item_id"] not in dresses for r in rows)


def test_a_photo_is_answered_from_its_encoded_bytes(server, tracked_store, tmp_path):
    shop = load_shop(*(download_run_artifacts(tracked_store.settings, tracked_store.real_run_id, path, tmp_path)
                       for path in ("data/shop_items.csv", "data/shop_images.npz")))
    encoded = io.BytesIO()
    Image.fromarray(shop.images[0]).save(encoded, format="PNG")
    status, answer = ask(server, {"dataframe_split": {"columns": ["image"], "data": [
        [base64.b64encode(encoded.getvalue()).decode()]]}, "params": {"k": 3, "category": "Skirts"}})
    assert status == 200, answer
    assert [(r["query"], r["category"]) for r in answer["predictions"]] == [("image 0", "Skirts")] * 3


def test_a_bad_request_is_a_400_with_a_one_line_reason(server):
    status, answer = ask(server, {"dataframe_split": {"columns": ["item_id"], "data": [["no-such-item"]]}})
    assert status == 400
    # MLflow's scoring server puts "Failed to predict data '<the request>'." before the model's
    # reason; the reason itself is the message's last line, and no stack trace is sent.
    reason = answer["message"].splitlines()[-1]
    assert reason.startswith("Error: item 'no-such-item' is not in this model's shop (18 items")
    assert "Traceback" not in json.dumps(answer) and answer["error_code"] == "INVALID_PARAMETER_VALUE"
    status, answer = ask(server, {"dataframe_split": {"columns": ["image"], "data": [
        [base64.b64encode(b"not a picture").decode()]]}})
    assert status == 400 and answer["message"].splitlines()[-1].startswith("Error: image 0: not a usable image")
    # params that cannot be followed are refused, never ignored: k=0 is not "the default k"
    item = [["no-such-item"]]
    for payload, reason in (({"params": {"k": 0}}, "Error: params.k must be >= 1, got 0"),
                            ({"params": {"category": "Hats"}}, "Error: unknown category 'Hats'"),
                            ({"dataframe_split": {"columns": ["item_id"], "data": [[None]]}},
                             "Error: the request needs rows with an item_id")):
        status, answer = ask(server, {"dataframe_split": {"columns": ["item_id"], "data": item}, **payload})
        assert status == 400 and answer["message"].splitlines()[-1].startswith(reason), answer


def test_the_registered_version_declares_its_inputs_outputs_and_params(tracked_store, champion):
    import mlflow
    from mlflow.models import get_model_info

    mlflow.set_tracking_uri(tracked_store.uri)  # the conftest fixture unsets it after the test
    version = MlflowClient(tracked_store.uri).get_model_version(MODEL_NAME, champion.version)
    info = get_model_info(f"models:/{MODEL_NAME}/{version.version}")
    signature = info.signature.to_dict()
    assert {c["name"] for c in json.loads(signature["inputs"])} == {"item_id", "image"}
    assert [c["name"] for c in json.loads(signature["outputs"])] == ["query", "category", "rank", "item_id", "distance"]
    assert {p["name"]: p["default"] for p in json.loads(signature["params"])} == {"k": 2, "category": ""}
    assert np.isfinite(float(version.version))
