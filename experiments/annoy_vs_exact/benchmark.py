"""Annoy, exact search and HNSW over shop sizes: which index backend to use at which size?

    python experiments/annoy_vs_exact/benchmark.py                       # 300..100k items, 2048-d
    python experiments/annoy_vs_exact/benchmark.py --sizes 300 3000 --dim 128

Synthetic embeddings shaped like the model's pooled features (``model.embedding_layer=pool``,
2048-d, non-negative, about half zeros) with a low intrinsic dimension as learned embeddings
have: 40 clusters in a 32-d latent space, mapped to 2048-d by one random linear layer and a
ReLU, plus a little noise; held-out queries are drawn the same way. (Isotropic noise in 2048-d
leaves every item of a cluster at nearly the same distance, k-th / median distance 0.96, so
any index scores recall ~1; here it is 0.62.) Every backend is built by its config
(``index=exact|annoy|hnsw``) and searched through the ``CategoryIndex.nearest`` a run uses, then
measured as ``fashionbench.index.quality`` measures runs (ann-benchmarks): recall@k with ties
at the k-th distance tolerated, against one ground truth per size; QPS = queries / the best total
time over repeats, one query at a time on one thread (BLAS and OpenMP pinned to one thread, as
ann-benchmarks gives each algorithm one CPU). Search-time settings (Annoy's search_k, HNSW's
ef_search) are swept on one build. Prints every row, then per size and backend the fastest
setting reaching the target recall, as a Markdown table with QPS as a ratio to the exact
backend's measured in the same run; plots recall against QPS.
Times are measured, never asserted.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

for variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before NumPy and faiss load
    os.environ[variable] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # fashionbench.model.embed imports TensorFlow

import numpy as np  # noqa: E402

from fashionbench.index.annoy import AnnoyIndexConfig  # noqa: E402
from fashionbench.index.base import ItemEmbeddings  # noqa: E402
from fashionbench.index.exact import ExactIndexConfig  # noqa: E402
from fashionbench.index.hnsw import HnswIndexConfig  # noqa: E402
from fashionbench.index.quality import GroundTruth, queries_per_second  # noqa: E402


def pooled_like_embeddings(n: int, queries: int, dim: int, rng: np.random.Generator, clusters: int = 40,
                           latent_dim: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``n`` items and ``queries`` held-out queries: latent clusters through a random ReLU layer."""
    centres = rng.normal(size=(clusters, latent_dim)).astype(np.float32)
    layer = (rng.normal(size=(latent_dim, dim)) / np.sqrt(latent_dim)).astype(np.float32)

    def draw(count: int) -> np.ndarray:
        latent = centres[rng.integers(clusters, size=count)] + rng.standard_normal((count, latent_dim), np.float32)
        vectors = latent @ layer
        vectors += rng.standard_normal((count, dim), np.float32) * np.float32(0.05)
        return np.maximum(vectors, 0, out=vectors)

    return draw(n), draw(queries)


@dataclass(frozen=True)
class Row:
    """One backend at one search setting on one shop size."""

    items: int
    backend: str
    setting: str
    build_seconds: float
    qps: float
    recall: float
    nbytes: int
    default: bool  # the setting index=<backend> uses unless told otherwise


def measure(index, setting: str, truth: GroundTruth, repeats: int, default: bool = True) -> Row:
    """``index`` searched with its current settings, as index_quality measures a run's."""

    def search(query: np.ndarray) -> list[int]:
        return index.nearest(truth.k, vector=query)[0]

    recall = truth.recall([np.asarray(search(query)) for query in truth.queries])
    return Row(len(index), index.kind, setting, index.build_seconds, queries_per_second(search, truth.queries, repeats),
               recall, index.nbytes(), default)


def measure_size(n: int, args: argparse.Namespace, rng: np.random.Generator) -> list[Row]:
    """Every backend and setting on ``n`` items; prints each row as it comes."""
    vectors, queries = pooled_like_embeddings(n, args.queries, args.dim, rng)
    items = ItemEmbeddings(np.arange(n).astype(str), np.array(["Dresses"] * n), vectors, "pool")
    truth = GroundTruth.of(vectors, queries, args.k, args.metric)
    rows = [measure(ExactIndexConfig(args.metric).build(items), "", truth, args.repeats)]
    print_row(rows[-1])
    for n_trees in args.n_trees:
        annoy = AnnoyIndexConfig(args.metric, n_trees, seed=0).build(items)
        for search_k in args.search_k:
            annoy.search_k = search_k
            default = (n_trees, search_k) == (AnnoyIndexConfig.n_trees, AnnoyIndexConfig.search_k)
            rows.append(measure(annoy, f"n_trees={n_trees}, search_k={search_k}", truth, args.repeats, default))
            print_row(rows[-1])
        del annoy
    hnsw = HnswIndexConfig(args.metric, M=args.M, ef_construction=args.ef_construction, seed=0).build(items)
    for ef_search in args.ef_search:
        hnsw.ef_search = ef_search
        default = (args.M, args.ef_construction, ef_search) == (
            HnswIndexConfig.M, HnswIndexConfig.ef_construction, HnswIndexConfig.ef_search)
        rows.append(measure(hnsw, f"M={args.M}, ef_construction={args.ef_construction}, ef_search={ef_search}",
                            truth, args.repeats, default))
        print_row(rows[-1])
    del hnsw, items, vectors
    gc.collect()
    return rows


def print_row(row: Row) -> None:
    print(f"{row.items:>7} {row.backend:<6} {row.setting:<46} {row.build_seconds:>8.2f} {row.qps:>9.0f} "
          f"{row.recall:>6.3f} {row.nbytes / 1e6:>8.1f}", flush=True)


def default_rows(rows: list[Row]) -> list[tuple[Row, bool]]:
    """Per size and backend, the row of the default setting (True: nothing to flag)."""
    return [(row, True) for row in rows if row.default]


def best_rows(rows: list[Row], target: float) -> list[tuple[Row, bool]]:
    """Per size and backend, the fastest row reaching ``target`` recall (True), else the most accurate (False)."""
    chosen = []
    for key in dict.fromkeys((row.items, row.backend) for row in rows):
        candidates = [row for row in rows if (row.items, row.backend) == key]
        good = [row for row in candidates if row.recall >= target]
        if good:
            chosen.append((max(good, key=lambda r: r.qps), True))
        else:
            chosen.append((max(candidates, key=lambda r: r.recall), False))
    return chosen


def markdown_table(rows: list[Row], chosen: list[tuple[Row, bool]], target: float, k: int) -> str:
    """``chosen`` rows (False: below ``target`` recall) with QPS against the exact backend's on the same size."""
    exact_qps = {row.items: row.qps for row in rows if row.backend == "exact"}
    lines = [f"| items | backend (setting) | build s | QPS | QPS / exact | recall@{k} | MB |",
             "|---|---|---|---|---|---|---|"]
    for row, reached in chosen:
        setting = f" ({row.setting})" if row.setting else ""
        recall = f"{row.recall:.3f}" if reached else f"{row.recall:.3f} (< {target})"
        lines.append(f"| {row.items:,} | {row.backend}{setting} | {row.build_seconds:.2f} | {row.qps:,.0f} | "
                     f"**{row.qps / exact_qps[row.items]:.2f}×** | {recall} | {row.nbytes / 1e6:.1f} |")
    return "\n".join(lines)


def plot(rows: list[Row], path: Path, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(dict.fromkeys(row.items for row in rows))
    figure, axes = plt.subplots(figsize=(8, 5.5))
    markers = {"exact": "s", "annoy": "o", "hnsw": "^"}
    for colour, n in zip(plt.cm.viridis(np.linspace(0, 0.9, len(sizes))), sizes):
        for backend, marker in markers.items():
            chosen = [row for row in rows if row.items == n and row.backend == backend]
            axes.plot([r.recall for r in chosen], [r.qps for r in chosen], marker=marker, color=colour,
                      linestyle="-" if backend != "exact" else "none",
                      label=f"{n:,} items" if backend == "hnsw" else None)
    for backend, marker in markers.items():
        axes.plot([], [], marker=marker, color="grey", linestyle="none", label=backend)
    axes.set(xlabel=f"recall@{args.k}", ylabel="queries per second (log)", yscale="log",
             title=f"Index backends by shop size (colour), dim {args.dim}, {args.metric}, one thread")
    axes.legend(fontsize=7, ncol=2)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1000, 3000, 10_000, 30_000, 100_000])
    parser.add_argument("--dim", type=int, default=2048, help="2048 = model.embedding_layer=pool")
    parser.add_argument("--metric", default="angular")
    parser.add_argument("--queries", type=int, default=100, help="held-out queries per size")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-trees", type=int, nargs="+", default=[10], help="Annoy builds per size")
    parser.add_argument("--search-k", type=int, nargs="+", default=[-1, 2000, 20_000], help="Annoy, per build")
    parser.add_argument("--M", type=int, default=HnswIndexConfig.M)
    parser.add_argument("--ef-construction", type=int, default=HnswIndexConfig.ef_construction)
    parser.add_argument("--ef-search", type=int, nargs="+", default=[16, 64, 256], help="HNSW, on one build")
    parser.add_argument("--target-recall", type=float, default=0.9)
    parser.add_argument("--plot", type=Path, default=Path(__file__).with_name("recall_vs_qps.png"))
    args = parser.parse_args()

    start, cpu_start = time.perf_counter(), time.process_time()
    rng = np.random.default_rng(0)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, Python "
          f"{platform.python_version()}; dim={args.dim}, metric={args.metric}, k={args.k}, {args.queries} held-out "
          f"queries, best of {args.repeats}")
    print(f"{'items':>7} {'kind':<6} {'setting':<46} {'build s':>8} {'qps':>9} {'recall':>6} {'MB':>8}")
    rows = [row for n in args.sizes for row in measure_size(n, args, rng)]
    print("\nper size and backend, the default settings (QPS / exact: against the exact backend on the same "
          "size, same run):\n")
    print(markdown_table(rows, default_rows(rows), args.target_recall, args.k))
    print(f"\nper size and backend, the fastest setting with recall@{args.k} >= {args.target_recall}:\n")
    print(markdown_table(rows, best_rows(rows, args.target_recall), args.target_recall, args.k))
    plot(rows, args.plot, args)
    print(f"\nplot: {args.plot}; {time.perf_counter() - start:.0f} s in all ({time.process_time() - cpu_start:.0f} s "
          f"of CPU), load {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
