"""Real users: an interaction log joined to the shop and split by time (users=interactions), the
H&M layout (data=hm, experiment=hm), on miniature trees with the published columns and quirks."""

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from fashionbench.data.catalogue import CatalogueError
from fashionbench.data.hm import HmSource
from fashionbench.evaluation.references import PopularityRecommender
from fashionbench.pipeline.experiment import run_experiment
from fashionbench.users.interactions import InteractionUsers
from fashionbench.users.simulation import UsersConfigError
from tests.conftest import compose_config
from tests.source_fixtures import HM_CUT, HM_WINDOW_DAYS, make_hm

HM_USERS = dict(user_column="customer_id", item_column="article_id", time_column="t_dat", price_column="price",
                item_id_width=10)


@pytest.fixture(scope="module")
def hm(tmp_path_factory):
    tree = make_hm(tmp_path_factory.mktemp("hm") / "hm")
    catalogue = HmSource(root=str(tree.root), seed=0, image_size=32).load()
    return tree, catalogue


def test_the_hm_articles_become_the_shops_four_categories_with_their_colours_as_attributes(hm):
    tree, catalogue = hm
    items = catalogue.items
    assert sorted(items["category"].unique()) == ["Blouses", "Dresses", "Shorts", "Skirts"]
    assert items["item_id"].str.fullmatch(r"0\d{9}").all()  # the ids as the images and transactions name them
    assert {"attr_colour", "attr_appearance", "attr_perceived_colour"} <= set(items.columns)
    assert set(items["attr_colour"]) == {"Black", "Red"}
    # Counted, not silent: the men's article, the unmapped Trousers, two articles without an image, a broken one.
    assert catalogue.skipped == {"filtered_out": 1, "unmapped_label": 1, "missing_file": 2, "truncated": 1}


def test_an_hm_log_is_joined_to_the_shop_and_every_unused_row_is_counted_by_reason(hm):
    tree, catalogue = hm
    users_config = InteractionUsers(log=str(tree.root / "transactions_train.csv"), cut=HM_CUT,
                                    window_days=HM_WINDOW_DAYS, **HM_USERS)
    users = users_config.simulate(catalogue.split("test"), catalogue)
    planted = tree.planted
    assert users.simulation == {
        "log_rows": planted["rows"], "log_rows_used": planted["queries"] + planted["held_out"] + 2,
        **{f"log_{reason}": planted[reason] for reason in ("after_window", "bad_time", "duplicate",
                                                          "item_not_in_catalogue", "item_not_in_shop",
                                                          "malformed_row", "missing_value")}}
    ratings = users.ratings
    assert set(ratings["item_id"]) <= set(catalogue.split("test").items["item_id"])
    assert (ratings["period"] == np.where(ratings["time"] < pd.Timestamp(HM_CUT), "query", "held_out")).all()
    splits = users_config.hold_out(users, 0.5)
    assert len(splits) == planted["queries"] == planted["held_out"]
    assert splits.skipped_by_reason == {"without_queries": 1, "without_held_out": 1, "not_sampled": 0}
    assert all(len(split.queries) == len(split.held_out) == 1 for split in splits)


def write_log(path: Path, rows: list[tuple]) -> Path:
    pd.DataFrame(rows, columns=["user", "item", "when", "stars"]).to_csv(path, index=False)
    return path


def test_the_split_is_by_time_and_popularity_counts_only_what_came_before_the_cut(tiny_catalogue, tmp_path):
    shop = tiny_catalogue.split("test")
    dresses = shop.items.loc[shop.items["category"] == "Dresses", "item_id"].tolist()
    a, b, c, d = dresses[:4]
    log = write_log(tmp_path / "log.csv", [
        ("u1", a, "2024-01-01", 5), ("u1", b, "2024-01-02", 4), ("u1", c, "2024-02-01T10:00:00Z", 5),
        ("u1", a, "2024-02-02", 5),  # bought again after the cut: a query, so not held out
        ("u2", d, "2024-01-03", 2), ("u2", c, "2024-01-04", 5), ("u2", d, "2024-02-03", 5),
        ("u3", d, "2024-02-04", 5),  # after the cut only: no queries
    ])
    config = InteractionUsers(log=str(log), user_column="user", item_column="item", time_column="when",
                              rating_column="stars", cut="2024-02-01")
    users = config.simulate(shop, tiny_catalogue)
    splits = {(s.user_id, s.category): s for s in config.hold_out(users, 0.5)}
    assert (splits["u1", "Dresses"].queries, splits["u1", "Dresses"].held_out) == ([a, b], [c])
    assert ("u2", "Dresses") not in splits  # d again after the cut: a repurchase, not a held-out item
    assert ("u3", "Dresses") not in splits  # nothing before the cut: no queries
    # Popularity for u1 counts the others' purchases before the cut: c (u2) and d (u2), never d after it.
    popularity = PopularityRecommender(users, {"Dresses": dresses})
    assert popularity.counts["Dresses"] == {a: 1, b: 1, d: 1, c: 1}
    # Without a cut, each pair's most recent item is held out.
    latest = InteractionUsers(log=str(log), user_column="user", item_column="item", time_column="when")
    by_pair = {(s.user_id, s.category): s for s in latest.hold_out(latest.simulate(shop, tiny_catalogue), 0.5)}
    assert (by_pair["u1", "Dresses"].queries, by_pair["u1", "Dresses"].held_out) == ([a, b], [c])
    # A rating threshold makes only the well-rated interactions favourites.
    liked = InteractionUsers(log=str(log), user_column="user", item_column="item", time_column="when",
                             rating_column="stars", favourite_threshold=4, cut="2024-02-01")
    assert liked.simulate(shop, tiny_catalogue).simulation["log_below_threshold"] == 1
    # A rating that is empty or not a number is not one under the threshold: counted as what it is.
    text = log.read_text().replace("2024-01-02,4", "2024-01-02,five").replace("2024-02-04,5", "2024-02-04,")
    log.write_text(text)
    counted = liked.simulate(shop, tiny_catalogue).simulation
    assert (counted["log_below_threshold"], counted["log_bad_rating"]) == (1, 2)


def test_a_log_that_is_not_all_utf8_is_read_with_its_bad_rows_counted(tiny_catalogue, tmp_path):
    """A byte-order mark, Windows line ends, bytes that are not UTF-8 in an id, a row cut short:
    pyarrow refuses such a column as text, so the log is read again as bytes, decoded with
    replacement; the rows whose user or item has such bytes are counted and the rest used."""
    shop = tiny_catalogue.split("test")
    a, b = shop.items.loc[shop.items["category"] == "Dresses", "item_id"].tolist()[:2]
    log = tmp_path / "log.csv"
    log.write_bytes(b"\xef\xbb\xbfuser,item,when\r\n" + f"u1,{a},2024-01-01\r\n".encode()
                    + f"u2,{b}\xff,2024-01-02\r\n".encode("latin-1")  # an item id with a byte that is not UTF-8
                    + f"caf\xe9,{a},2024-01-03\r\n".encode("latin-1")  # a user id in Latin-1
                    + f"u3,{b}\r\nu4,{b},2024-01-04".encode())  # a row cut short; the last line without its end
    users = InteractionUsers(log=str(log), user_column="user", item_column="item", time_column="when"
                             ).simulate(shop, tiny_catalogue)
    assert {name: value for name, value in users.simulation.items() if value} == {
        "log_rows": 5, "log_rows_used": 2, "log_invalid_utf8": 2, "log_malformed_row": 1}
    assert users.ratings["user_id"].tolist() == ["u1", "u4"]


def test_a_parquet_log_with_integer_ids_and_epoch_seconds_reads_as_its_csv(hm, tmp_path):
    tree, catalogue = hm
    shop = catalogue.split("test")
    text = InteractionUsers(log=str(tree.root / "transactions_train.csv"), cut=HM_CUT, window_days=HM_WINDOW_DAYS,
                            **HM_USERS).simulate(shop, catalogue)
    table = text.ratings
    as_numbers = pa.table({
        "customer_id": table["user_id"], "article_id": table["item_id"].astype("int64"),  # the zero is lost
        "t_dat": (table["time"] - pd.Timestamp(0)) // pd.Timedelta(seconds=1), "price": table["price"]})
    pq.write_table(as_numbers, tmp_path / "log.parquet")
    parquet = InteractionUsers(log=str(tmp_path / "log.parquet"), cut=HM_CUT, window_days=HM_WINDOW_DAYS,
                               time_unit="s", **HM_USERS).simulate(shop, catalogue)
    columns = ["user_id", "item_id", "category", "time", "period"]
    pd.testing.assert_frame_equal(parquet.ratings[columns], table[columns])


@pytest.mark.parametrize("options, message", [
    ({"log": "nowhere.csv"}, "users.log='nowhere.csv': no such file"),
    ({"log": "{root}/articles.txt"}, "expected a CSV"),
    ({"user_column": "customer"}, "no column 'customer' (users.user_column); its columns are"),
    ({"time_column": "date"}, "no column 'date' (users.time_column)"),
    ({"cut": "next tuesday"}, "users.cut='next tuesday' is not an ISO date"),
    ({"window_days": 7}, "users.window_days needs users.cut"),
    ({"favourite_threshold": 4}, "users.favourite_threshold needs users.rating_column"),
])
def test_an_unusable_log_or_option_is_named_when_the_config_is_made(hm, options, message):
    tree, _ = hm
    (tree.root / "articles.txt").write_text("not a log")
    settings = {**HM_USERS, "log": str(tree.root / "transactions_train.csv"), **options}
    settings["log"] = settings["log"].format(root=tree.root)
    with pytest.raises(UsersConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        InteractionUsers(**settings)


def test_a_cut_outside_the_log_fails_before_any_run_starts(hm, tmp_path):
    tree, _ = hm
    store = "sqlite:///" + str(tmp_path / "mlflow.db")
    config = compose_config(["experiment=hm", f"data.root={tree.root}", "users.cut=2031-01-01", "data.image_size=32", "eval.k=2",
                             f"tracking.uri={store}", f"data_store.dir={tmp_path / 'store'}"])
    with pytest.raises(UsersConfigError, match=r"users.cut=2031-01-01 is outside the log .*transactions_train.csv: "
                                               r"its interactions run from 2020-09-0\d 00:00:00 to 2020-09-23"):
        run_experiment(config)
    experiment = MlflowClient(store).get_experiment_by_name("fashionbench")
    assert experiment is None or not MlflowClient(store).search_runs([experiment.experiment_id])


def test_a_category_mapping_that_leaves_a_category_empty_is_named(hm):
    tree, _ = hm
    with pytest.raises(CatalogueError, match="category Dresses has no usable items"):
        HmSource(root=str(tree.root), image_size=32, categories={"Skirt": "Skirts", "Shorts": "Shorts",
                                                                  "Blouse": "Blouses"}).load()


@pytest.mark.slow
def test_experiment_hm_scores_the_ladder_and_the_competitions_map_at_12(hm, tmp_path):
    tree, _ = hm
    store = "sqlite:///" + str(tmp_path / "mlflow.db")
    summary = run_experiment(compose_config([
        "experiment=hm", f"data.root={tree.root}", "data.image_size=32", "train.epochs=1", "train.batch_size=16",
        "model.weights=null", "eval.k=2", f"tracking.uri={store}", "tracking.log_model=false",
        f"data_store.dir={tmp_path / 'store'}", f"train.cache_dir={tmp_path / 'cache'}"]))
    metrics = MlflowClient(store).get_run(summary.run_id).data.metrics
    ladder = {name: metrics[f"ladder/map_at_12/{name}"] for name in ("random", "popularity", "model", "oracle")}
    assert ladder["random"] < ladder["oracle"]  # customers buy the colour they like: the attributes find it
    assert metrics["pipeline/users/eval_pairs"] == tree.planted["queries"]
    assert metrics["pipeline/users/log_item_not_in_shop"] == tree.planted["item_not_in_shop"]
