"""A study as the store holds it: the runs to compare and their per-pair results, read and compared.

What ``compare``, ``report`` and ``promote`` share: which runs (a sweep, given runs, or the whole
experiment), which per-pair column a metric name means, and the comparison of their configurations
(``analysis.comparison``). The files come from the store through ``tracking``; the statistics need
no MLflow.
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from fashionbench.analysis.calibration import CalibrationResult, calibrations, measure_training_noise
from fashionbench.analysis.comparison import Comparison, RunPairs, compare, markdown_table, pair_values
from fashionbench.analysis.design import configuration_label, configuration_params, replicate_key
from fashionbench.analysis.schema import AnalysisConfig
from fashionbench.analysis.variance import PlanRow, TrainingNoise, components, plan, user_shares
from fashionbench.artifacts import (
    HEADLINE_SECTION,
    PAIRS,
    SAME_ITEM,
    SAME_ITEM_COLUMN_PREFIX,
    SAME_ITEM_SECTION,
    ArtifactError,
    metric_column,
    parse_metric_name,
)
from fashionbench.data.checksums import check_file
from fashionbench.evaluation.pairs import load_pairs
from fashionbench.evaluation.references import MODEL
from fashionbench.tracking.records import RunRecord, finished_experiment_runs, is_experiment_run
from fashionbench.tracking.runs import tracked_run
from fashionbench.tracking.settings import TrackingSettings
from fashionbench.tracking.store import download_run_artifacts, experiment_runs, resolve_sweep, run_checksums


class MissingPairsError(LookupError):
    """A run without per-pair results (logged by runs since per-pair results were added)."""


class DamagedPairsError(MissingPairsError):
    """A run's per-pair results that cannot be used: not what the run wrote (its checksum), or not
    a per-pair table; the message names the run, the file and what is wrong."""


def load_run_pairs(settings: TrackingSettings, runs: list[RunRecord], destination: Path,
                   artifact: str = PAIRS) -> list[RunPairs]:
    """Each run with its per-pair results (``eval/pairs.csv``, or ``eval/same_item.csv``'s
    per-query ones), downloaded into ``destination``.

    Raises MissingPairsError naming the runs that lack the artifact."""
    loaded, missing = [], []
    for run in runs:
        try:
            path = download_run_artifacts(settings, run.run_id, artifact, destination / run.run_id)
        except Exception:  # MlflowException or OSError, by store: the artifact is not there
            missing.append(run)
            continue
        try:
            recorded = run_checksums(settings, run.run_id)
            if artifact in recorded:  # the file as the run wrote it (runs before checksums: its content checked)
                check_file(path, recorded[artifact], artifact)
            loaded.append(RunPairs(run, load_pairs(path, artifact)))
        except ArtifactError as error:
            raise DamagedPairsError(f"run {run.run_id} ({run.run_name}): {error}; its per-pair results cannot "
                                    "be compared") from None
    if missing:
        names = ", ".join(f"{run.run_id} ({run.run_name})" for run in missing[:5])
        if artifact == SAME_ITEM:
            raise MissingPairsError(f"{len(missing)} run(s) have no same-item results ({SAME_ITEM}): {names}"
                                    f"{' ...' if len(missing) > 5 else ''}. Same-item retrieval needs a catalogue "
                                    "with several photos of each garment (data=deepfashion_inshop, data.views>=2).")
        raise MissingPairsError(f"{len(missing)} run(s) have no per-pair results ({PAIRS}): {names}"
                                f"{' ...' if len(missing) > 5 else ''}. They were logged before per-pair results "
                                f"existed, or did not finish; run them again to compare them pair by pair.")
    return loaded



def results_artifact(column: str) -> str:
    """The table that holds a per-unit column: same-item retrieval's per query, else the per-pair one."""
    return SAME_ITEM if column.startswith(SAME_ITEM_COLUMN_PREFIX) else PAIRS


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
    ``ladder/ndcg_at_10/model`` and ``ndcg_at_10`` are ``ndcg_at_10``; ``same_item/recall_at_10/model``
    is ``same_item_recall_at_10``, a column of ``eval/same_item.csv``. Other names are taken as a
    column as they are (``compare`` then says which columns exist)."""
    if metric is None:
        return headline_metric(runs)
    if metric.startswith(SAME_ITEM_SECTION):  # same_item/recall_at_10[/model]: the per-query column
        return SAME_ITEM_COLUMN_PREFIX + metric.removeprefix(SAME_ITEM_SECTION).split("/")[0]
    parsed = parse_metric_name(metric) or parse_metric_name(HEADLINE_SECTION + metric)
    if parsed is None:
        return metric
    return parsed.column or metric_column(parsed.metric, int(headline_metric(runs).rpartition("_at_")[2]))


def compare_finished(settings: TrackingSettings, finished: list[RunRecord], metric: str | None = None,
                     recommender: str = MODEL, alpha: float = AnalysisConfig.alpha,
                     n_resamples: int = AnalysisConfig.resamples, group_by: list[str] | None = None,
                     noise: list[TrainingNoise] | None = None) -> Comparison:
    """Compare FINISHED runs by their per-pair results, with the experiment's calibrations of training
    noise (``noise``, else those stored) for configurations trained once or twice (see ``compare_runs``
    for what it raises)."""
    column = pair_column(metric, finished)
    with tempfile.TemporaryDirectory() as scratch:
        tables = load_run_pairs(settings, finished, Path(scratch), results_artifact(column))
    stored = stored_calibrations(settings) if noise is None else noise
    return compare(tables, column, recommender, alpha, n_resamples, group_by=group_by,
                   calibrations=stored)


def compare_runs(settings: TrackingSettings, sweep: str | None = None, run_ids: list[str] | None = None,
                 metric: str | None = None, recommender: str = MODEL, alpha: float = AnalysisConfig.alpha,
                 n_resamples: int = AnalysisConfig.resamples, group_by: list[str] | None = None) -> Comparison:
    """Compare the FINISHED runs of a sweep (or the given runs, or the whole experiment).

    Raises LookupError (no experiment, no sweep, no runs, runs without per-pair results),
    IncomparableRunsError and ValueError (an unknown metric) with messages that name what is wrong.
    """
    return compare_finished(settings, study_runs(settings, sweep, run_ids), metric, recommender, alpha, n_resamples,
                            group_by)


def stored_calibrations(settings: TrackingSettings) -> list[TrainingNoise]:
    """The experiment's calibrations of training noise, newest first (none in an experiment without any)."""
    return calibrations(experiment_runs(settings))


def calibrate(settings: TrackingSettings, sweep: str | None = None, run_ids: list[str] | None = None,
              metric: str | None = None, recommender: str = MODEL) -> TrainingNoise:
    """Measure the training noise of the FINISHED runs of a sweep (or the given runs) that trained one
    configuration several times on the same users and splits, and store it as a calibration run of the
    experiment. Raises CalibrationError (several configurations or strata, too few trainings) and the
    errors of ``compare_runs`` for runs that cannot be read."""
    finished = study_runs(settings, sweep, run_ids)
    column = pair_column(metric, finished)
    with tempfile.TemporaryDirectory() as scratch:
        tables = load_run_pairs(settings, finished, Path(scratch), results_artifact(column))
    noise = measure_training_noise(tables, column, recommender)
    with tracked_run(settings, run_name=f"calibration {column} ({noise.trainings} trainings)") as run:
        run.record(CalibrationResult(noise))
        return replace(noise, run_id=run.run_id)


def study_runs(settings: TrackingSettings, sweep: str | None = None, run_ids: list[str] | None = None
               ) -> list[RunRecord]:
    """The FINISHED pipeline runs of a sweep (or the given runs of it or of the experiment). Raises
    LookupError naming the sweep, the runs or the experiment when there are none."""
    sweep_id = resolve_sweep(settings, sweep)
    runs = [run for run in experiment_runs(settings, sweep_id) if is_experiment_run(run)]
    where = f"sweep {sweep_id}" if sweep_id else f"experiment {settings.experiment_name!r}"
    if run_ids:
        unknown = sorted(set(run_ids) - {run.run_id for run in runs})
        if unknown:
            known = ", ".join(f"{run.run_id} ({run.run_name})" for run in runs[::-1][:5]) or "none"
            raise LookupError(f"--runs: no such run(s) {unknown} in {where}; its runs, newest first: {known}"
                              f"{' ...' if len(runs) > 5 else ''} ({len(runs)} in all)")
        runs = [run for run in runs if run.run_id in run_ids]
    finished = finished_experiment_runs(runs)
    if not finished:
        raise LookupError(f"no FINISHED run in {where} of {settings.uri}")
    return finished


def plan_study(settings: TrackingSettings, delta: float, metric: str | None = None, sweep: str | None = None,
               options: AnalysisConfig = AnalysisConfig()) -> str:
    """Markdown: how many trainings per configuration and users a study needs to detect ``delta`` with
    ``options.power`` at ``options.alpha``, from the newest calibration of the metric (one
    configuration's training noise) and, with ``sweep``, the users' lasting preferences measured in
    that sweep's comparison. Raises LookupError when the experiment has no calibration of the metric."""
    runs = experiment_runs(settings)
    finished = finished_experiment_runs(runs)
    column = pair_column(metric, finished) if finished else (metric or "precision_at_5")
    found = [noise for noise in calibrations(runs) if noise.metric == column]
    if not found:
        raise LookupError(f"--plan: experiment {settings.experiment_name!r} has no calibration of {column}; measure "
                          f"one: python -m fashionbench.run -m model.seed=0,1,2,3,4,5,6,7, then python -m "
                          f"fashionbench.compare --calibrate --sweep latest")
    noise = found[0]
    users_variance, users_note = 0.0, ("0 assumed: the users' lasting preference for one configuration is not "
                                       "measured (pass --sweep of a comparison to measure it)")
    if sweep is not None:
        sweep_runs_ = study_runs(settings, sweep)
        with tempfile.TemporaryDirectory() as scratch:
            tables = load_run_pairs(settings, sweep_runs_, Path(scratch), results_artifact(column))
        measured = users_spread_of_differences(tables, column, noise)
        if measured is not None:
            users_variance, users_note = measured, f"measured in sweep {resolve_sweep(settings, sweep)}"
    rows = plan(noise.training_variance, noise.wobble, users_variance, delta, noise.users, options.alpha,
                options.power)
    return plan_markdown(rows, delta, noise, users_variance, users_note, options)


def users_spread_of_differences(tables: list[RunPairs], column: str, noise: TrainingNoise) -> float | None:
    """σ²_U of a configuration pair: how much the users' lasting preference for one of the first two
    configurations of ``tables`` varies, from their trainings seeded alike on their first shared stratum
    (the crossed decomposition of ``variance.components``; with one training each, the between-user
    variance of the difference less the calibration's wobble). None with fewer than two configurations."""
    records = [table.run for table in tables]
    designs = configuration_params(records)
    groups: dict[str, list[RunPairs]] = {}
    for table in tables:
        groups.setdefault(configuration_label(table.run, designs), []).append(table)
    if len(groups) < 2:
        return None
    (_, first), (_, second) = list(groups.items())[:2]
    stratum = first[0].stratum
    rows = []
    for a in first:
        b = next((b for b in second if b.stratum == stratum and replicate_key(b.run) == replicate_key(a.run)), None)
        if a.stratum != stratum or b is None:
            continue
        joined = pair_values([a], column, noise.recommender).merge(pair_values([b], column, noise.recommender),
                                                                  on=["stratum", "user_id", "category"],
                                                                  suffixes=("_a", "_b"))
        joined["value"] = joined["value_a"] - joined["value_b"]
        rows.append(user_shares(joined).rename("value").reset_index().assign(stratum=stratum,
                                                                              replicate=str(replicate_key(a.run))))
    if not rows:
        return None
    table = pd.concat(rows, ignore_index=True)
    found = components(table)
    if found.users is not None:
        return found.users
    return max(0.0, found.user_spread - 2 * noise.wobble)


def plan_markdown(rows: list[PlanRow], delta: float, noise: TrainingNoise, users_variance: float, users_note: str,
                  options: AnalysisConfig) -> str:
    """The plan as a table (trainings x users: the difference each design detects) and its answer."""
    users = sorted({row.users for row in rows})
    trainings = sorted({row.trainings for row in rows})
    cell = {(row.trainings, row.users): row for row in rows}
    table = markdown_table(["trainings per configuration", *(f"{n} users" for n in users)],
                           [[str(t), *(f"{'**' if cell[t, n].meets else ''}{cell[t, n].detectable:.4f}"
                                       f"{'**' if cell[t, n].meets else ''}" for n in users)] for t in trainings])
    enough = [row for row in rows if row.meets]
    if enough:
        cheapest = min(enough, key=lambda row: (row.trainings, row.users))
        answer = (f"To detect a difference of {delta:g} in {noise.metric} ({noise.recommender}) with "
                  f"{options.power:.0%} power at alpha = {options.alpha:g}: **{cheapest.trainings} trainings of each "
                  f"configuration (seeds) on {cheapest.users} users** (the fewest trainings, then the fewest users; "
                  f"bold: every design that does).")
    else:
        best = min(rows, key=lambda row: row.detectable)
        answer = (f"No design in the table detects {delta:g} with {options.power:.0%} power: the closest, "
                  f"{best.trainings} trainings on {best.users} users, detects {best.detectable:.4f}.")
    return "\n\n".join([
        f"**Study plan** from calibration run {noise.run_id} ({noise.trainings} trainings of {noise.configuration} "
        f"on {noise.users} users): training sd {np.sqrt(noise.training_variance):.4f} (σ²_T "
        f"{noise.training_variance:.3g}), a user's wobble from training to training σ²_E {noise.wobble:.3g}, "
        f"the users' lasting preference σ²_U {users_variance:.3g} ({users_note}).",
        "Each cell: the difference a study of two configurations detects with that many trainings of each "
        "(seeded alike) on that many users, tested with the training as the unit: SE² = 2 σ²_T / T + σ²_U / N + "
        f"2 σ²_E / (T N), on T − 1 degrees of freedom (noncentral t, power {options.power:.0%}).",
        table, answer])
