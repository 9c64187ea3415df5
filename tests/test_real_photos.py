"""experiment=real_photos end to end on the shared CC0 clothing photos (skipped without them)."""

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fashionbench.data import CATEGORIES
from fashionbench.evaluation.pairs import load_pairs
from fashionbench.pipeline.experiment import run_experiment
from tests.conftest import SHARED_DATA, compose_config

PHOTOS = SHARED_DATA / "clothing_dataset"
REVIEWS = SHARED_DATA / "reviews" / "womens_clothing_ecommerce_reviews.csv"
LABELS = {"Dress": "Dresses", "Skirt": "Skirts", "Shorts": "Shorts", "Blouse": "Blouses", "Top": "Blouses",
          "Shirt": "Blouses"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (PHOTOS / "images.csv").is_file() or not REVIEWS.is_file(),
                       reason=f"the shared photos/reviews are not under {SHARED_DATA}"),
]


def test_real_photos_preset_runs_end_to_end(store_uri, monkeypatch):
    monkeypatch.setenv("FASHIONBENCH_SHARED", str(SHARED_DATA.parent))
    # The preset as it ships, but 5 epochs: what is checked here (the data, the protocol, the logged tables) does
    # not depend on how long the head trains, and CI keeps 20 s.
    cfg = compose_config(["experiment=real_photos", f"tracking.uri={store_uri}", "tracking.log_model=false",
                          "train.epochs=5"])
    summary = run_experiment(cfg)

    run = MlflowClient(store_uri).get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    client = MlflowClient(store_uri)
    per_class = pd.read_csv(client.download_artifacts(summary.run_id, "eval/classification.csv"), index_col="category")
    for category in CATEGORIES:
        assert metrics[f"model/test_f1/{category}"] == pytest.approx(per_class.loc[category, "f1"])
    # Every mapped row of images.csv became an item (none of the shared photos is unreadable).
    labels = pd.read_csv(PHOTOS / "images.csv")["label"].map(LABELS).dropna()
    expected = labels.value_counts()
    assert metrics["pipeline/data/items_train"] + metrics["pipeline/data/items_val"] + metrics["pipeline/data/items_test"] == len(labels) == 1264
    split_table = pd.read_csv(MlflowClient(store_uri).download_artifacts(summary.run_id, "data/split_table.csv"),
                              index_col=0)
    assert split_table.sum(axis=1).to_dict() == {c: int(expected[c]) for c in CATEGORIES}
    pairs = load_pairs(Path(client.download_artifacts(summary.run_id, "eval/pairs.csv")))
    for recommender, metric in (("model", "headline/precision_at_k"), ("random", "headline/random_precision_at_k")):
        assert metrics[metric] == pytest.approx(pairs[pairs.recommender == recommender].precision_at_5.mean())
    # The protocol gives the ladder room: every user rates every shop item and only 5s are favourites.
    assert metrics["ladder/precision_at_5/oracle"] - metrics["ladder/precision_at_5/random"] >= 0.05
    assert metrics["pipeline/users/reviews_rows"] == 10678  # Dresses 6,319 + Blouses 3,097 + Skirts 945 + Shorts 317
    assert metrics["pipeline/users/attributes_measured"] == 1.0
