"""Annoy against exact NumPy search over shop sizes: where does Annoy start to pay?

    python experiments/annoy_vs_exact/benchmark.py            # ~ a few minutes on 2 cores
    python experiments/annoy_vs_exact/benchmark.py --sizes 300 3000 --dim 64

Synthetic embeddings: clusters of non-negative vectors (like pooled ReLU features), held-out
queries drawn from the same clusters. Each (size, n_trees, search_k) is measured with
fashionbench.index_quality, the protocol the runs log (ann-benchmarks' recall@k and QPS).
Prints a table, the speedup (Annoy QPS / exact QPS) at the best setting reaching the target
recall per size, and plots recall against QPS. Times are measured, never asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # fashionbench.embed imports TensorFlow

from fashionbench.embed import ItemEmbeddings
from fashionbench.index import AnnoyIndexConfig
from fashionbench.index_quality import measure_index


def clustered_embeddings(n: int, dim: int, rng: np.random.Generator,
                         clusters: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """``n`` items and 200 held-out queries around shared cluster centres, clipped at 0."""
    centres = rng.gamma(1.0, 1.0, size=(clusters, dim))

    def draw(count: int) -> np.ndarray:
        picked = centres[rng.integers(clusters, size=count)]
        return np.maximum(picked + rng.normal(scale=0.6, size=(count, dim)), 0).astype(np.float32)

    return draw(n), draw(200)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1000, 3000, 10_000, 30_000, 100_000])
    parser.add_argument("--dim", type=int, default=128, help="128 = model.embedding_layer=dense_128")
    parser.add_argument("--metric", default="angular")
    parser.add_argument("--n-trees", type=int, nargs="+", default=[2, 10, 50])
    parser.add_argument("--search-k", type=int, nargs="+", default=[-1, 500, 5000])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--target-recall", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plot", type=Path, default=Path(__file__).with_name("recall_vs_qps.png"))
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}; "
          f"dim={args.dim}, metric={args.metric}, k={args.k}, 200 held-out queries, best of {args.repeats}")
    header = f"{'items':>7} {'trees':>5} {'search_k':>8} {'recall':>6} {'annoy qps':>10} {'exact qps':>10} " \
             f"{'ratio':>7} {'build s':>8} {'MB':>7}"
    print(header)
    results: dict[int, list] = {}
    for n in args.sizes:
        vectors, queries = clustered_embeddings(n, args.dim, rng)
        items = ItemEmbeddings(np.arange(n).astype(str), np.array(["Dresses"] * n), vectors, "dense_128")
        for n_trees in args.n_trees:
            index = AnnoyIndexConfig(args.metric, n_trees, seed=0).build(items)
            for search_k in args.search_k:
                index.search_k = search_k
                quality = measure_index(index, vectors, args.k, args.repeats, queries=queries)
                results.setdefault(n, []).append((n_trees, search_k, quality))
                print(f"{n:>7} {n_trees:>5} {search_k:>8} {quality.recall:>6.3f} {quality.index_qps:>10.0f} "
                      f"{quality.exact_qps:>10.0f} {quality.speedup:>6.2f}x {quality.build_seconds:>8.2f} "
                      f"{quality.index_bytes / 1e6:>7.1f}", flush=True)

    # Exact search does not depend on n_trees or search_k: every row of a size measured it, and
    # the best of all those measurements (ann-benchmarks' "best time") is the fair reference on
    # a machine shared with other work.
    print(f"\nbest Annoy setting with recall@{args.k} >= {args.target_recall} per shop size "
          f"(ratio = Annoy QPS / best exact QPS of that size; > 1 where Annoy pays):")
    for n, rows in results.items():
        exact_qps = max(row[2].exact_qps for row in rows)
        good = [row for row in rows if row[2].recall >= args.target_recall]
        if not good:
            print(f"{n:>7} items: no setting reached the target recall (exact: {exact_qps:.0f} qps)")
            continue
        n_trees, search_k, best = max(good, key=lambda row: row[2].index_qps)
        print(f"{n:>7} items: n_trees={n_trees:<3} search_k={search_k:<6} recall {best.recall:.3f}  "
              f"ratio {best.index_qps / exact_qps:.2f}x  ({best.index_qps:.0f} vs {exact_qps:.0f} qps)")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 5))
    for colour, (n, rows) in zip(plt.cm.viridis(np.linspace(0, 0.9, len(results))), results.items()):
        axes.scatter([r[2].recall for r in rows], [r[2].index_qps for r in rows], color=colour,
                     label=f"Annoy, {n} items")
        axes.axhline(max(r[2].exact_qps for r in rows), color=colour, linestyle="--", linewidth=1)
    axes.set(xlabel=f"recall@{args.k}", ylabel="queries per second (log)", yscale="log",
             title=f"Annoy (points) vs exact NumPy (dashed), dim {args.dim}, {args.metric}")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
