"""``python -m fashionbench.report``: the course's tables, reproduced from tracked runs, as Markdown.

    python -m fashionbench.report --sweep latest                     # reports/report.md (git-ignored)
    python -m fashionbench.report --sweep latest --out experiments/course_reproduction/report.md

Reads the runs of an experiment (or of one sweep) and writes the report ``analysis.report`` builds
(the course's tables beside the course's numbers, the sweep, the plot, the verdict), and logs the
report and plot as artifacts of a "report" run (tag ``report``), which later reads skip.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import pandas as pd

from fashionbench.analysis.design import swept_parameters
from fashionbench.analysis.report import (
    ReportError,
    best_run,
    build_report,
    comparison_of,
    finished_runs,
    plot_metric_by_parameter,
)
from fashionbench.artifacts import CLASSIFICATION_TABLE, HEADLINE_METRIC, REPORT, SPLIT_TABLE, TAG_REPORT
from fashionbench.data.artifact_files import load_split_table
from fashionbench.read_side import ReadSideOptionError, add_run_selection_arguments, store_settings
from fashionbench.tracking.records import require_metric
from fashionbench.tracking.runs import reap_orphaned_runs, tracked_run
from fashionbench.tracking.settings import TrackingSettings
from fashionbench.tracking.store import download_run_artifacts, experiment_runs, require_store, resolve_sweep

log = logging.getLogger("fashionbench.report")
DEFAULT_OUT = Path("reports/report.md")  # reports/ is git-ignored


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
    out.write_text(build_report(runs, split, source, plot.name if plot else None, metric, comparison, note,
                                   per_class))
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
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown file (default: %(default)s)")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to a report run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = store_settings(args)
        require_store(settings)  # reading never creates a store
        reap_orphaned_runs(settings)  # RUNNING runs of this host whose process is gone: KILLED
        out, plot, run_id = write_report(settings, args.out, args.sweep, args.metric, not args.no_log)
    except (LookupError, ReadSideOptionError) as error:
        print(f"fashionbench.report: {error}", file=sys.stderr)
        return 1
    print(out.read_text())
    print(f"report written to {out}" + (f", plot to {plot}" if plot else ""))
    if run_id:
        print(f"logged as artifacts of report run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
