"""Annoy indexes per category: recommendations, persistence, reproducibility, validation."""

import numpy as np
import pytest

from fashionbench.embed import ItemEmbeddings
from fashionbench.index import CategoryIndex, IndexConfigError, build_shop_index


def embeddings(n: int = 30, dim: int = 8, seed: int = 0, category: str = "Dresses") -> ItemEmbeddings:
    rng = np.random.default_rng(seed)
    return ItemEmbeddings(
        np.array([f"{category}-{i}" for i in range(n)]), np.array([category] * n),
        rng.normal(size=(n, dim)).astype(np.float32), "pool",
    )


def test_recommendations_are_the_nearest_items_without_the_queries():
    items = embeddings()
    index = CategoryIndex.build(items, metric="euclidean", n_trees=20, search_k=10_000)
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
    index = CategoryIndex.build(embeddings(), metric="angular", n_trees=5)
    paths = index.save(tmp_path)
    assert [p.name for p in paths] == ["Dresses.ann", "Dresses.json"]
    loaded = CategoryIndex.load(tmp_path, "Dresses")
    assert loaded.recommend(["Dresses-3"], 4) == index.recommend(["Dresses-3"], 4)


def test_same_seed_builds_the_same_index(tmp_path):
    first = CategoryIndex.build(embeddings(200), n_trees=3, seed=7)
    second = CategoryIndex.build(embeddings(200), n_trees=3, seed=7)
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
    indexes = build_shop_index(merged, n_trees=2)
    assert {c: len(i) for c, i in indexes.items()} == {"Skirts": 10, "Dresses": 12}


@pytest.mark.parametrize("metric", ["angular", "euclidean", "manhattan", "dot"])
def test_every_documented_metric_builds(metric):
    assert len(CategoryIndex.build(embeddings(), metric=metric, n_trees=2).recommend(["Dresses-0"], 3)) == 3


@pytest.mark.parametrize(
    "options, message",
    [({"metric": "cosine"}, "index.metric must be one of"), ({"n_trees": 0}, "index.n_trees must be an integer >= 1"),
     ({"search_k": 0}, "index.search_k must be -1")],
)
def test_invalid_index_options_name_the_option(options, message):
    with pytest.raises(IndexConfigError, match=message):
        CategoryIndex.build(embeddings(), **options)
