"""The run at a glance: the reference ladder's precision@k per category, drawn as bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fashionbench.artifacts import metric_column
from fashionbench.data import CATEGORIES
from fashionbench.evaluation.references import LADDER, MODEL
from fashionbench.evaluation.summaries import ALL


def plot_ladder(summary: pd.DataFrame, k: int, path: Path) -> Path:
    """The run at a glance: precision@k of every recommender, floor to ceiling, per category and
    over all pairs (``summary_table``'s rows), each bar labelled with its value."""
    # The object API, not pyplot: no global figure state, so a run can draw on a thread of its own.
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    column = metric_column("precision", k)
    scopes = [ALL, *(c for c in CATEGORIES if c in set(summary["category"]))]
    recommenders = [r for r in LADDER if r in set(summary["recommender"])]
    values = summary.set_index(["recommender", "category"])[column]
    figure = Figure(figsize=(1.9 * len(scopes) + 1.5, 3.8))
    axes = figure.subplots()
    width = 0.8 / len(recommenders)
    colours = colormaps["viridis"](np.linspace(0.05, 0.9, len(recommenders)))
    for i, (recommender, colour) in enumerate(zip(recommenders, colours)):
        heights = [values.get((recommender, scope), np.nan) for scope in scopes]
        xs = np.arange(len(scopes)) + (i - (len(recommenders) - 1) / 2) * width
        bars = axes.bar(xs, heights, width, color="crimson" if recommender == MODEL else colour, label=recommender)
        axes.bar_label(bars, fmt="%.3f", fontsize=6, rotation=90, padding=2)
    pairs = summary.groupby("category")["pairs"].max()
    axes.set_xticks(np.arange(len(scopes)), [f"{scope}\n({int(pairs[scope])} pairs)" for scope in scopes], fontsize=8)
    axes.set_ylabel(f"precision@{k}")
    axes.set_title(f"precision@{k} by recommender, floor (random) to ceiling (oracle); the model in red", fontsize=9)
    axes.margins(y=0.2)
    axes.legend(fontsize=7, ncols=3, loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
