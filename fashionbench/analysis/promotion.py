"""Promotion: the best finished run registered as the champion recommender, when it earns it.

``promote`` picks the best FINISHED run of an experiment (or of one sweep) by a metric, subject
to constraints, and registers one MLflow model version (an ``mlflow.pyfunc`` model around a
recommender bundle, ``serving.bundle``) with an alias. When a champion holds the alias, the pick
replaces it only when its configuration beats the champion's under the configuration test
(``analysis.gate``); ``force`` skips the gate. Registering reads the run's files and checks
them against their hashes: no TensorFlow. ``python -m fashionbench.promote`` is its command.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from fashionbench.analysis.design import configuration_label, swept_parameters
from fashionbench.analysis.gate import GateDecision, gate
from fashionbench.analysis.study import compare_finished
from fashionbench.artifacts import (
    HEADLINE_METRIC,
    TAG_CLASSIFIER_WARNING,
    TAG_DATA_FINGERPRINT,
    TAG_GIT_COMMIT,
    ArtifactError,
)
from fashionbench.evaluation.metrics import higher_is_better as metric_direction
from fashionbench.serving.bundle import build_bundle
from fashionbench.serving.recommender import DEFAULT_ALIAS, DEFAULT_MODEL_NAME
from fashionbench.tracking.records import (
    Constraint,
    RunRecord,
    Selection,
    is_experiment_run,
    require_metric,
    resolve_constraints,
    select_runs,
)
from fashionbench.tracking.registry import (
    model_alias_version,
    register_recommender,
    registered_source_run,
    registered_version_of_run,
    set_model_alias,
)
from fashionbench.tracking.settings import TrackingSettings
from fashionbench.tracking.store import StoredRun, experiment_runs, resolve_sweep


class PromotionError(RuntimeError):
    """No run can be promoted; the message says where we looked and why nothing qualified."""


def candidates_table(selection: Selection, metric: str, constraints: tuple[Constraint, ...] = (),
                     top: int = 5) -> str:
    """The top candidates as a small text table: rank, run, name, the params the candidates
    differ in, the metric and the constrained metrics."""
    shown = selection.ranked[:top]
    params = swept_parameters(selection.ranked)
    columns = [metric, *dict.fromkeys(c.metric for c in constraints if c.metric != metric)]
    header = ["rank", "run_id", "run_name", *params, *columns]
    rows = [[str(rank), run.run_id, run.run_name or "-", *(run.params.get(p, "-") for p in params),
             *(f"{run.metrics[c]:.4f}" for c in columns)]
            for rank, run in enumerate(shown, start=1)]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
    return "\n".join(lines)


@dataclass(frozen=True)
class Promotion:
    run: RunRecord  # the pick
    version: str  # the version the alias points at now (the champion's, when it was kept)
    created: bool  # a new version was registered
    gate: GateDecision | None = None  # None: no champion to gate against, or --force
    kept: bool = False  # the champion stayed: the pick did not beat its configuration
    metric: str = HEADLINE_METRIC  # the logged key the pick was ranked by
    higher_is_better: bool = True


def champion_run(settings: TrackingSettings, model_name: str, alias: str) -> tuple[str, RunRecord] | None:
    """The version ``alias`` points at and the run it was registered from, when that run is in this
    experiment; None when there is no champion yet."""
    version = model_alias_version(settings, model_name, alias)
    if version is None:
        return None
    source = registered_source_run(settings, model_name, version)
    runs = [run for run in experiment_runs(settings) if run.run_id == source]
    if not runs:
        raise PromotionError(f"the champion ({model_name} version {version}) was registered from run {source}, which "
                             f"is not in experiment {settings.experiment_name!r}: the gate cannot test the pick "
                             f"against it; promote in that experiment, or pass --force")
    return version, runs[0]


def promote(settings: TrackingSettings, sweep_id: str | None = None, metric: str = HEADLINE_METRIC,
            higher_is_better: bool | None = None, constraints: tuple[Constraint, ...] = (),
            model_name: str = DEFAULT_MODEL_NAME, alias: str = DEFAULT_ALIAS,
            force: bool = False) -> tuple[Promotion, Selection]:
    """Register the best eligible run as a version of ``model_name`` and point ``alias`` at it, unless
    a champion holds the alias and the pick's configuration does not beat its configuration
    (``analysis.gate``; ``force`` skips the gate). ``higher_is_better`` None: the metric's direction
    from the metric registry.

    ``sweep_id="latest"`` picks the most recent sweep. Raises PromotionError when no run
    qualifies, the best one lacks an artifact, or the metric's direction is unknown; and a
    LookupError (ExperimentNotFoundError, SweepNotFoundError) for an unknown experiment or no sweep.
    """
    sweep_id = resolve_sweep(settings, sweep_id)
    runs = experiment_runs(settings, sweep_id)
    metric, constraints = require_metric(metric, runs), resolve_constraints(constraints, runs)
    if higher_is_better is None:
        higher_is_better = metric_direction(metric)
        if higher_is_better is None:
            raise PromotionError(f"--metric {metric}: whether higher is better is not known for it; pass --direction "
                                 "max or min")
    selection = select_runs(runs, metric, higher_is_better, constraints)
    if not selection.ranked:
        where = f"experiment {settings.experiment_name!r}" + (f", sweep {sweep_id}" if sweep_id else "")
        searched = sum(is_experiment_run(run) for run in runs)
        reasons = "; ".join(f"{n} {reason}" for reason, n in selection.excluded.most_common()) or "no runs"
        raise PromotionError(f"no eligible run in {where} of {settings.uri}: {searched} run(s) searched "
                             f"({reasons}); eligible runs are FINISHED, have {metric!r} and a logged model"
                             + (f" and meet {', '.join(map(str, constraints))}" if constraints else ""))
    best = selection.best
    decision = None
    current = None if force else champion_run(settings, model_name, alias)
    if current is not None and current[1].run_id != best.run_id:
        decision = gate(settings, best, current[1], metric)
        if not decision.passes:
            return Promotion(best, current[0], False, decision, True, metric, higher_is_better), selection
    version = registered_version_of_run(settings, model_name, best.run_id)
    created = version is None
    if created:
        # The bundle's classifier is the run's files, checked against their hashes: no TensorFlow here.
        with tempfile.TemporaryDirectory() as scratch:
            try:
                bundle = build_bundle(StoredRun(settings, best), Path(scratch), settings.experiment_name, metric)
                version = register_recommender(settings, model_name, bundle, best.run_id, tags={
                    "source_run_id": best.run_id, "source_run_name": best.run_name,
                    "experiment": settings.experiment_name, "selected_by": metric,
                    "direction": "max" if higher_is_better else "min", metric: best.metrics[metric],
                    "constraints": "; ".join(map(str, constraints)) or "none",
                    "gate": decision.reason if decision else ("--force" if force else "first champion"),
                    TAG_DATA_FINGERPRINT: best.tags.get(TAG_DATA_FINGERPRINT, ""),
                    TAG_GIT_COMMIT: best.tags.get(TAG_GIT_COMMIT, ""),
                })
            except ArtifactError as error:  # a file the run lacks or that is damaged: nothing registered
                raise PromotionError(str(error)) from None
    if model_alias_version(settings, model_name, alias) != version:
        set_model_alias(settings, model_name, alias, version)
    return Promotion(best, version, created, decision, False, metric, higher_is_better), selection


def evidence_lines(settings: TrackingSettings, selection: Selection, metric: str, higher_is_better: bool,
                   winner: RunRecord) -> list[str]:
    """What the paired comparison of the eligible runs' configurations says about the pick (the
    same verdict ``report`` and ``compare`` give), and a warning when the pick is tied or its
    classifier learned nothing."""
    lines = []
    if TAG_CLASSIFIER_WARNING in winner.tags:
        lines.append(f"WARNING: {winner.tags[TAG_CLASSIFIER_WARNING]}")
    if not higher_is_better:
        return lines + [f"verdict: not tested (--direction min: {metric} is not a recommendation metric)"]
    try:
        comparison = compare_finished(settings, selection.ranked, metric)
    except (LookupError, ValueError) as error:  # no per-pair results, incomparable runs, not a per-pair metric
        return lines + [f"verdict: not tested ({error})"]
    lines.append(f"verdict: {comparison.verdict()}")
    if comparison.untested:
        lines.append(f"WARNING: the promoted run's configuration was not tested against the others "
                     f"({comparison.untested}): it may have won on one training's luck.")
        return lines
    label = configuration_label(winner, comparison.swept)
    if comparison.is_tied(label) and len(comparison.tied) > 1:
        others = [other for other in comparison.tied if other != label]
        lines.append(f"WARNING: the promoted run's configuration ({label}) is not significantly better than "
                     f"{', '.join(others)}: it won on a difference the data cannot tell from noise.")
    return lines
