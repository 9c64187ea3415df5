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
from pathlib import Path

from fashionbench.read_side import ReadSideOptionError, add_run_selection_arguments, store_settings

DEFAULT_OUT = Path("reports/report.md")  # reports/ is git-ignored


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
    # Imported once the command line is parsed: MLflow, SciPy and pandas take seconds to import,
    # and --help or a bad option answer without them.
    from fashionbench.analysis.written_report import write_report
    from fashionbench.tracking.runs import reap_orphaned_runs
    from fashionbench.tracking.store import require_store

    try:
        settings = store_settings(args)
        require_store(settings)  # reading never creates a store
        reap_orphaned_runs(settings)  # RUNNING runs of this host whose process is gone: KILLED
        written = write_report(settings, args.out, args.sweep, args.metric, not args.no_log)
    except (LookupError, ReadSideOptionError) as error:
        print(f"fashionbench.report: {error}", file=sys.stderr)
        return 1
    print(written.markdown.read_text())
    pictures = f"; pictures: {', '.join(str(path) for path in written.pictures)}" if written.pictures else ""
    print(f"report written to {written.markdown}, as one HTML page to {written.html}, its tables as LaTeX to "
          f"{written.latex}{pictures}")
    if written.run_id:
        print(f"logged as artifacts of report run {written.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
