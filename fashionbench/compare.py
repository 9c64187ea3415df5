"""``python -m fashionbench.compare``: which configuration of a sweep recommends best, with paired statistics.

    python -m fashionbench.compare --sweep latest
    python -m fashionbench.compare --sweep latest --metric ndcg_at_10
    python -m fashionbench.compare --runs <run id> <run id> ...

Reads the runs' per-pair results (``eval/pairs.csv``), groups the runs into configurations by
the params the sweep varied (seeds aside), and compares them pair by pair on shared users and
held-out splits (``fashionbench.analysis.comparison``): per configuration a mean with a 95 % CI, per two
configurations a paired difference with a user-clustered bootstrap CI and a sign-flip p-value,
Holm-corrected, and a verdict that names a best configuration only when it beats every other
one significantly. Writes Markdown to ``--out`` (default ``reports/compare.md``) and prints it.
Plain argparse, as for ``promote`` and ``report``: it reads runs, it composes no experiment.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from fashionbench.analysis.comparison import Comparison, IncomparableRunsError, compare
from fashionbench.artifacts import HEADLINE_METRIC, HEADLINE_SECTION, LADDER_SECTION
from fashionbench.evaluation.references import LADDER, MODEL
from fashionbench.tracking.records import RunRecord, add_run_selection_arguments, is_experiment_run
from fashionbench.tracking.runs import reap_orphaned_runs
from fashionbench.tracking.store import (
    TrackingSettings,
    experiment_runs,
    require_store,
    resolve_sweep,
    run_pairs,
    tracking_settings,
)

DEFAULT_OUT = Path("reports/compare.md")


def headline_metric(runs: list[RunRecord]) -> str:
    """``precision_at_<eval.k>``: the runs' headline as a per-pair column. Raises ValueError when
    the runs used different k."""
    ks = {run.params.get("eval.k") for run in runs}
    if len(ks) != 1 or None in ks:
        raise ValueError(f"the runs used different eval.k ({sorted(map(str, ks))}): pass --metric, "
                         f"e.g. --metric precision_at_5")
    return f"precision_at_{ks.pop()}"


def pair_column(metric: str | None, runs: list[RunRecord]) -> str:
    """The per-pair column behind a run metric: ``headline/precision_at_k`` (the headline, also
    written ``precision_at_k``) is ``precision_at_<eval.k>``, ``ladder/ndcg_at_10/model`` (or
    ``ndcg_at_10``) is ``ndcg_at_10``; None means the headline.
    Other names are taken as a column as they are (``compare`` says which columns exist)."""
    if metric in (None, HEADLINE_METRIC, HEADLINE_METRIC.removeprefix(HEADLINE_SECTION)):
        return headline_metric(runs)
    return metric.removeprefix(LADDER_SECTION).split("/", 1)[0]


def compare_finished(settings: TrackingSettings, finished: list[RunRecord], metric: str | None = None,
                     recommender: str = MODEL, alpha: float = 0.05, n_resamples: int = 10_000,
                     group_by: list[str] | None = None) -> Comparison:
    """Compare FINISHED runs by their per-pair results (see ``compare_runs`` for what it raises)."""
    with tempfile.TemporaryDirectory() as scratch:
        tables = run_pairs(settings, finished, Path(scratch))
    return compare(tables, pair_column(metric, finished), recommender, alpha, n_resamples, group_by=group_by)


def compare_runs(settings: TrackingSettings, sweep: str | None = None, run_ids: list[str] | None = None,
                 metric: str | None = None, recommender: str = MODEL, alpha: float = 0.05,
                 n_resamples: int = 10_000, group_by: list[str] | None = None) -> Comparison:
    """Compare the FINISHED runs of a sweep (or the given runs, or the whole experiment).

    Raises LookupError (no experiment, no sweep, no runs, runs without per-pair results),
    IncomparableRunsError and ValueError (an unknown metric) with messages that name what is wrong.
    """
    sweep_id = resolve_sweep(settings, sweep)
    runs = [run for run in experiment_runs(settings, sweep_id) if is_experiment_run(run)]
    if run_ids:
        unknown = sorted(set(run_ids) - {run.run_id for run in runs})
        if unknown:
            where = f"sweep {sweep_id}" if sweep_id else f"experiment {settings.experiment_name!r}"
            known = ", ".join(f"{run.run_id} ({run.run_name})" for run in runs[::-1][:5]) or "none"
            raise LookupError(f"--runs: no such run(s) {unknown} in {where}; its runs, newest first: {known}"
                              f"{' ...' if len(runs) > 5 else ''} ({len(runs)} in all)")
        runs = [run for run in runs if run.run_id in run_ids]
    finished = [run for run in runs if run.status == "FINISHED"]
    if not finished:
        where = f"sweep {sweep_id}" if sweep_id else f"experiment {settings.experiment_name!r}"
        raise LookupError(f"no FINISHED run to compare in {where} of {settings.uri}")
    return compare_finished(settings, finished, metric, recommender, alpha, n_resamples, group_by)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fashionbench.compare",
        description="Compare the configurations of a sweep pair by pair: mean ± CI, paired differences, "
                    "Holm-corrected p-values, and a verdict that says when configurations are tied.",
    )
    add_run_selection_arguments(parser, metric_help="per-pair metric to compare, e.g. ndcg_at_10 "
                                                    "(default: precision_at_<eval.k>)")
    parser.add_argument("--runs", nargs="+", metavar="RUN_ID", help="only these runs")
    parser.add_argument("--recommender", default=MODEL, choices=LADDER, help="whose results (default: %(default)s)")
    parser.add_argument("--alpha", type=float, default=0.05, help="family-wise error rate (default: %(default)s)")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap and sign-flip draws "
                        "(default: %(default)s)")
    parser.add_argument("--group-by", nargs="+", metavar="PARAM", help="params whose values make a configuration "
                        "(default: the swept params, seeds aside; e.g. model.seed for an A/A test of training)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown file (default: %(default)s)")
    args = parser.parse_args(argv)
    if not 0 < args.alpha < 1:
        parser.error(f"--alpha must be in (0, 1), got {args.alpha}")
    if args.resamples < 1:
        parser.error(f"--resamples must be >= 1, got {args.resamples}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = tracking_settings(args.tracking_uri, args.experiment)
    try:
        require_store(settings)  # reading never creates a store
        reap_orphaned_runs(settings)  # RUNNING runs of this host whose process is gone: KILLED
        comparison = compare_runs(settings, args.sweep, args.runs, args.metric, args.recommender, args.alpha,
                                  args.resamples, args.group_by)
    except (LookupError, IncomparableRunsError, ValueError) as error:
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
