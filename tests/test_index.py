"""Annoy indexes per category: recommendations, persistence, reproducibility, validation."""

import numpy as np
import pandas as pd
import pytest

from fashionbench.data import Catalogue
from fashionbench.index.annoy import AnnoyIndexConfig
from fashionbench.index.base import IndexConfigError
from fashionbench.index.exact import ExactIndexConfig, metric_distances
from fashionbench.index.shop import build_shop_index
from fashionbench.index.store import load_index
from fashionbench.model.embed import ItemEmbeddings


def embeddings(n: int = 30, dim: int = 8, seed: int = 0, category: str = "Dresses") -> ItemEmbeddings:
    rng = np.random.default_rng(seed)
    return ItemEmbeddings(
        np.array([f"{category}-{i}" for i in range(n)]), np.array([category] * n),
        rng.normal(size=(n, dim)).astype(np.float32), "pool",
    )


def test_recommendations_are_the_nearest_items_without_the_queries():
    items = embeddings()
    index = AnnoyIndexConfig(metric="euclidean", n_trees=20, search_k=10_000).build(items)
    queries = ["Dresses-0", "Dresses-1"]
    recommended = index.recommend(queries, k=5)
    assert len(recommended) == 5 and not set(queries) & {item for item, _ in recommended}
    # Exact answer: for each item, its smallest distance to either query.
    vectors = items.vectors
    distance = np.minimum(np.linalg.norm(vectors - vectors[0], axis=1), np.linalg.norm(vectors - vectors[1], axis=1))
    distance[[0, 1]] = np.inf
    expected = [f"Dresses-{i}" for i in np.argsort(distance)[:5]]
    assert [item for item, _ in recommended] == expected
    assert [d for _, d in recommended] == sorted(d for _, d in recommended)


def test_saved_index_loads_and_answers_the_same(tmp_path):
    index = AnnoyIndexConfig(metric="angular", n_trees=5).build(embeddings())
    paths = index.save(tmp_path)
    assert [p.name for p in paths] == ["Dresses.ann", "Dresses.json"]
    loaded = load_index(tmp_path, "Dresses")
    assert loaded.recommend(["Dresses-3"], 4) == index.recommend(["Dresses-3"], 4)


def test_same_seed_builds_the_same_index(tmp_path):
    first = AnnoyIndexConfig(n_trees=3, seed=7).build(embeddings(200))
    second = AnnoyIndexConfig(n_trees=3, seed=7).build(embeddings(200))
    first.save(tmp_path / "a")
    second.save(tmp_path / "b")
    assert (tmp_path / "a" / "Dresses.ann").read_bytes() == (tmp_path / "b" / "Dresses.ann").read_bytes()


def test_one_index_per_category():
    both = embeddings(10, category="Skirts")
    dresses = embeddings(12)
    merged = ItemEmbeddings(
        np.concatenate([both.item_ids, dresses.item_ids]), np.concatenate([both.categories, dresses.categories]),
        np.concatenate([both.vectors, dresses.vectors]), "pool",
    )
    items = pd.DataFrame({"item_id": merged.item_ids, "category": merged.categories, "split": "test", "source": "t"})
    shop = Catalogue(items, np.zeros((len(items), 32, 32, 3), np.uint8))
    indexes = build_shop_index(shop, merged, AnnoyIndexConfig(n_trees=2))
    assert {c: len(i) for c, i in indexes.items()} == {"Skirts": 10, "Dresses": 12}
    assert indexes.item_ids()["Skirts"] == both.item_ids.tolist()


@pytest.mark.parametrize("metric", ["angular", "euclidean", "manhattan", "dot"])
def test_the_exact_backend_recommends_what_annoy_finds_when_annoy_searches_everything(metric, tmp_path):
    items = embeddings(40)
    exact = ExactIndexConfig(metric).build(items)
    annoy = AnnoyIndexConfig(metric, n_trees=10, search_k=100_000).build(items)
    queries = ["Dresses-3", "Dresses-7"]
    assert [i for i, _ in exact.recommend(queries, 6)] == [i for i, _ in annoy.recommend(queries, 6)]
    # Distances agree too: both say "smaller is nearer", dot included (Annoy reports the inner product).
    np.testing.assert_allclose([d for _, d in exact.recommend(queries, 6)], [d for _, d in annoy.recommend(queries, 6)],
                               rtol=1e-4, atol=1e-4)
    exact.save(tmp_path)
    loaded = load_index(tmp_path, "Dresses")
    assert type(loaded) is type(exact) and loaded.recommend(queries, 6) == exact.recommend(queries, 6)


def test_dot_recommends_the_largest_inner_products():
    vectors = np.array([[1.0, 0.0], [5.0, 0.0], [-1.0, 0.0], [2.0, 0.0]], np.float32)
    items = ItemEmbeddings(np.array(["q", "big", "negative", "mid"]), np.array(["Dresses"] * 4), vectors, "pool")
    for config in (AnnoyIndexConfig("dot", n_trees=5, search_k=1000), ExactIndexConfig("dot")):
        assert [i for i, _ in config.build(items).recommend(["q"], 2)] == ["big", "mid"], config


@pytest.mark.parametrize("metric", ["angular", "euclidean", "manhattan", "dot"])
def test_every_documented_metric_builds(metric):
    assert len(AnnoyIndexConfig(metric=metric, n_trees=2).build(embeddings()).recommend(["Dresses-0"], 3)) == 3


@pytest.mark.parametrize(
    "options, message",
    [({"metric": "cosine"}, "index.metric must be one of"), ({"n_trees": 0}, "index.n_trees must be an integer >= 1"),
     ({"search_k": 0}, "index.search_k must be -1")],
)
def test_invalid_index_options_name_the_option(options, message):
    with pytest.raises(IndexConfigError, match=message):
        AnnoyIndexConfig(**options).build(embeddings())


@pytest.mark.parametrize("metric", ["angular", "euclidean", "manhattan", "dot"])
def test_the_exact_backend_ranks_by_every_items_distance_with_ties_by_position(metric):
    # 750 of 1,000 items are copies of one vector, scattered: a tie far larger than the candidates
    # the backend scores, where a partial sort alone returns arbitrary positions among the copies.
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(1000, 8)).astype(np.float32)
    vectors[rng.permutation(1000)[:750]] = vectors[0]
    items = ItemEmbeddings(np.arange(1000).astype(str), np.array(["Dresses"] * 1000), vectors, "pool")
    index = ExactIndexConfig(metric).build(items)
    for query in (vectors[0], rng.normal(size=8).astype(np.float32), -vectors[0]):
        distances = metric_distances(vectors, query, metric)
        expected = np.lexsort((np.arange(1000), distances))[:12]
        positions, found = index.nearest(12, vector=query)
        assert positions == expected.tolist()
        np.testing.assert_allclose(found, distances[expected])


def merged_nearest(index, query_item_ids, k):
    """CategoryIndex.recommend as it was first written: one neighbour search per query item."""
    excluded, best = set(query_item_ids), {}
    for item_id in query_item_ids:
        positions, distances = index.nearest(k + len(excluded), position=index.position_of(item_id))
        for position, distance in zip(positions, distances):
            if index.item_ids[position] not in excluded and distance < best.get(position, np.inf):
                best[position] = distance
    ranked = sorted(best.items(), key=lambda pair: (pair[1], pair[0]))[:k]
    return [(str(index.item_ids[position]), float(distance)) for position, distance in ranked]


@pytest.mark.parametrize("config", [ExactIndexConfig("angular"), ExactIndexConfig("manhattan"),
                                    AnnoyIndexConfig(metric="euclidean", n_trees=3), AnnoyIndexConfig(metric="dot")])
def test_recommending_for_many_lists_shares_searches_and_answers_as_each_list_alone(config):
    # Copies of a few vectors make ties; many lists share query items and list lengths, as an
    # evaluation's users do, and the shared searches must not change any list's answer.
    rng = np.random.default_rng(4)
    items = embeddings(n=60, dim=6, seed=4)
    items.vectors[rng.permutation(60)[:30]] = items.vectors[rng.integers(0, 60, size=30)]
    index = config.build(items)
    lists = [rng.choice(items.item_ids, size=rng.integers(1, 6), replace=False).tolist() for _ in range(200)]
    for k in (1, 5, 20):
        assert index.recommend_many(lists, k) == [merged_nearest(index, queries, k) for queries in lists]
