"""What an approximate index costs in recommendation quality: ann-benchmarks' axes joined to the recommender's.

ann-benchmarks measures an index by its recall against exact search and its queries per second.
A recommender's users see neither: they see the items recommended. So each run that indexed the
shop approximately is compared with the run that searched it exactly, on the same users and
held-out splits and with the same trained weights (an index-only sweep reuses one training), pair
by pair: the paired difference in precision@k and nDCG@k, with the per-pair test's 95 % interval
(``stats.paired_test``). Here the per-pair test answers the right question: the weights are the
same, so no training noise separates the runs; only the index does.

``index_costs`` tabulates it; ``index_pareto`` draws it against recall and QPS, one point per
index setting, as one Pareto figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fashionbench.analysis.comparison import RunPairs
from fashionbench.analysis.schema import AnalysisConfig
from fashionbench.analysis.stats import paired_test
from fashionbench.artifacts import (
    INDEX_QPS,
    INDEX_RECALL,
    TAG_INDEX_BACKEND,
    TAG_TRAINING_REUSED_FROM,
    metric_column,
)
from fashionbench.evaluation.references import MODEL

INDEX_PARAM_PREFIX = "index."


def trained_by(run: RunPairs) -> str:
    """The run whose training a run's weights come from (itself, unless it reused another's)."""
    return run.run.tags.get(TAG_TRAINING_REUSED_FROM, run.run.run_id)


def index_setting(run: RunPairs) -> str:
    """``annoy n_trees=1 search_k=-1``: a run's backend and the index options it set."""
    params = {key.removeprefix(INDEX_PARAM_PREFIX): value for key, value in sorted(run.run.params.items())
              if key.startswith(INDEX_PARAM_PREFIX) and not key.startswith(("index.quality", "index.seed"))}
    backend = run.run.tags.get(TAG_INDEX_BACKEND, "?")
    return " ".join([backend, *(f"{key}={value}" for key, value in params.items())])


def index_costs(runs: Sequence[RunPairs], k: int, resamples: int = AnalysisConfig.resamples,
                seed: int = AnalysisConfig.seed) -> pd.DataFrame:
    """One row per run that did not search exactly and has an exact run with the same weights on the
    same users and splits: its setting, recall and QPS, and its paired difference from exact search in
    precision@k and nDCG@k with 95 % intervals. Empty when no run searched exactly."""
    exact = {(trained_by(run), run.stratum): run for run in runs if run.run.tags.get(TAG_INDEX_BACKEND) == "exact"}
    rows = []
    for run in runs:
        reference = exact.get((trained_by(run), run.stratum))
        if reference is None or reference is run:
            continue
        row = {"setting": index_setting(run), "backend": run.run.tags.get(TAG_INDEX_BACKEND, "?"),
               "run": run.run.run_id, "recall": run.run.metrics.get(INDEX_RECALL, np.nan),
               "qps": run.run.metrics.get(INDEX_QPS, np.nan), "exact_qps": reference.run.metrics.get(INDEX_QPS, np.nan)}
        for metric in ("precision", "ndcg"):
            column = metric_column(metric, k)
            a = run.table[run.table.recommender == MODEL].set_index(["user_id", "category"])[column]
            b = reference.table[reference.table.recommender == MODEL].set_index(["user_id", "category"])[column]
            difference = (a - b.reindex(a.index)).dropna()
            test = paired_test(difference.to_numpy(), difference.index.get_level_values("user_id").to_numpy(),
                               n_resamples=resamples, seed=seed)
            row.update({f"{column} − exact": test.difference, f"{column} CI low": test.ci_low,
                        f"{column} CI high": test.ci_high, f"{column} p": test.p_value})
        rows.append(row)
    return pd.DataFrame(rows)


def index_pareto(costs: pd.DataFrame, k: int, path: Path) -> Path:
    """The paired difference from exact search (precision@k) against recall and against queries per
    second, one point per index setting, marker by backend: the Pareto front is the upper right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    column = metric_column("precision", k)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    markers = {"annoy": "o", "hnsw": "s"}
    for (backend, rows), colour in zip(costs.groupby("backend"), plt.cm.tab10.colors):
        for ax, x in zip(axes, ("recall", "qps")):
            ax.errorbar(rows[x], rows[f"{column} − exact"],
                        yerr=[rows[f"{column} − exact"] - rows[f"{column} CI low"],
                              rows[f"{column} CI high"] - rows[f"{column} − exact"]],
                        fmt=markers.get(backend, "^"), color=colour, capsize=3, label=backend, linestyle="none")
    for ax, label in zip(axes, ("recall@10 against exact search", "queries per second (one at a time)")):
        ax.axhline(0.0, color="black", linestyle="--", linewidth=1)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[1].set_xscale("log")
    if costs["exact_qps"].notna().any():
        axes[1].axvline(float(costs["exact_qps"].median()), color="grey", linestyle=":", linewidth=1,
                        label="exact search")
    axes[0].set_ylabel(f"{column} − exact search (paired, 95 % CI)")
    axes[1].legend(fontsize=8)
    figure.suptitle("What an index costs in recommendation quality, against what it costs in recall and time",
                    fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path
