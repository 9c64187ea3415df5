"""Indexes against exact search, counted as ann-benchmarks counts it: known answers first."""

import numpy as np
import pandas as pd
import pytest

from fashionbench.artifacts import INDEX_BYTES, INDEX_EXACT_QPS, INDEX_QPS, INDEX_RECALL, INDEX_SPEEDUP
from fashionbench.index.annoy import AnnoyIndexConfig
from fashionbench.index.exact import ExactSearch, exact_neighbours, metric_distances
from fashionbench.index.quality import ShopIndexQuality, measure_index, recall_at_k
from fashionbench.model.embed import ItemEmbeddings


def items(n: int, dim: int = 8, seed: int = 0, category: str = "Dresses") -> ItemEmbeddings:
    rng = np.random.default_rng(seed)
    return ItemEmbeddings(np.array([f"{category}-{i}" for i in range(n)]), np.array([category] * n),
                          rng.normal(size=(n, dim)).astype(np.float32), "pool")


def test_distances_match_annoys_own_definitions():
    vectors = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    query = np.array([1.0, 1.0])
    # angular = sqrt(2 - 2 cos): cos 45° for the first two, cos 135° for the third.
    assert metric_distances(vectors, query, "angular") == pytest.approx(
        [np.sqrt(2 - np.sqrt(2)), np.sqrt(2 - np.sqrt(2)), np.sqrt(2 + np.sqrt(2))])
    assert metric_distances(vectors, query, "euclidean") == pytest.approx([1.0, np.sqrt(2), np.sqrt(17)])
    assert metric_distances(vectors, query, "manhattan") == pytest.approx([1.0, 2.0, 5.0])
    assert metric_distances(vectors, query, "dot") == pytest.approx([-1.0, -2.0, 3.0])
    # Annoy itself reports the same angular/euclidean/manhattan distances.
    for metric in ("angular", "euclidean", "manhattan"):
        index = AnnoyIndexConfig(metric=metric, n_trees=2).build(
            ItemEmbeddings(np.array(["a", "b", "c"]), np.array(["Dresses"] * 3), vectors.astype(np.float32), "pool"))
        positions, distances = index.annoy.get_nns_by_vector(query, 3, include_distances=True)
        assert distances == pytest.approx(metric_distances(vectors, query, metric)[positions], abs=1e-5)


def test_exact_neighbours_rank_dot_by_largest_inner_product():
    vectors = np.array([[1.0, 0.0], [5.0, 0.0], [-1.0, 0.0], [2.0, 0.0]])
    assert exact_neighbours(vectors, np.array([1.0, 0.0]), 3, "dot").tolist() == [1, 3, 0]
    assert exact_neighbours(vectors, np.array([1.0, 0.0]), 3, "euclidean").tolist() == [0, 3, 2]


@pytest.mark.parametrize("metric", ["angular", "euclidean", "manhattan", "dot"])
def test_the_fast_exact_search_finds_the_true_neighbours(metric):
    vectors = items(200, dim=16).vectors
    queries = items(20, dim=16, seed=1).vectors
    exact = ExactSearch(vectors, metric)
    assert recall_at_k(vectors, queries, [exact.search(q, 10) for q in queries], 10, metric) == 1.0
    assert exact.search(queries[0], 10).tolist() == exact_neighbours(vectors, queries[0], 10, metric).tolist()


def test_recall_counts_ties_at_the_kth_distance_as_correct():
    vectors = np.array([[0.0], [1.0], [-1.0], [5.0]])  # 1 and -1 tie at distance 1 from 0
    query = np.array([[0.0]])
    assert recall_at_k(vectors, query, [np.array([0, 2])], 2, "euclidean") == 1.0  # -1 instead of 1: a tie
    assert recall_at_k(vectors, query, [np.array([0, 3])], 2, "euclidean") == 0.5
    assert recall_at_k(vectors, query, [np.array([3, 3])], 2, "euclidean") == 0.0


@pytest.mark.parametrize("metric", ["angular", "euclidean", "manhattan", "dot"])
def test_an_index_searching_every_node_has_full_recall(metric):
    embeddings = items(60)
    index = AnnoyIndexConfig(metric=metric, n_trees=10, search_k=100_000).build(embeddings)
    quality = measure_index(index, embeddings.vectors, k=5, repeats=1)
    assert quality.recall == 1.0
    assert quality.index_qps > 0 and quality.exact_qps > 0 and quality.build_seconds > 0


def test_a_one_tree_index_searching_few_nodes_loses_recall():
    embeddings = items(2000, dim=32)
    index = AnnoyIndexConfig(metric="euclidean", n_trees=1, search_k=10).build(embeddings)
    assert measure_index(index, embeddings.vectors[:2000], k=10, repeats=1).recall < 0.5


def test_shop_metrics_report_each_category_and_the_saved_size(tmp_path):
    qualities = []
    for category, n in (("Dresses", 30), ("Skirts", 10)):
        embeddings = items(n, category=category)
        index = AnnoyIndexConfig(n_trees=3).build(embeddings)
        index.save(tmp_path)
        qualities.append(measure_index(index, embeddings.vectors, k=10, repeats=1))
    shop = ShopIndexQuality(qualities)
    metrics = shop.metrics()
    shop.write_artifacts(tmp_path / "run")
    per_category = pd.read_csv(tmp_path / "run" / "eval" / "index_quality.csv", index_col="category")
    assert per_category.loc["Dresses", "bytes"] == (tmp_path / "Dresses.ann").stat().st_size > 0
    assert metrics[INDEX_BYTES] == per_category["bytes"].sum()
    assert qualities[1].k == 10  # 10 items: k=10 asks for all of them
    expected = (30 * qualities[0].recall + 10 * qualities[1].recall) / 40
    assert metrics[INDEX_RECALL] == pytest.approx(expected)
    assert metrics[INDEX_SPEEDUP] == pytest.approx(metrics[INDEX_QPS] / metrics[INDEX_EXACT_QPS])
    assert set(per_category["backend"]) == {"annoy"}


def test_vectors_that_do_not_match_the_index_are_refused():
    index = AnnoyIndexConfig(n_trees=2).build(items(10))
    with pytest.raises(ValueError, match="holds 10 items but 9 vectors"):
        measure_index(index, items(9).vectors)
