"""The comparison's pictures: a forest plot of every paired difference, and a contact sheet of the users
for whom the top two configurations differ most.

- ``forest_plot``: one row per pair of configurations, the difference with its 95 % interval twice:
  the configuration test's (training noise included: the verdict's) and the per-pair test's (these
  trained models, these users), so a reader sees how much wider the honest interval is.
- ``contact_sheet``: for the (user, category) pairs whose results differ most between the two
  configurations with the highest means, one row each: the user's queries, then each
  configuration's top-k with held-out favourites (hits) framed in green.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from fashionbench.analysis.comparison import Comparison, RunPairs
from fashionbench.analysis.design import configuration_label
from fashionbench.data.catalogue import Catalogue

HIT_COLOUR, MISS_COLOUR, QUERY_COLOUR = "#1a9850", "#bbbbbb", "#4575b4"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def forest_plot(comparison: Comparison, path: Path) -> Path:
    """Every pairwise difference (a − b) with its 95 % intervals; the verdict's test filled, the
    per-pair test hollow; a dashed line at zero."""
    plt = _pyplot()
    rows = comparison.comparisons
    figure, axes = plt.subplots(figsize=(8, 0.55 * len(rows) + 1.8))
    for i, pair in enumerate(rows):
        y = len(rows) - 1 - i
        test = pair.test
        axes.errorbar(test.difference, y - 0.15,
                      xerr=[[test.difference - test.ci_low], [test.ci_high - test.difference]],
                      fmt="o", mfc="white", color="grey", capsize=3,
                      label="these trainings, these users (per-pair test)" if i == 0 else None)
        config = pair.configuration
        if config is not None:
            axes.errorbar(config.difference, y + 0.15, xerr=[[config.difference - config.ci_low],
                                                             [config.ci_high - config.difference]],
                          fmt="o", color="crimson", capsize=3,
                          label="configuration vs configuration (training noise included)" if i == 0 else None)
    axes.axvline(0.0, color="black", linestyle="--", linewidth=1)
    axes.set_yticks(range(len(rows)), [f"{pair.a} − {pair.b}" for pair in reversed(rows)], fontsize=8)
    axes.set_ylim(-0.6, len(rows) - 0.4)
    axes.set_xlabel(f"difference in {comparison.metric} ({comparison.recommender}), 95 % interval")
    axes.grid(axis="x", alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    if handles:
        axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.45 if len(rows) < 3 else -0.2), ncol=2,
                    frameon=False)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def differing_pairs(a: RunPairs, b: RunPairs, metric: str, recommender: str, n: int) -> pd.DataFrame:
    """The ``n`` (user, category) pairs whose ``metric`` differs most between two runs on shared users,
    half where ``a`` wins and half where ``b`` does, with both runs' queries, held-out items and lists."""
    keep = ["user_id", "category", metric, "queries", "held_out", "recommended"]
    rows_a = a.table[a.table.recommender == recommender][keep]
    rows_b = b.table[b.table.recommender == recommender][keep]
    joined = rows_a.merge(rows_b, on=["user_id", "category"], suffixes=("_a", "_b"))
    joined["difference"] = joined[f"{metric}_a"] - joined[f"{metric}_b"]
    ordered = joined.sort_values("difference")
    half = max(1, n // 2)
    chosen = pd.concat([ordered.tail(half)[::-1], ordered.head(n - half)])
    return chosen[chosen["difference"] != 0].drop_duplicates(["user_id", "category"])


def contact_sheet(comparison: Comparison, runs: Mapping[str, RunPairs], shop: Catalogue, path: Path, k: int,
                  n_pairs: int = 6, queries_shown: int = 3) -> Path | None:
    """The contact sheet of the two configurations with the highest means (``runs``: one run of each,
    by label, on the same users), or None when there are fewer than two. ``shop``: the shop's items and
    images as the runs indexed them."""
    if len(comparison.summaries) < 2:
        return None
    first, second = comparison.summaries[0].label, comparison.summaries[1].label
    column = comparison.metric
    pairs = differing_pairs(runs[first], runs[second], column, comparison.recommender, n_pairs)
    if pairs.empty:
        return None
    plt = _pyplot()
    position = {item: i for i, item in enumerate(shop.items["item_id"])}
    columns = queries_shown + 1 + 2 * k + 1
    figure, grid = plt.subplots(len(pairs), columns, figsize=(0.95 * columns, 1.15 * len(pairs) + 0.8),
                                squeeze=False)
    for axes in grid.ravel():
        axes.axis("off")
    for row, pair in enumerate(pairs.itertuples()):
        held_out = set(json.loads(pair.held_out_a))
        cells = [(item, QUERY_COLOUR, "query") for item in json.loads(pair.queries_a)[:queries_shown]]
        cells += [None] * (queries_shown - len(cells)) + [None]
        for side in ("a", "b"):
            ranked = json.loads(getattr(pair, f"recommended_{side}") or "[]")[:k]
            cells += [(item, HIT_COLOUR if item in held_out else MISS_COLOUR, "hit" if item in held_out else "")
                      for item in ranked] + [None] * (k - len(ranked))
            if side == "a":
                cells.append(None)
        for col, cell in enumerate(cells):
            if cell is None or cell[0] not in position:
                continue
            item, colour, note = cell
            axes = grid[row, col]
            axes.imshow(shop.images[position[item]])
            axes.axis("on")
            axes.set_xticks([])
            axes.set_yticks([])
            for spine in axes.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3 if note else 1)
        grid[row, 0].set_title(f"{pair.user_id} · {pair.category}", fontsize=7, loc="left")
        grid[row, queries_shown + 1].set_title(f"{first}: {getattr(pair, f'{column}_a'):.2f}", fontsize=7, loc="left")
        grid[row, queries_shown + 2 + k].set_title(f"{second}: {getattr(pair, f'{column}_b'):.2f}", fontsize=7,
                                                   loc="left")
    figure.suptitle(f"Where {first} and {second} differ most ({column}): the user's queries (blue), then each "
                    f"configuration's top {k}, held-out favourites framed green", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def representative_runs(comparison: Comparison, tables: list[RunPairs]) -> dict[str, RunPairs]:
    """One run of each of the top two configurations on a stratum they share (their first seed)."""
    labels = [summary.label for summary in comparison.summaries[:2]]
    by_label: dict[str, list[RunPairs]] = {label: [] for label in labels}
    for table in tables:
        label = configuration_label(table.run, comparison.swept)
        if label in by_label:
            by_label[label].append(table)
    if any(not members for members in by_label.values()):
        return {}
    shared = sorted({t.stratum for t in by_label[labels[0]]} & {t.stratum for t in by_label[labels[-1]]})
    if not shared:
        return {}
    return {label: next(t for t in members if t.stratum == shared[0]) for label, members in by_label.items()}

