"""Per-pair results and the reference ladder: every logged mean comes from the table, and no
reference sees what it must not (the target user's held-out items)."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from fashionbench.artifacts import ArtifactError
from fashionbench.evaluation.metrics import random_expectations
from fashionbench.evaluation.pairs import PairResults, eval_fingerprint, evaluate_recommenders, load_pairs, save_pairs
from fashionbench.evaluation.references import (
    IndexRecommender,
    PopularityRecommender,
    RandomRecommender,
    reference_ladder,
    thumbnail_vectors,
)
from fashionbench.evaluation.summaries import attribute_distances, metric_name
from fashionbench.index.exact import ExactIndexConfig
from fashionbench.users.simulation import HeldOutFavourites, SimulatedUsers

SHOP = {"Skirts": ["s0", "s1", "s2", "s3", "s4", "s5"], "Dresses": ["d0", "d1", "d2", "d3", "d4"]}
SPLITS = [
    HeldOutFavourites("u1", "Skirts", queries=["s0"], held_out=["s1", "s2"]),
    HeldOutFavourites("u2", "Skirts", queries=["s3", "s4"], held_out=["s5"]),
    HeldOutFavourites("u1", "Dresses", queries=["d0"], held_out=["d4"]),
]


class Planted:
    """A recommender that answers from a table: (user, category) -> ranked items."""

    def __init__(self, name, answers):
        self.name, self.answers = name, answers

    def recommend(self, split, k):
        return self.answers[(split.user_id, split.category)][:k]


def planted_results() -> PairResults:
    perfect = Planted("oracle", {("u1", "Skirts"): ["s1", "s2", "s3"], ("u2", "Skirts"): ["s5", "s0", "s1"],
                                 ("u1", "Dresses"): ["d4", "d1", "d2"]})
    model = Planted("model", {("u1", "Skirts"): ["s3", "s1", "s4"], ("u2", "Skirts"): ["s0", "s1", "s2"],
                              ("u1", "Dresses"): ["d1", "d2", "d4"]})
    return evaluate_recommenders([RandomRecommender(), model, perfect], SPLITS, SHOP, ks=[2, 3], headline_k=2)


def test_one_row_per_pair_and_recommender_with_every_metric_at_every_k():
    table = planted_results().table
    assert len(table) == len(SPLITS) * 3
    assert table.groupby(["user_id", "category"]).size().eq(3).all()
    row = table[(table.recommender == "model") & (table.user_id == "u1") & (table.category == "Skirts")].iloc[0]
    assert (row.n_queries, row.n_held_out, row.n_candidates) == (1, 2, 5)
    assert (row.hits_at_2, row.precision_at_2, row.recall_at_2, row.mrr_at_2) == (1, 0.5, 0.5, 0.5)
    assert json.loads(row.recommended) == ["s3", "s1", "s4"] and json.loads(row.held_out) == ["s1", "s2"]
    random = table[(table.recommender == "random") & (table.category == "Dresses")].iloc[0]
    assert random.precision_at_2 == pytest.approx(random_expectations(4, 1, 2)["precision"]) == pytest.approx(1 / 4)
    assert random.recommended == ""


def test_every_logged_mean_is_computed_from_the_table():
    results = planted_results()
    table, metrics = results.table, results.metrics()
    for recommender, rows in table.groupby("recommender"):
        for k in (2, 3):
            for metric in ("precision", "recall", "ndcg", "hit", "mrr"):
                assert metrics[metric_name(metric, k, recommender)] == pytest.approx(rows[f"{metric}_at_{k}"].mean())
    model = table[table.recommender == "model"]
    assert metrics["headline/precision_at_k"] == pytest.approx(model.precision_at_2.mean())  # the headline, k = 2
    assert metrics[metric_name("precision", 2, "model", "Skirts")] == pytest.approx(model[model.category == "Skirts"].precision_at_2.mean())
    assert metrics["headline/random_precision_at_k"] == pytest.approx(table[table.recommender == "random"].precision_at_2.mean())
    assert metrics["pipeline/users/eval_pairs"] == 3 and metrics["pipeline/users/eval_pairs/Dresses"] == 1
    normalised = (metrics["headline/precision_at_k"] - metrics["headline/random_precision_at_k"]) / (
        metrics[metric_name("precision", 2, "oracle")] - metrics["headline/random_precision_at_k"])
    assert metrics["headline/normalised_precision_at_k"] == pytest.approx(normalised)
    # Coverage: distinct items in the top-2 lists / shop items; the model's lists hold s3, s1, s0, d1, d2.
    assert metrics["ladder/coverage_at_2/model"] == pytest.approx(5 / 11)


def test_the_table_round_trips_and_fingerprints_who_is_evaluated_on_what(tmp_path):
    results = planted_results()
    save_pairs(results.table, tmp_path / "pairs.csv")
    loaded = load_pairs(tmp_path / "pairs.csv")
    pd.testing.assert_frame_equal(loaded, results.table, check_dtype=False)
    fingerprint = eval_fingerprint(results.table, SHOP)
    assert results.tags()["eval_fingerprint"] == fingerprint == eval_fingerprint(loaded, SHOP)
    # Other recommenders on the same pairs: same fingerprint. Another held-out item: another one.
    alone = evaluate_recommenders([RandomRecommender()], SPLITS, SHOP, ks=[2], headline_k=2)
    assert eval_fingerprint(alone.table, SHOP) == fingerprint
    moved = [SPLITS[0], HeldOutFavourites("u2", "Skirts", queries=["s3", "s5"], held_out=["s4"]), SPLITS[2]]
    assert eval_fingerprint(evaluate_recommenders([RandomRecommender()], moved, SHOP, [2], 2).table, SHOP) != fingerprint


@pytest.mark.parametrize("damage, says", [
    (lambda text: text[: len(text) // 2], "missing, not numbers"),  # cut inside a row: its metrics empty
    (lambda text: text + text.split("\n", 1)[1], re.escape("holds 9 row(s) twice, e.g. user 'u1'")),
    (lambda text: text.replace(",0.5,", ",7.0,", 1), "outside 0..1, e.g. 7.0"),
    (lambda text: text.replace(",0.5,", ",,", 1), "missing, not numbers or outside 0..1, e.g. ''"),
    (lambda text: text.replace(",0.5,", ",half,", 1), "e.g. 'half'"),
    (lambda text: "", re.escape("pairs.csv is unreadable (EmptyDataError")),
    (lambda text: text.replace("recommender", "who", 1), re.escape("lacks the column(s) ['recommender']")),
], ids=["truncated", "duplicated", "out-of-range", "empty-metric", "text-metric", "empty-file", "no-column"])
def test_a_table_that_is_not_a_runs_pairs_is_refused_saying_why(tmp_path, damage, says):
    save_pairs(planted_results().table, tmp_path / "pairs.csv")
    text = (tmp_path / "pairs.csv").read_text()
    assert ",0.5," in text
    (tmp_path / "pairs.csv").write_text(damage(text))
    with pytest.raises(ArtifactError, match=says):
        load_pairs(tmp_path / "pairs.csv", "eval/pairs.csv")


def test_random_bytes_are_refused_naming_the_file(tmp_path):
    (tmp_path / "pairs.csv").write_bytes(bytes(range(128, 256)) * 10)
    with pytest.raises(ArtifactError, match="eval/pairs.csv is unreadable"):
        load_pairs(tmp_path / "pairs.csv", "eval/pairs.csv")


def users_from(rows) -> SimulatedUsers:
    return SimulatedUsers(pd.DataFrame(rows, columns=["user_id", "item_id", "category", "rating"]), 4)


def test_popularity_never_counts_the_target_users_own_favourites():
    # u1's held-out s5 is a favourite of u1 alone; s2 is the other users' favourite.
    users = users_from([("u1", "s0", "Skirts", 5), ("u1", "s5", "Skirts", 5),
                        ("u2", "s2", "Skirts", 5), ("u3", "s2", "Skirts", 4), ("u3", "s1", "Skirts", 5)])
    popularity = PopularityRecommender(users, SHOP)
    split = HeldOutFavourites("u1", "Skirts", queries=["s0"], held_out=["s5"])
    ranked = popularity.recommend(split, 5)
    assert ranked[:2] == ["s2", "s1"] and "s0" not in ranked
    assert ranked.index("s5") > ranked.index("s1")  # s5 counts 0 for u1: nothing leaks
    # For another user, u1's favourites do count: s0, s1 and s5 (one vote each) before s3 and s4 (none).
    assert popularity.recommend(HeldOutFavourites("u2", "Skirts", ["s2"], ["s1"]), 5) == ["s0", "s1", "s5", "s3", "s4"]


def test_thumbnails_are_the_mean_colour_of_each_cell():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:, 4:] = 255  # right half white
    vectors = thumbnail_vectors(np.stack([image]), 2)
    assert vectors.shape == (1, 12)
    np.testing.assert_allclose(vectors[0].reshape(2, 2, 3)[:, :, 0], [[0, 1], [0, 1]])


def test_the_oracle_finds_items_with_the_same_attributes_and_the_ladder_is_in_order(tiny_catalogue):
    shop = tiny_catalogue.split("test")
    items = shop.items["item_id"].tolist()
    attributes = pd.get_dummies(shop.items.filter(like="attr_").astype(str)).to_numpy(np.float32)
    shop_items = {c: shop.items.loc[shop.items.category == c, "item_id"].tolist() for c in shop.items.category.unique()}
    users = users_from([(f"u{i}", item, shop.items.category.iat[i], 5) for i, item in enumerate(items)])
    ladder = reference_ladder(shop, users, shop_items, None, ExactIndexConfig("angular"), attributes, 4)
    assert [r.name for r in ladder] == ["random", "popularity", "pixels", "oracle"]  # untrained: not given
    oracle = ladder[-1]
    query = shop_items["Dresses"][0]
    table = shop.items.set_index("item_id").filter(like="attr_")
    nearest = oracle.recommend(HeldOutFavourites("u", "Dresses", [query], []), 1)[0]
    shared = (table.loc[nearest] == table.loc[query]).sum()
    assert shared == max((table.loc[other] == table.loc[query]).sum() for other in shop_items["Dresses"] if other != query)


def test_attribute_distances_count_the_share_of_differing_attributes():
    vectors = np.array([[1, 0, 1, 0], [1, 0, 0, 1], [0, 1, 0, 1]], np.float32)  # two attributes, one-hot
    distances = attribute_distances(vectors, np.array(["Skirts"] * 3), {"Skirts": ["a", "b", "c"]})["Skirts"]
    np.testing.assert_allclose(distances, [[0, 0.5, 1], [0.5, 0, 0.5], [1, 0.5, 0]], atol=1e-12)


def test_index_recommenders_exclude_the_queries():
    from fashionbench.index.base import ItemEmbeddings

    vectors = np.eye(4, dtype=np.float32) + 0.1
    embeddings = ItemEmbeddings(np.array(SHOP["Dresses"][:4]), np.array(["Dresses"] * 4), vectors, "test")
    recommender = IndexRecommender("pixels", {"Dresses": ExactIndexConfig("euclidean").build(embeddings)})
    assert "d0" not in recommender.recommend(HeldOutFavourites("u", "Dresses", ["d0"], ["d1"]), 3)


def test_the_summary_table_breaks_every_mean_down_by_category(tmp_path):
    results = planted_results()
    results.write_artifacts(tmp_path)
    summary = pd.read_csv(tmp_path / "eval" / "summary.csv")
    assert set(zip(summary.recommender, summary.category)) == {
        (r, c) for r in ("random", "model", "oracle") for c in ("all", "Skirts", "Dresses")}
    model = summary.set_index(["recommender", "category"]).loc["model"]
    assert model.loc["Skirts", "pairs"] == 2 and model.loc["all", "pairs"] == 3
    assert model.loc["Skirts", "precision_at_3"] == pytest.approx((1 / 3 + 0) / 2)
    assert model.loc["Dresses", "coverage_at_2"] == pytest.approx(2 / 5)  # d1, d2 of five dresses
    assert results.metrics()["ladder/precision_at_3/model"] == pytest.approx(model.loc["all", "precision_at_3"])
    assert (tmp_path / "eval" / "pairs.csv").is_file()


def test_an_index_recommender_answers_all_splits_as_it_answers_each():
    from fashionbench.index.base import ItemEmbeddings

    rng = np.random.default_rng(0)
    ids = np.array(SHOP["Skirts"] + SHOP["Dresses"])
    categories = np.array(["Skirts"] * 6 + ["Dresses"] * 5)
    embeddings = ItemEmbeddings(ids, categories, rng.integers(0, 2, size=(11, 3)).astype(np.float32), "test")  # ties
    recommender = IndexRecommender("pixels", {c: ExactIndexConfig("euclidean").build(embeddings.of_category(c))
                                              for c in SHOP})
    splits = [*SPLITS, HeldOutFavourites("u3", "Skirts", ["s0"], ["s2"]), HeldOutFavourites("u4", "Dresses", ["d1", "d0"], ["d3"])]
    assert recommender.recommend_all(splits, 4) == [recommender.recommend(split, 4) for split in splits]
