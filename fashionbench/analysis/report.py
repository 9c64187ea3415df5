"""The report of a study: the course's tables reproduced from tracked runs, the sweep, and the verdict.

Each table stands beside the course's own numbers: the training-time table, the data-set split
table, the per-class classification table with accuracy, a sweep table (swept params,
train_seconds, accuracy, precision@k and the random baseline) with a plot of precision@k against
each swept param, and the comparison of the sweep's configurations (``analysis.comparison``),
whose verdict marks a configuration best only when the configuration test finds it better than
every other one. ``report`` (the command) writes it and logs it to a report run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fashionbench.analysis.comparison import Comparison, markdown_table
from fashionbench.analysis.design import SEED_PARAMS, configuration_label, swept_parameters, uneven_parameters
from fashionbench.analysis.study import compare_finished
from fashionbench.artifacts import (
    FIT_SECONDS,
    HEADLINE_METRIC,
    TAG_CLASSIFIER_WARNING,
    TEST_ACCURACY,
    TEST_F1,
    TRAIN_SECONDS,
    TRUNK_CACHE_USED,
    random_counterpart,
)
from fashionbench.data import COURSE_SPLIT_SIZES
from fashionbench.tracking.records import RunRecord, finished_experiment_runs, is_experiment_run, sweep_rows
from fashionbench.tracking.settings import TrackingSettings

# The course's numbers (the seed project's README): four training attempts in seconds, and
# the test-split classification of its final model, per class F1 / Recall / Precision.
COURSE_TRAIN_SECONDS = (301, 283, 290, 120)
COURSE_CLASSIFICATION = {  # category: (F1, Recall, Precision), in the course's row order
    "Blouses": (0.817, 0.781, 0.856),
    "Dresses": (0.775, 0.775, 0.774),
    "Shorts": (0.712, 0.655, 0.780),
    "Skirts": (0.602, 0.796, 0.484),
}
COURSE_ACCURACY = 0.760


class ReportError(LookupError):
    """Nothing to report on; the message says where we looked."""


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def finished_runs(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """The FINISHED pipeline runs, in start order."""
    return finished_experiment_runs(list(runs))


def best_run(runs: Sequence[RunRecord], metric: str = HEADLINE_METRIC) -> RunRecord | None:
    """The finished run with the highest ``metric`` (the earliest on ties), or None. Highest is
    not best: whether it is better than the others is the paired comparison's verdict."""
    scored = [r for r in finished_runs(runs) if metric in r.metrics]
    return max(scored, key=lambda r: r.metrics[metric]) if scored else None


def comparable_to_the_course(run: RunRecord) -> bool:
    """A run that timed what the course timed: model.fit running the frozen trunk every epoch
    (no trunk cache, whose seconds are the tail's fit plus getting activations)."""
    return TRAIN_SECONDS in run.metrics and not run.metrics.get(TRUNK_CACHE_USED, 0.0)


def training_time_table(runs: Sequence[RunRecord]) -> str:
    """``Attempt | #1 | #2 ...``: the train_seconds of the runs that timed what the course timed
    (runs in start order; see ``comparable_to_the_course``) beside the course's."""
    seconds = [r.metrics[TRAIN_SECONDS] for r in finished_runs(runs) if comparable_to_the_course(r)]
    n = max(len(seconds), len(COURSE_TRAIN_SECONDS))
    ours = [_number(s, 1) for s in seconds] + [""] * (n - len(seconds))
    course = [str(s) for s in COURSE_TRAIN_SECONDS] + [""] * (n - len(COURSE_TRAIN_SECONDS))
    return markdown_table(["Attempt", *(f"#{i}" for i in range(1, n + 1))],
                          [["Seconds (these runs)", *ours], ["Seconds (course)", *course]])


def split_table(split: pd.DataFrame) -> str:
    """``Categories | Train | Val | Test`` of the data used, beside the course's counts.

    ``split`` is a run's ``data/split_table.csv``: categories as rows, train/val/test columns.
    """
    rows = []
    for category, (train, val, test) in COURSE_SPLIT_SIZES.items():
        ours = split.loc[category] if category in split.index else None
        cells = [int(ours[s]) if ours is not None else "–" for s in ("train", "val", "test")]
        rows.append([category, *cells, train, val, test])
    totals = [int(split[s].sum()) for s in ("train", "val", "test")]
    course_totals = [sum(sizes[i] for sizes in COURSE_SPLIT_SIZES.values()) for i in range(3)]
    rows.append(["**Total**", *totals, *course_totals])
    return markdown_table(["Categories", "Train", "Val", "Test", "Course Train", "Course Val", "Course Test"], rows)


def classification_table(run: RunRecord, per_class: pd.DataFrame | None = None) -> str:
    """``Category | F1 | Recall | Precision`` of ``run`` beside the course's, plus accuracy.
    ``per_class``: the run's ``eval/classification.csv``; without it only F1 (a metric) is shown."""
    m = run.metrics

    def score(category: str, name: str) -> str:
        if per_class is not None and category in per_class.index:
            return _number(float(per_class.loc[category, name]))
        return _number(m.get(TEST_F1 + category)) if name == "f1" else "–"

    rows = [[category, *(score(category, name) for name in ("f1", "recall", "precision")),
             *(f"{v:.3f}" for v in course)]
            for category, course in COURSE_CLASSIFICATION.items()]
    rows.append(["**Accuracy**", _number(m.get(TEST_ACCURACY)), "", "", f"{COURSE_ACCURACY:.3f}", "", ""])
    return markdown_table(["Category", "F1", "Recall", "Precision", "Course F1", "Course Recall",
                           "Course Precision"], rows)


def run_marks(runs: Sequence[RunRecord], metric: str, comparison: Comparison | None) -> dict[str, str]:
    """What the sweep table says of each finished run: **best** / tied (by the paired comparison of
    configurations), or, without per-pair results, "highest (untested)" for a unique highest value:
    equal values are never best, and nothing is best without a test."""
    finished = [r for r in finished_runs(runs) if metric in r.metrics]
    if comparison is not None:
        marks = {}
        for run in finished:
            label = configuration_label(run, comparison.swept)
            if label == comparison.best:
                marks[run.run_id] = "**best**"
            elif comparison.is_tied(label):
                marks[run.run_id] = "tied"
        return marks
    values = [r.metrics[metric] for r in finished]
    if len(finished) > 1 and values.count(max(values)) == 1:
        return {finished[values.index(max(values))].run_id: "highest (untested)"}
    return {}


def sweep_table(runs: Sequence[RunRecord], swept: Sequence[str], metric: str = HEADLINE_METRIC,
                comparison: Comparison | None = None) -> str:
    """One row per pipeline run (start order, failed ones too) with the swept params, train_seconds,
    accuracy, ``metric`` and its random baseline; the verdict marked (``run_marks``)."""
    marks = run_marks(runs, metric, comparison)
    rows = []
    for number, row in enumerate(sweep_rows([r for r in runs if is_experiment_run(r)], metric), start=1):
        run = row.run
        warning = " ⚠ classifier" if TAG_CLASSIFIER_WARNING in run.tags else ""
        rows.append([f"#{number}", f"`{run.run_id[:8]}`", row.status, *(run.params.get(p, "–") for p in swept),
                     _number(row.train_seconds, 1), _number(row.test_accuracy) + warning,
                     _number(row.metric), _number(row.random), marks.get(run.run_id, "")])
    return markdown_table(["Attempt", "Run", "Status", *swept, TRAIN_SECONDS, TEST_ACCURACY, metric,
                           random_counterpart(metric), ""], rows)


def _as_numbers(values: Sequence[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def plot_metric_by_parameter(runs: Sequence[RunRecord], swept: Sequence[str], path: Path,
                             metric: str = HEADLINE_METRIC, comparison: Comparison | None = None) -> Path:
    """One panel per swept param (seeds aside): ``metric`` against the param's value, one series
    per combination of the other swept params' values, each point the mean of that
    configuration's runs (seeds averaged) with its 95 % CI from the paired comparison when there
    is one; the random baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in finished_runs(runs) if metric in r.metrics]
    params = [p for p in swept if p not in SEED_PARAMS] or list(swept)
    summaries = {s.label: s for s in comparison.summaries} if comparison is not None else {}
    figure, axes = plt.subplots(1, len(params), figsize=(4.6 * len(params), 3.6), squeeze=False)
    for param, ax in zip(params, axes[0]):
        others = [p for p in params if p != param]
        series: dict[str, dict[str, list[RunRecord]]] = {}
        for run in scored:
            key = configuration_label(run, others) if others else metric
            series.setdefault(key, {}).setdefault(run.params.get(param, "–"), []).append(run)
        all_values = sorted({v for points in series.values() for v in points})
        numbers = _as_numbers(all_values)
        position = dict(zip(all_values, numbers if numbers else range(len(all_values)), strict=True))
        for name, points in series.items():
            values = sorted(points, key=lambda v: position[v])
            xs = [position[v] for v in values]
            means = [float(np.mean([r.metrics[metric] for r in points[v]])) for v in values]
            cis = [summaries.get(configuration_label(points[v][0], params)) for v in values]
            if all(ci is not None for ci in cis):  # the comparison's means, which its intervals are about
                centres = [ci.mean for ci in cis]
                errors = [[c - ci.ci_low for c, ci in zip(centres, cis)],
                          [ci.ci_high - c for c, ci in zip(centres, cis)]]
                ax.errorbar(xs, centres, yerr=errors, fmt="o-", capsize=3, label=f"{name} (95 % CI)")
            else:
                ax.plot(xs, means, "o-", label=name)
            baseline = [np.mean([r.metrics.get(random_counterpart(metric), np.nan) for r in points[v]]) for v in values]
            if not np.isnan(baseline).any():
                ax.plot(xs, baseline, "--", color="grey", linewidth=1)
        ax.plot([], [], "--", color="grey", label="random recommender")
        if not numbers:
            ax.set_xticks(list(position.values()), all_values, rotation=20)
        ax.set_xlabel(param)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def setup_line(runs: Sequence[RunRecord]) -> str:
    """What the runs were: data, image size, epochs, weights, k (every distinct value)."""
    def values(get) -> str:
        return ", ".join(dict.fromkeys(str(get(r)) for r in runs))

    return (f"data `{values(lambda r: r.params.get('data.name', '?'))}` at "
            f"{values(lambda r: r.params.get('data.image_size', '?'))} px, "
            f"{values(lambda r: r.params.get('train.epochs', '?'))} epoch(s), backbone weights "
            f"`{values(lambda r: r.tags.get('weights_used', '?'))}`, "
            f"k = {values(lambda r: r.params.get('eval.k', '?'))}, "
            f"data fingerprint `{values(lambda r: r.tags.get('data_fingerprint', '?'))}`")


def training_time_note(runs: Sequence[RunRecord]) -> str:
    """What the table compares: only runs whose ``train_seconds`` is the wall time of ``model.fit``
    over the whole network, as the course's; cached runs are counted and left out."""
    cached = [r for r in runs if TRAIN_SECONDS in r.metrics and not comparable_to_the_course(r)]
    note = ("The course's figures are the wall time of `model.fit` running the whole network every epoch; "
            "the runs below are those that timed the same (`train.cache=false`: `train_seconds`)")
    if cached:
        fits = ", ".join(_number(r.metrics.get(FIT_SECONDS), 1) for r in cached)
        note += (f". {len(cached)} of {len(runs)} run(s) used the trunk cache: their `train_seconds` is getting the "
                 f"frozen trunk's activations plus fitting the tail (`fit_seconds`: {fits}), not comparable, "
                 "so they are left out of the table")
    return note + "."


def build_report(runs: Sequence[RunRecord], split: pd.DataFrame | None, source: str, plot_file: str | None,
                 metric: str = HEADLINE_METRIC, comparison: Comparison | None = None, evidence_note: str = "",
                 per_class: pd.DataFrame | None = None, pictures: Sequence[tuple[str, str]] = ()) -> str:
    """The Markdown report of ``runs`` (``split``, ``per_class``: the highest run's split table and
    classification scores per category; ``plot_file``: the
    plot's path relative to the report, or None when nothing was swept; ``comparison``: the paired
    comparison of the runs' configurations, or None with ``evidence_note`` saying why there is none)."""
    finished = finished_runs(runs)
    top = best_run(runs, metric)
    swept = swept_parameters(finished)
    n_pipeline = sum(is_experiment_run(r) for r in runs)
    parts = [
        f"# fashionbench report: {source}",
        f"{n_pipeline} run(s), {len(finished)} finished. Runs: {setup_line(finished)}.",
        "The course's numbers come from a 224 px, ImageNet-initialised ResNet50 on its photo data "
        "set; compare shapes and orders of magnitude, not digits, unless these runs used the same.",
        "## Training time",
        training_time_note(finished),
        training_time_table(runs),
        "## Data set",
        split_table(split) if split is not None else "No split table was logged.",
        "## Classification (test split)",
    ]
    if top is not None:
        parts += [f"The run with the highest {metric}: `{top.run_id}` ({top.run_name}).",
                  classification_table(top, per_class)]
        if TAG_CLASSIFIER_WARNING in top.tags:
            parts.append(f"⚠ {top.tags[TAG_CLASSIFIER_WARNING]}.")
    else:
        parts.append(f"No finished run has {metric!r}.")
    warned = [r for r in finished if TAG_CLASSIFIER_WARNING in r.tags]
    if warned:
        parts.append(f"⚠ {len(warned)} of {len(finished)} finished run(s) have a classifier that does not beat the "
                     "majority class (marked ⚠ below): their embeddings were not shaped by learning the categories.")
    parts += ["## Sweep", f"Swept: {', '.join(f'`{p}`' for p in swept) or 'nothing (the runs share every param)'}. "
              + ("Marks: the verdict of the paired comparison below." if comparison is not None else
                 "Without per-pair results no difference is tested: the highest value is marked as untested."),
              sweep_table(runs, swept, metric, comparison)]
    uneven = uneven_parameters(finished)
    if uneven:
        parts.append(f"Not every run has the params {', '.join(f'`{p}`' for p in uneven)}: the config "
                     "changed between these runs, so they differ in more than the swept params.")
    if plot_file:
        parts.append(f"![{metric} against each swept parameter]({plot_file})")
    parts.append("## Which configuration recommends best")
    parts.append(comparison.markdown() if comparison is not None else evidence_note)
    parts += [f"![{caption}]({file})\n\n*{caption}*" for caption, file in pictures]
    return "\n\n".join(parts) + "\n"


def comparison_of(settings: TrackingSettings, finished: list[RunRecord], metric: str
                  ) -> tuple[Comparison | None, str]:
    """The paired comparison of the runs' configurations, or None and why there is none (runs
    without per-pair results, runs that do not share users and splits, a metric with no per-pair values)."""
    try:
        return compare_finished(settings, finished, metric), ""
    except (LookupError, ValueError) as error:  # MissingPairsError, IncomparableRunsError, unknown metric
        return None, f"No paired comparison: {error}"
