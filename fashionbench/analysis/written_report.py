"""The report written: Markdown, one HTML page and LaTeX tables, with their pictures, and logged
as the artifacts of a "report" run (tag ``report``), which later reads skip.

``analysis.report`` builds the report's sections from the runs; ``write_report`` reads what they
need from the store (per-pair tables, the shop's images, the split tables), draws the pictures
(``analysis.figures``) and writes the files. ``python -m fashionbench.report`` is its command.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fashionbench.analysis.comparison import Comparison, markdown_table
from fashionbench.analysis.design import swept_parameters
from fashionbench.analysis.documents import html_document, latex_tables
from fashionbench.analysis.figures import contact_sheet, forest_plot, representative_runs
from fashionbench.analysis.index_cost import index_costs, index_pareto
from fashionbench.analysis.report import (
    ReportError,
    best_run,
    build_report,
    comparison_of,
    finished_runs,
    plot_metric_by_parameter,
)
from fashionbench.analysis.study import load_run_pairs
from fashionbench.artifacts import (
    CLASSIFICATION_TABLE,
    HEADLINE_METRIC,
    REPORT,
    SHOP_IMAGES,
    SHOP_ITEMS,
    SPLIT_TABLE,
    TAG_REPORT,
)
from fashionbench.data.artifact_files import load_shop, load_split_table
from fashionbench.tracking.records import require_metric
from fashionbench.tracking.runs import tracked_run
from fashionbench.tracking.settings import TrackingSettings
from fashionbench.tracking.store import download_run_artifacts, experiment_runs, resolve_sweep

log = logging.getLogger("fashionbench.report")


@dataclass(frozen=True)
class WrittenReport:
    """The report's files: Markdown, its HTML and LaTeX forms, and its pictures."""

    markdown: Path
    html: Path
    latex: Path
    pictures: list[Path]
    run_id: str | None  # the report run they were logged to


def comparison_pictures(settings: TrackingSettings, comparison: Comparison, tables: list, out: Path
                        ) -> list[tuple[str, Path]]:
    """The comparison's forest plot and, when the top two configurations share users, the contact sheet of
    the users they differ most for (the shop's images from one of their runs)."""
    pictures = [("Every paired difference with its 95 % intervals: the configuration test's (filled, the "
                 "verdict's) and the per-pair test's (hollow, these trainings only).",
                 forest_plot(comparison, out.with_name(f"{out.stem}_forest.png")))] if comparison.comparisons else []
    chosen = representative_runs(comparison, tables)
    if not chosen:
        return pictures
    with tempfile.TemporaryDirectory() as scratch:
        try:
            run_id = next(iter(chosen.values())).run.run_id
            shop = load_shop(download_run_artifacts(settings, run_id, SHOP_ITEMS, Path(scratch)),
                             download_run_artifacts(settings, run_id, SHOP_IMAGES, Path(scratch)))
            k = int(comparison.metric.rpartition("_at_")[2]) if comparison.metric.rpartition("_at_")[2].isdigit() else 5
            sheet = contact_sheet(comparison, chosen, shop, out.with_name(f"{out.stem}_contact_sheet.png"), k)
            if sheet is not None:
                pictures.append(("Where the top two configurations differ most: a user's queries, then each "
                                 "configuration's top-k, held-out favourites framed green.", sheet))
        except Exception as error:  # noqa: BLE001 - a picture is a diagnostic: the report goes on without it
            log.warning("no contact sheet: %s", error)
    return pictures


def index_cost_section(tables: list, k: int, out: Path) -> tuple[str, list[tuple[str, Path]]]:
    """Markdown and a Pareto figure of what each approximate index costs against exact search, when the
    runs hold an exact run and approximate runs with its weights (an index sweep); else nothing."""
    costs = index_costs(tables, k)
    if costs.empty:
        return "", []
    column, ndcg = f"precision_at_{k}", f"ndcg_at_{k}"
    rows = [[row["setting"], f"{row['recall']:.3f}", f"{row['qps']:.0f}",
             f"{row[f'{column} − exact']:+.4f} ({row[f'{column} CI low']:+.4f} .. {row[f'{column} CI high']:+.4f})",
             f"{row[f'{ndcg} − exact']:+.4f} ({row[f'{ndcg} CI low']:+.4f} .. {row[f'{ndcg} CI high']:+.4f})"]
            for row in costs.to_dict("records")]
    text = ("## What the index costs\n\nEach approximate index against exact search on the same users, splits and "
            "trained weights, pair by pair (per-pair test, 95 % CI): ann-benchmarks' recall and queries per second "
            f"beside what the users see (exact search: {costs['exact_qps'].median():.0f} queries/s).\n\n"
            + markdown_table(["index", "recall@10", "queries/s", f"{column} − exact", f"{ndcg} − exact"], rows))
    figure = index_pareto(costs, k, out.with_name(f"{out.stem}_index_cost.png"))
    return text, [("What each index setting costs in precision against what it costs in recall and time.", figure)]


def write_report(settings: TrackingSettings, out: Path, sweep_id: str | None = None,
                 metric: str = HEADLINE_METRIC, log_run: bool = True) -> WrittenReport:
    """Write the report of the experiment's (or one sweep's) runs to ``out`` (Markdown), beside it the
    same report as one self-contained HTML file, its tables as LaTeX and its pictures; log them all to
    a report run unless ``log_run`` is False.

    ``sweep_id="latest"`` picks the most recent sweep. Raises ReportError when there are no runs.
    """
    sweep_id = resolve_sweep(settings, sweep_id)
    runs = experiment_runs(settings, sweep_id)
    finished = finished_runs(runs)
    source = f"experiment `{settings.experiment_name}`" + (f", sweep `{sweep_id}`" if sweep_id else "")
    if not finished:
        raise ReportError(f"no finished run in {source.replace('`', '')} of {settings.uri}")
    metric = require_metric(metric, finished)
    best = best_run(runs, metric) or finished[-1]
    out.parent.mkdir(parents=True, exist_ok=True)
    split = per_class = None
    with tempfile.TemporaryDirectory() as scratch:
        try:
            split = load_split_table(download_run_artifacts(settings, best.run_id, SPLIT_TABLE, Path(scratch)))
            per_class = pd.read_csv(download_run_artifacts(settings, best.run_id, CLASSIFICATION_TABLE,
                                                           Path(scratch)), index_col="category")
        except Exception as error:  # an older run without the artifacts: report without the tables
            log.warning("run %s lacks an artifact the report shows (%s)", best.run_id, error)
    swept = swept_parameters(finished)
    comparison, note = comparison_of(settings, finished, metric)
    plot_path = out.with_name(f"{out.stem}_{metric.replace('/', '_')}.png")
    plot = plot_metric_by_parameter(runs, swept, plot_path, metric, comparison) if swept else None
    with tempfile.TemporaryDirectory() as scratch:
        try:
            tables = load_run_pairs(settings, finished, Path(scratch))
        except LookupError:  # runs without per-pair results: the report says so in its comparison section
            tables = []
    pictures = comparison_pictures(settings, comparison, tables, out) if comparison is not None else []
    k = int(finished[0].params.get("eval.k", 5))
    index_text, index_pictures = index_cost_section(tables, k, out)
    text = build_report(runs, split, source, plot.name if plot else None, metric, comparison, note, per_class,
                        [(caption, path.name) for caption, path in pictures])
    if index_text:
        text += "\n" + index_text + "\n\n" + "\n\n".join(f"![{caption}]({path.name})\n\n*{caption}*"
                                                         for caption, path in index_pictures) + "\n"
        pictures += index_pictures
    out.write_text(text)
    page = out.with_suffix(".html")
    page.write_text(html_document(text, f"fashionbench report: {source.replace('`', '')}", out.parent))
    latex = out.with_name(f"{out.stem}_tables.tex")
    latex.write_text(latex_tables(text))
    files = [out, page, latex, *([plot] if plot else []), *(path for _, path in pictures)]
    run_id = None
    if log_run:
        with tracked_run(settings, run_name=f"report {sweep_id or settings.experiment_name}",
                         tags={TAG_REPORT: sweep_id or "experiment"}) as run:
            for path in files:
                run.log_artifact(path, REPORT)
            run_id = run.run_id
    return WrittenReport(out, page, latex, [*([plot] if plot else []), *(path for _, path in pictures)], run_id)
