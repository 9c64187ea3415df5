"""Same-item retrieval, a second ground truth: several photos of each garment (the In-shop
benchmark's layout, or synthetic views), each query ranking the whole gallery."""

from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fashionbench.analysis.study import compare_runs
from fashionbench.data import Catalogue
from fashionbench.data.deepfashion_inshop import DeepFashionInShopSource
from fashionbench.data.synthetic import SyntheticSource
from fashionbench.evaluation.same_item import has_views, random_recall, same_item_retrieval
from fashionbench.pipeline.experiment import run_experiment
from fashionbench.tracking.settings import tracking_settings
from tests.conftest import TINY_RUN, compose_config
from tests.source_fixtures import make_inshop


@pytest.mark.parametrize("gallery, matches, k", [(6, 1, 1), (6, 2, 3), (5, 3, 2), (4, 2, 6)])
def test_random_recall_equals_the_share_of_every_possible_top_k_that_holds_a_match(gallery, matches, k):
    tops = list(combinations(range(gallery), min(k, gallery)))
    assert random_recall(gallery, matches, k) == pytest.approx(np.mean([min(top) < matches for top in tops]))


def test_each_query_ranks_the_whole_gallery_and_finds_its_garments_nearest_photo():
    # Two garments a and b, b's query nearer to a's photos than to its own; c has no gallery photo.
    items = pd.DataFrame({"item_id": ["qa", "qb", "qc", "ga1", "ga2", "gb1"],
                          "category": ["Dresses", "Skirts", "Skirts", "Dresses", "Dresses", "Skirts"],
                          "split": "test", "source": "x", "product_id": ["a", "b", "c", "a", "a", "b"],
                          "view": ["query", "query", "query", "gallery", "gallery", "gallery"]})
    shop = Catalogue(items, np.zeros((6, 1, 1, 3), np.uint8))
    vectors = np.array([[0.0, 0], [1, 0], [5, 5], [0.1, 0], [0.2, 0], [3, 0]])
    results = same_item_retrieval(shop, {"model": vectors}, "euclidean", [1, 2])
    model = results.table[results.table["recommender"] == "model"].set_index("user_id")
    assert model["rank"].to_dict() == {"qa": 1, "qb": 3}  # b's photo comes after a's two
    assert model["same_item_recall_at_2"].to_dict() == {"qa": 1.0, "qb": 0.0}
    assert results.without_match == 1 and results.n_gallery == 3
    metrics = results.metrics()
    assert metrics["same_item/recall_at_1/model"] == 0.5
    assert metrics["same_item/recall_at_1/random"] == pytest.approx((2 / 3 + 1 / 3) / 2)  # exact, not drawn
    assert metrics["same_item/queries_without_match"] == 1


def test_synthetic_views_keep_each_garment_in_one_split_and_one_view_changes_nothing():
    single = SyntheticSource(seed=0, image_size=32, scale=0.01, min_per_split=3)
    several = SyntheticSource(seed=0, image_size=32, scale=0.01, min_per_split=3, views=3).load()
    assert not has_views(single.load().split("test")) and has_views(several.split("test"))
    items = several.items
    assert len(items) == 3 * len(single.load())
    assert (items.groupby("product_id")["split"].nunique() == 1).all()
    shop = items[items["split"] == "test"]
    assert (shop.groupby("product_id")["view"].apply(sorted) == pd.Series([["gallery", "gallery", "query"]]
                                                                           * shop["product_id"].nunique(),
                                                                           index=sorted(shop["product_id"].unique()))
            ).all()
    # Each view is another photo of the garment, not a copy.
    first = items.index[items["product_id"] == items["product_id"].iloc[0]]
    assert not np.array_equal(several.images[first[0]], several.images[first[1]])


def test_the_inshop_layout_is_read_as_published(tmp_path):
    catalogue = DeepFashionInShopSource(root=str(make_inshop(tmp_path / "inshop")), image_size=32).load()
    items = catalogue.items
    assert catalogue.skipped == {"unmapped_label": 3, "filtered_out": 3, "malformed_row": 2}
    assert sorted(items["category"].unique()) == ["Blouses", "Dresses", "Shorts", "Skirts"]
    assert (items.groupby("product_id")["split"].nunique() == 1).all()  # a garment never in two splits
    assert set(items.loc[items["split"] == "test", "view"]) == {"query", "gallery"}
    assert set(items.loc[items["split"] != "test", "view"]) == {""}
    assert (items.groupby(["category", "split"]).size().unstack()["val"] > 0).all()


@pytest.mark.slow
def test_an_inshop_run_logs_same_item_recall_and_compare_takes_it_as_a_metric(tmp_path):
    root = make_inshop(tmp_path / "inshop")
    store = "sqlite:///" + str(tmp_path / "mlflow.db")
    overrides = [o for o in TINY_RUN if not o.startswith("data.")]
    summary = run_experiment(compose_config([*overrides, "data=deepfashion_inshop", f"data.root={root}",
                                             "data.image_size=32", f"tracking.uri={store}", "tracking.log_model=false",
                                             f"data_store.dir={tmp_path / 'store'}",
                                             f"train.cache_dir={tmp_path / 'cache'}"]))
    run = MlflowClient(store).get_run(summary.run_id)
    recall = {name: run.data.metrics[f"same_item/recall_at_1/{name}"] for name in ("random", "pixels", "model")}
    assert run.data.metrics["same_item/queries"] == 16 and run.data.metrics["same_item/gallery"] == 32
    assert recall["random"] == pytest.approx(2 / 32)
    assert recall["pixels"] > recall["random"]  # photos of one garment share its colours
    comparison = compare_runs(tracking_settings(store), metric="same_item/recall_at_10/model")
    assert comparison.metric == "same_item_recall_at_10"
    assert comparison.summaries[0].ladder["model"] == run.data.metrics["same_item/recall_at_10/model"]
