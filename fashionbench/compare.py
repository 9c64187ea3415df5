"""``python -m fashionbench.compare``: which configuration of a sweep recommends best, with the evidence.

    python -m fashionbench.compare --sweep latest
    python -m fashionbench.compare --sweep latest --metric ndcg_at_10
    python -m fashionbench.compare --runs <run id> <run id> ...
    python -m fashionbench.compare --sweep latest tracking=server      # the store a run with tracking=server used

Reads the runs' per-pair results (``eval/pairs.csv``), groups the runs into configurations by the
params the sweep varied (seeds aside), and answers two questions (``analysis.comparison``): are
these trained models different for these users (the per-pair test), and does one configuration
train better models than another (the configuration test, whose unit is the training). The
verdict names a best configuration only when the configuration test finds it better than every
other one. Writes Markdown to ``--out`` (default ``reports/compare.md``) and prints it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fashionbench.analysis.comparison import IncomparableRunsError
from fashionbench.analysis.study import compare_runs
from fashionbench.evaluation.references import LADDER, MODEL
from fashionbench.read_side import (
    ReadSideOptionError,
    add_run_selection_arguments,
    add_statistics_arguments,
    statistics,
    store_settings,
)
from fashionbench.tracking.runs import reap_orphaned_runs
from fashionbench.tracking.store import require_store

DEFAULT_OUT = Path("reports/compare.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fashionbench.compare",
        description="Compare the configurations of a sweep: mean ± CI, paired differences, a configuration test "
                    "whose noise includes training, and a verdict that says when configurations are tied.",
    )
    add_run_selection_arguments(parser, metric_help="per-pair metric to compare, e.g. ndcg_at_10 "
                                                    "(default: precision_at_<eval.k>)")
    parser.add_argument("--runs", nargs="+", metavar="RUN_ID", help="only these runs")
    parser.add_argument("--recommender", default=MODEL, choices=LADDER, help="whose results (default: %(default)s)")
    add_statistics_arguments(parser)
    parser.add_argument("--group-by", nargs="+", metavar="PARAM", help="params whose values make a configuration "
                        "(default: the swept params, seeds aside; e.g. model.seed for an A/A test of training)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown file (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        options = statistics(args)
        settings = store_settings(args)
        require_store(settings)  # reading never creates a store
        reap_orphaned_runs(settings)  # RUNNING runs of this host whose process is gone: KILLED
        comparison = compare_runs(settings, args.sweep, args.runs, args.metric, args.recommender, options.alpha,
                                  options.resamples, args.group_by)
    except (LookupError, IncomparableRunsError, ReadSideOptionError, ValueError) as error:
        print(f"fashionbench.compare: {error}", file=sys.stderr)
        return 1
    text = f"# fashionbench comparison: experiment `{settings.experiment_name}`\n\n{comparison.markdown()}\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
