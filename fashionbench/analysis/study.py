"""A study as the store holds it: the runs to compare and their per-pair results, read and compared.

What ``compare``, ``report`` and ``promote`` share: which runs (a sweep, given runs, or the whole
experiment), which per-pair column a metric name means, and the comparison of their configurations
(``analysis.comparison``). The files come from the store through ``tracking``; the statistics need
no MLflow.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fashionbench.analysis.comparison import Comparison, RunPairs, compare
from fashionbench.analysis.schema import AnalysisConfig
from fashionbench.artifacts import HEADLINE_SECTION, PAIRS, metric_column, parse_metric_name
from fashionbench.evaluation.pairs import load_pairs
from fashionbench.evaluation.references import MODEL
from fashionbench.tracking.records import RunRecord, finished_experiment_runs, is_experiment_run
from fashionbench.tracking.settings import TrackingSettings
from fashionbench.tracking.store import download_run_artifacts, experiment_runs, resolve_sweep


class MissingPairsError(LookupError):
    """A run without per-pair results (logged by runs since per-pair results were added)."""


def load_run_pairs(settings: TrackingSettings, runs: list[RunRecord], destination: Path) -> list[RunPairs]:
    """Each run with its per-pair results (``eval/pairs.csv``), downloaded into ``destination``.

    Raises MissingPairsError naming the runs that lack the artifact."""
    loaded, missing = [], []
    for run in runs:
        try:
            path = download_run_artifacts(settings, run.run_id, PAIRS, destination / run.run_id)
        except Exception:  # MlflowException or OSError, by store: the artifact is not there
            missing.append(run)
            continue
        loaded.append(RunPairs(run, load_pairs(path)))
    if missing:
        names = ", ".join(f"{run.run_id} ({run.run_name})" for run in missing[:5])
        raise MissingPairsError(f"{len(missing)} run(s) have no per-pair results ({PAIRS}): {names}"
                                f"{' ...' if len(missing) > 5 else ''}. They were logged before per-pair results "
                                f"existed, or did not finish; run them again to compare them pair by pair.")
    return loaded



def headline_metric(runs: list[RunRecord]) -> str:
    """``precision_at_<eval.k>``: the runs' headline as a per-pair column. Raises ValueError when
    the runs used different k."""
    ks = {run.params.get("eval.k") for run in runs}
    if len(ks) != 1 or None in ks:
        raise ValueError(f"the runs used different eval.k ({sorted(map(str, ks))}): pass --metric, "
                         f"e.g. --metric precision_at_5")
    return f"precision_at_{ks.pop()}"


def pair_column(metric: str | None, runs: list[RunRecord]) -> str:
    """The per-pair column behind a metric name (``artifacts.parse_metric_name``): the headline
    (``headline/precision_at_k``, also written ``precision_at_k``, or None) is ``precision_at_<eval.k>``;
    ``ladder/ndcg_at_10/model`` and ``ndcg_at_10`` are ``ndcg_at_10``. Other names are taken as a
    column as they are (``compare`` then says which columns exist)."""
    if metric is None:
        return headline_metric(runs)
    parsed = parse_metric_name(metric) or parse_metric_name(HEADLINE_SECTION + metric)
    if parsed is None:
        return metric
    return parsed.column or metric_column(parsed.metric, int(headline_metric(runs).rpartition("_at_")[2]))


def compare_finished(settings: TrackingSettings, finished: list[RunRecord], metric: str | None = None,
                     recommender: str = MODEL, alpha: float = AnalysisConfig.alpha,
                     n_resamples: int = AnalysisConfig.resamples,
                     group_by: list[str] | None = None) -> Comparison:
    """Compare FINISHED runs by their per-pair results (see ``compare_runs`` for what it raises)."""
    with tempfile.TemporaryDirectory() as scratch:
        tables = load_run_pairs(settings, finished, Path(scratch))
    return compare(tables, pair_column(metric, finished), recommender, alpha, n_resamples, group_by=group_by)


def compare_runs(settings: TrackingSettings, sweep: str | None = None, run_ids: list[str] | None = None,
                 metric: str | None = None, recommender: str = MODEL, alpha: float = AnalysisConfig.alpha,
                 n_resamples: int = AnalysisConfig.resamples, group_by: list[str] | None = None) -> Comparison:
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
    finished = finished_experiment_runs(runs)
    if not finished:
        where = f"sweep {sweep_id}" if sweep_id else f"experiment {settings.experiment_name!r}"
        raise LookupError(f"no FINISHED run to compare in {where} of {settings.uri}")
    return compare_finished(settings, finished, metric, recommender, alpha, n_resamples, group_by)
