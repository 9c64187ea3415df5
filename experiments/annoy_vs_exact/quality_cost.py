"""What an index costs in recommendation quality: each Annoy and HNSW setting against exact search,
on the same users, splits and trained weights (one training, reused), beside its recall and QPS.

    python experiments/annoy_vs_exact/quality_cost.py                  # the course's item counts: ~6 min on 2 cores
    python experiments/annoy_vs_exact/quality_cost.py --scale 0.1      # the embedded default's shop: ~2 min
    python experiments/annoy_vs_exact/quality_cost.py --embedding-layer pool   # 2048-d: Annoy is exact here

Runs the pipeline once with ``index=exact`` (it trains) and once per approximate setting (each
reuses that training: an index-only sweep), then compares every approximate run with the exact one
pair by pair (``fashionbench.analysis.index_cost``): precision@5 and nDCG@5 paired differences
with the per-pair test's 95 % interval. Prints the table and writes ``quality_cost.png`` beside
this script: the difference against recall@10 and against queries per second.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from fashionbench.runtime.console import quiet_tensorflow  # noqa: E402

quiet_tensorflow()  # before the pipeline imports it: its start-up messages set aside

from fashionbench.analysis.index_cost import index_costs, index_pareto  # noqa: E402
from fashionbench.analysis.study import load_run_pairs  # noqa: E402
from fashionbench.config import compose_config  # noqa: E402
from fashionbench.pipeline.experiment import run_experiment  # noqa: E402
from fashionbench.tracking.records import finished_experiment_runs  # noqa: E402
from fashionbench.tracking.settings import tracking_settings  # noqa: E402
from fashionbench.tracking.store import experiment_runs  # noqa: E402

SETTINGS = [
    ["index=exact"],
    *(["index=annoy", f"index.n_trees={n}", f"index.search_k={k}"] for n, k in ((1, 5), (1, -1), (2, -1), (5, -1),
                                                                                 (10, -1))),
    *(["index=hnsw", "index.M=8", f"index.ef_search={ef}"] for ef in (1, 2, 4, 16)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="data.scale (1.0: the course's item counts)")
    parser.add_argument("--epochs", type=int, default=3)
    # 128-d: an Annoy leaf holds up to d + 2 items, so with the 2048-d pooled features a category of the
    # course's size (<= 694 items) is one leaf and Annoy searches it exhaustively (recall 1.0, no cost).
    parser.add_argument("--embedding-layer", default="dense_128", help="model.embedding_layer (default %(default)s)")
    args = parser.parse_args()
    try:
        import faiss  # noqa: F401
        settings = SETTINGS
    except ImportError:  # index=hnsw needs faiss-cpu (the hnsw extra)
        settings = [s for s in SETTINGS if s[0] != "index=hnsw"]
    with tempfile.TemporaryDirectory() as scratch:
        store = f"sqlite:///{scratch}/mlflow.db"
        base = [f"data.scale={args.scale}", f"train.epochs={args.epochs}", f"tracking.uri={store}",
                f"model.embedding_layer={args.embedding_layer}",
                "tracking.experiment_name=index-cost", "eval.references=[random,oracle]",
                f"data_store.dir={scratch}/catalogues"]
        for overrides in settings:
            run_experiment(compose_config([*base, *overrides]))
        tracking = tracking_settings(store, "index-cost")
        runs = finished_experiment_runs(experiment_runs(tracking))
        tables = load_run_pairs(tracking, runs, Path(scratch) / "pairs")
    costs = index_costs(tables, 5)
    shop = int(runs[0].params.get("data.scale") and runs[0].metrics.get("pipeline/data/items_test", 0))
    print(f"\nshop: {shop} items; users: {runs[0].params.get('users.n_users')}; "
          f"exact search: {costs['exact_qps'].median():.0f} queries/s")
    columns = ["setting", "recall", "qps", "precision_at_5 − exact", "precision_at_5 CI low", "precision_at_5 CI high",
               "ndcg_at_5 − exact", "ndcg_at_5 CI low", "ndcg_at_5 CI high"]
    print(costs[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"figure: {index_pareto(costs, 5, HERE / 'quality_cost.png')}")


if __name__ == "__main__":
    main()
