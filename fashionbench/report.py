"""``python -m fashionbench.report``: the course's tables, reproduced from tracked runs, as Markdown.

    python -m fashionbench.report --experiment fashionbench --out report.md
    python -m fashionbench.report --sweep latest --out experiments/course_reproduction/report.md

Reads the runs of an experiment (or of one sweep) and writes, each beside the course's own
numbers: the training-time table, the data-set split table, the per-class classification
table with accuracy, and a sweep table (swept params, train_seconds, accuracy, precision@k
and the random baseline, best marked) with a PNG plot of precision@k against each swept
param. The report and plot are also logged as artifacts of a "report" run (tag ``report``).
Plain argparse, as for ``promote``: it reads runs, it composes no experiment.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fashionbench.artifacts import HEADLINE_METRIC, REPORT, SPLIT_TABLE, TAG_REPORT, load_split_table
from fashionbench.data import COURSE_SPLIT_SIZES
from fashionbench.tracking.records import (
    RunRecord,
    add_run_selection_arguments,
    is_experiment_run,
    swept_parameters,
    uneven_parameters,
)
from fashionbench.tracking.runs import tracked_run
from fashionbench.tracking.store import (
    TrackingSettings,
    download_run_artifacts,
    experiment_runs,
    resolve_sweep,
    tracking_settings,
)

log = logging.getLogger("fashionbench.report")

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


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _number(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def finished_runs(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """The FINISHED pipeline runs, in start order."""
    return sorted((r for r in runs if is_experiment_run(r) and r.status == "FINISHED"), key=lambda r: r.start_time)


def best_run(runs: Sequence[RunRecord], metric: str = HEADLINE_METRIC) -> RunRecord | None:
    """The finished run with the highest ``metric`` (the earliest on ties), or None."""
    scored = [r for r in finished_runs(runs) if metric in r.metrics]
    return max(scored, key=lambda r: r.metrics[metric]) if scored else None


def training_time_table(runs: Sequence[RunRecord]) -> str:
    """``Attempt | #1 | #2 ...`` with this report's train_seconds (runs in start order) beside the course's."""
    seconds = [r.metrics["train_seconds"] for r in finished_runs(runs) if "train_seconds" in r.metrics]
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


def classification_table(run: RunRecord) -> str:
    """``Category | F1 | Recall | Precision`` of ``run`` beside the course's, plus accuracy."""
    m = run.metrics
    rows = [[category, *(_number(m.get(f"test_{name}_{category}")) for name in ("f1", "recall", "precision")),
             *(f"{v:.3f}" for v in course)]
            for category, course in COURSE_CLASSIFICATION.items()]
    rows.append(["**Accuracy**", _number(m.get("test_accuracy")), "", "", f"{COURSE_ACCURACY:.3f}", "", ""])
    return markdown_table(["Category", "F1", "Recall", "Precision", "Course F1", "Course Recall",
                           "Course Precision"], rows)


def sweep_table(runs: Sequence[RunRecord], swept: Sequence[str], metric: str = HEADLINE_METRIC) -> str:
    """One row per pipeline run (start order, failed ones too) with the swept params, train_seconds,
    accuracy, ``metric`` and its random baseline; the best run marked."""
    best = best_run(runs, metric)
    pipeline = sorted((r for r in runs if is_experiment_run(r)), key=lambda r: r.start_time)
    rows = []
    for number, run in enumerate(pipeline, start=1):
        m = run.metrics
        mark = "**best**" if best is not None and run.run_id == best.run_id else ""
        rows.append([f"#{number}", f"`{run.run_id[:8]}`", run.status, *(run.params.get(p, "–") for p in swept),
                     _number(m.get("train_seconds"), 1), _number(m.get("test_accuracy")),
                     _number(m.get(metric)), _number(m.get(f"random_{metric}")), mark])
    return markdown_table(["Attempt", "Run", "Status", *swept, "train_seconds", "test_accuracy", metric,
                           f"random_{metric}", ""], rows)


def _as_numbers(values: Sequence[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def standard_error(run: RunRecord, metric: str = HEADLINE_METRIC) -> float | None:
    """Binomial standard error of a precision@k: sqrt(p (1 - p) / (pairs * k)), treating each of
    the run's ``eval_pairs`` x k recommendation slots as an independent trial (an approximation:
    slots of one user are correlated). None for other metrics or when the counts were not logged."""
    if not metric.startswith("precision_at_k") or "eval_pairs" not in run.metrics or "eval.k" not in run.params:
        return None
    p, trials = run.metrics[metric], run.metrics["eval_pairs"] * int(run.params["eval.k"])
    return math.sqrt(p * (1 - p) / trials) if trials > 0 else None


def plot_metric_by_parameter(runs: Sequence[RunRecord], swept: Sequence[str], path: Path,
                             metric: str = HEADLINE_METRIC) -> Path:
    """One panel per swept param: ``metric`` of each finished run against the param's value
    (numeric axis when every value is a number), the random baseline dashed, the best starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in finished_runs(runs) if metric in r.metrics]
    best = best_run(runs, metric)
    figure, axes = plt.subplots(1, len(swept), figsize=(4.2 * len(swept), 3.4), squeeze=False)
    for param, ax in zip(swept, axes[0]):
        labels = [r.params.get(param, "–") for r in scored]
        numbers = _as_numbers(labels)
        order = sorted(range(len(scored)), key=lambda i: numbers[i] if numbers else labels[i])
        xs = [numbers[i] for i in order] if numbers else list(range(len(order)))
        values = [scored[i].metrics[metric] for i in order]
        errors = [standard_error(scored[i], metric) for i in order]
        if all(e is not None for e in errors):
            ax.errorbar(xs, values, yerr=errors, fmt="o-", capsize=3, label=f"{metric} ± 1 s.e.")
        else:
            ax.plot(xs, values, "o-", label=metric)
        baseline = [scored[i].metrics.get(f"random_{metric}") for i in order]
        if all(b is not None for b in baseline):
            ax.plot(xs, baseline, "--", color="grey", label="random recommender")
        for x, i in zip(xs, order):
            if best is not None and scored[i].run_id == best.run_id:
                ax.plot([x], [scored[i].metrics[metric]], "*", color="crimson", markersize=14, label="best")
        if not numbers:
            ax.set_xticks(xs, [labels[i] for i in order], rotation=20)
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
    """What ``train_seconds`` measured: model.fit alone, or fitting on cached trunk activations."""
    cached = sum(r.metrics.get("trunk_cache_used", 0.0) > 0 for r in runs)
    note = "`train_seconds` is the wall time of `model.fit`, like the course's"
    if cached:
        note += (f"; {cached} of {len(runs)} run(s) fitted only the trainable tail on cached trunk "
                 "activations (`train.cache=true`), so their seconds are not comparable to the course's")
    return note + "."


def build_report(runs: Sequence[RunRecord], split: pd.DataFrame | None, source: str, plot_file: str | None,
                 metric: str = HEADLINE_METRIC) -> str:
    """The Markdown report of ``runs`` (``split``: the best run's split table; ``plot_file``: the
    plot's path relative to the report, or None when nothing was swept)."""
    finished = finished_runs(runs)
    best = best_run(runs, metric)
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
    if best is not None:
        parts += [f"Best run by {metric}: `{best.run_id}` ({best.run_name}).", classification_table(best)]
    else:
        parts.append(f"No finished run has {metric!r}.")
    parts += ["## Sweep", f"Swept: {', '.join(f'`{p}`' for p in swept) or 'nothing (the runs share every param)'}; "
              f"best by {metric} marked.", sweep_table(runs, swept, metric)]
    uneven = uneven_parameters(finished)
    if uneven:
        parts.append(f"Not every run has the params {', '.join(f'`{p}`' for p in uneven)}: the config "
                     "changed between these runs, so they differ in more than the swept params.")
    if plot_file:
        parts.append(f"![{metric} against each swept parameter]({plot_file})")
        if best is not None and standard_error(best, metric) is not None:
            parts.append(f"Error bars: ±1 binomial standard error of precision@k, √(p(1−p)/(pairs·k)) "
                         f"(about {standard_error(best, metric):.3f} for the best run); differences "
                         "smaller than about two of them are not evidence of a better setting.")
    return "\n\n".join(parts) + "\n"


def write_report(settings: TrackingSettings, out: Path, sweep_id: str | None = None,
                 metric: str = HEADLINE_METRIC, log_run: bool = True) -> tuple[Path, Path | None, str | None]:
    """Write the report of the experiment's (or one sweep's) runs to ``out`` and the plot beside it;
    log both to a report run unless ``log_run`` is False. Returns (report, plot, report run id).

    ``sweep_id="latest"`` picks the most recent sweep. Raises ReportError when there are no runs.
    """
    sweep_id = resolve_sweep(settings, sweep_id)
    runs = experiment_runs(settings, sweep_id)
    finished = finished_runs(runs)
    source = f"experiment `{settings.experiment_name}`" + (f", sweep `{sweep_id}`" if sweep_id else "")
    if not finished:
        raise ReportError(f"no finished run in {source.replace('`', '')} of {settings.uri}")
    best = best_run(runs, metric) or finished[-1]
    out.parent.mkdir(parents=True, exist_ok=True)
    split = None
    with tempfile.TemporaryDirectory() as scratch:
        try:
            split = load_split_table(download_run_artifacts(settings, best.run_id, SPLIT_TABLE, Path(scratch)))
        except Exception as error:  # an older run without the artifact: report without the table
            log.warning("run %s has no %s (%s)", best.run_id, SPLIT_TABLE, error)
    swept = swept_parameters(finished)
    plot = plot_metric_by_parameter(runs, swept, out.with_name(f"{out.stem}_{metric}.png"), metric) if swept else None
    out.write_text(build_report(runs, split, source, plot.name if plot else None, metric))
    run_id = None
    if log_run:
        with tracked_run(settings, run_name=f"report {sweep_id or settings.experiment_name}",
                         tags={TAG_REPORT: sweep_id or "experiment"}) as run:
            run.log_artifact(out, REPORT)
            if plot:
                run.log_artifact(plot, REPORT)
            run_id = run.run_id
    return out, plot, run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fashionbench.report",
        description="Write the course's tables, reproduced from tracked runs, and a sweep table as Markdown.",
    )
    add_run_selection_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("report.md"), help="Markdown file (default: %(default)s)")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to a report run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = tracking_settings(args.tracking_uri, args.experiment)
    try:
        out, plot, run_id = write_report(settings, args.out, args.sweep, args.metric, not args.no_log)
    except LookupError as error:
        print(f"fashionbench.report: {error}", file=sys.stderr)
        return 1
    print(out.read_text())
    print(f"report written to {out}" + (f", plot to {plot}" if plot else ""))
    if run_id:
        print(f"logged as artifacts of report run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
