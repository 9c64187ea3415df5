"""index=hnsw: faiss's HNSW graphs behind the CategoryIndex interface, and what happens without faiss."""

import subprocess
import sys
import textwrap
from importlib import metadata

import numpy as np
import pytest

from fashionbench.artifacts import INDEX_BUILD_SECONDS, INDEX_BYTES, INDEX_QPS, INDEX_RECALL
from fashionbench.config import experiment_config
from fashionbench.index.annoy import AnnoyIndexConfig
from fashionbench.index.base import IndexConfigError
from fashionbench.index.exact import ExactIndexConfig
from fashionbench.index.hnsw import HnswCategoryIndex, HnswIndexConfig
from fashionbench.index.quality import ShopIndexQuality, measure_index
from fashionbench.index.store import load_index
from fashionbench.model.embed import ItemEmbeddings
from tests.conftest import TINY_RUN, compose_config

METRICS = ["angular", "euclidean", "manhattan", "dot"]
NOT_INSTALLED = ("index=hnsw needs the package faiss-cpu, which is not installed: pip install faiss-cpu "
                 "(or pip install 'fashionbench[hnsw]')")


def embeddings(n: int = 60, dim: int = 8, seed: int = 0) -> ItemEmbeddings:
    rng = np.random.default_rng(seed)
    return ItemEmbeddings(np.array([f"Dresses-{i}" for i in range(n)]), np.array(["Dresses"] * n),
                          rng.normal(size=(n, dim)).astype(np.float32), "pool")


def test_a_saved_graph_loads_by_its_kind_and_answers_the_same(tmp_path):
    items = embeddings()
    index = HnswIndexConfig("euclidean", ef_search=20).build(items)
    assert [p.name for p in index.save(tmp_path)] == ["Dresses.faiss", "Dresses.json"]
    loaded = load_index(tmp_path, "Dresses")
    assert isinstance(loaded, HnswCategoryIndex) and loaded.ef_search == 20 and loaded.metric == "euclidean"
    assert loaded.recommend(["Dresses-3", "Dresses-9"], 5) == index.recommend(["Dresses-3", "Dresses-9"], 5)
    assert loaded.nearest_to_vector(items.vectors[4] + 0.1, 3) == index.nearest_to_vector(items.vectors[4] + 0.1, 3)
    assert loaded.nbytes() == (tmp_path / "Dresses.faiss").stat().st_size


@pytest.mark.parametrize("metric", METRICS)
def test_a_wide_search_recommends_what_exact_search_does_at_the_same_distances(metric):
    items = embeddings(80)
    exact = ExactIndexConfig(metric).build(items)
    hnsw = HnswIndexConfig(metric, ef_search=200).build(items)
    queries = ["Dresses-3", "Dresses-7"]
    assert [i for i, _ in hnsw.recommend(queries, 6)] == [i for i, _ in exact.recommend(queries, 6)]
    # Smaller is nearer on the other backends' scales: sqrt(2 - 2 cos), L2, L1, -dot.
    np.testing.assert_allclose([d for _, d in hnsw.recommend(queries, 6)], [d for _, d in exact.recommend(queries, 6)],
                               rtol=1e-4, atol=1e-4)


def test_a_zero_vector_is_as_far_as_exact_search_says_under_angular():
    vectors = np.array([[1.0, 0.0], [0.0, 0.0], [0.6, 0.8]], np.float32)
    items = ItemEmbeddings(np.array(["a", "zero", "b"]), np.array(["Dresses"] * 3), vectors, "pool")
    found = dict(HnswIndexConfig().build(items).recommend(["a"], 2))
    assert found == pytest.approx(dict(ExactIndexConfig().build(items).recommend(["a"], 2)))
    assert found == pytest.approx({"b": np.sqrt(2 - 2 * 0.6), "zero": np.sqrt(2)})


def test_a_search_narrower_than_k_still_returns_k_items():
    index = HnswIndexConfig("euclidean", ef_search=1).build(embeddings(300))
    positions, distances = index.nearest(150, position=0)
    assert len(set(positions)) == 150 and positions[0] == 0 and distances == sorted(distances)


def test_the_same_seed_builds_the_same_graph_and_leaves_faiss_threads_as_they_were(tmp_path):
    import faiss

    threads = faiss.omp_get_max_threads()
    items = embeddings(300)
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        HnswIndexConfig(M=4, seed=seed).build(items).save(tmp_path / name)
    graphs = [(tmp_path / name / "Dresses.faiss").read_bytes() for name in "abc"]
    assert graphs[0] == graphs[1] and graphs[0] != graphs[2]  # the seed draws the layers
    assert faiss.omp_get_max_threads() == threads


def test_every_backend_is_measured_against_exact_search_under_the_same_names():
    items = embeddings(400, dim=16)
    measured = {config.__class__.__name__: measure_index(config.build(items), items.vectors, k=10, repeats=1)
                for config in (ExactIndexConfig(), AnnoyIndexConfig(n_trees=2, search_k=20), HnswIndexConfig())}
    names = {name: set(ShopIndexQuality([quality]).metrics()) for name, quality in measured.items()}
    assert names["ExactIndexConfig"] == names["AnnoyIndexConfig"] == names["HnswIndexConfig"]
    assert {INDEX_RECALL, INDEX_QPS, INDEX_BUILD_SECONDS, INDEX_BYTES} <= names["HnswIndexConfig"]
    assert [q.row()["backend"] for q in measured.values()] == ["exact", "annoy", "hnsw"]
    assert measured["ExactIndexConfig"].recall == 1.0
    assert measured["HnswIndexConfig"].recall >= 0.95 > measured["AnnoyIndexConfig"].recall  # a decoy that misses
    assert all(q.index_qps > 0 and q.build_seconds > 0 and q.index_bytes > 0 for q in measured.values())
    assert measured["ExactIndexConfig"].index_bytes == items.vectors.nbytes


def test_index_hnsw_composes_and_follows_the_top_level_seed():
    index = experiment_config(compose_config(["index=hnsw", "seed=5", "index.ef_search=128"])).index
    assert isinstance(index, HnswIndexConfig) and (index.seed, index.ef_search, index.M) == (5, 128, 16)


@pytest.mark.parametrize("option, message", [
    ("index.M=1", "index.M must be an integer >= 2, got 1"),
    ("index.ef_construction=0", "index.ef_construction must be an integer >= 1, got 0"),
    ("index.ef_search=0", "index.ef_search must be an integer >= 1, got 0"),
    ("index.metric=cosine", "index.metric must be one of"),
    ("index.quality_k=0", "index.quality_k must be >= 1"),
])
def test_invalid_hnsw_options_name_the_option(option, message):
    with pytest.raises(IndexConfigError, match=message):
        experiment_config(compose_config(["index=hnsw", option]))


def test_a_promoted_recommender_with_hnsw_graphs_requires_faiss_where_it_is_served(tmp_path):
    from fashionbench.tracking.registry import serving_requirements

    for name, config in (("annoy", AnnoyIndexConfig(n_trees=2)), ("hnsw", HnswIndexConfig())):
        config.build(embeddings()).save(tmp_path / name / "indexes")
    assert not [r for r in serving_requirements(tmp_path / "annoy") if r.startswith("faiss-cpu")]
    assert f"faiss-cpu=={metadata.version('faiss-cpu')}" in serving_requirements(tmp_path / "hnsw")


def without_faiss(code: str, *args: str, cwd=None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python where ``import faiss`` fails as if faiss-cpu were not installed."""
    prelude = "import sys\nsys.modules['faiss'] = None  # import faiss raises ImportError\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_without_faiss_hnsw_configs_and_saved_graphs_name_the_package_and_other_backends_work(tmp_path):
    HnswIndexConfig().build(embeddings()).save(tmp_path)
    result = without_faiss(f"""
        from fashionbench.config import compose_config, experiment_config
        from fashionbench.index.base import IndexConfigError
        from fashionbench.index.store import load_index
        assert experiment_config(compose_config(["index=annoy"])).index.n_trees == 10
        for attempt in (lambda: experiment_config(compose_config(["index=hnsw"])),
                        lambda: load_index({str(tmp_path)!r}, "Dresses")):
            try:
                attempt()
            except IndexConfigError as error:
                print(error)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [NOT_INSTALLED, NOT_INSTALLED]


@pytest.mark.slow
def test_without_faiss_a_run_with_index_hnsw_stops_at_start_with_one_line(tmp_path):
    result = without_faiss("""
        import runpy
        runpy.run_module("fashionbench.run", run_name="__main__")
    """, *TINY_RUN, "index=hnsw", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"fashionbench.run: invalid config: IndexConfigError: {NOT_INSTALLED}"]
    assert not (tmp_path / "mlflow.db").exists()  # no run was started, nothing trained
