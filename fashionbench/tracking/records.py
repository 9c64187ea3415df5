"""Tracked runs as plain values, and the rules that select among them. No mlflow here.

Shared by ``promote`` (pick the best run), ``report`` and ``compare`` (tabulate runs): they see
runs as ``RunRecord`` values that ``tracking.store.experiment_runs`` reads from the store.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections import Counter
from dataclasses import dataclass

from fashionbench.artifacts import (
    HEADLINE_METRIC,
    SWEEP_PARENT,
    TAG_BACKBONE_STORE,
    TAG_CALIBRATION,
    TAG_MODEL_URI,
    TAG_REPORT,
    TAG_SWEEP,
    TEST_ACCURACY,
    TRAIN_SECONDS,
    random_counterpart,
)

OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z0-9_.\-/]+)\s*(>=|<=|==|>|<)\s*(-?[0-9.eE+\-]+)\s*$")
LATEST = "latest"  # --sweep latest: the most recently started sweep


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as plain values, for code that selects and tabulates runs."""

    run_id: str
    run_name: str
    status: str  # FINISHED, FAILED, RUNNING, ...
    start_time: int  # milliseconds since the epoch
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]


@dataclass(frozen=True)
class Constraint:
    """``metric op value``, e.g. ``test_accuracy >= 0.7``."""

    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """Raise ValueError naming ``--constraint`` unless ``text`` reads ``<metric><op><number>``."""
        match = _CONSTRAINT.match(text)
        if not match:
            raise ValueError(f"--constraint {text!r}: expected <metric><op><number> with op one of "
                             f"{list(OPERATORS)}, e.g. 'test_accuracy>=0.7'")
        metric, op, value = match.groups()
        try:
            return cls(metric, op, float(value))
        except ValueError:
            raise ValueError(f"--constraint {text!r}: {value!r} is not a number") from None

    def holds(self, metrics: dict[str, float]) -> bool:
        return self.metric in metrics and OPERATORS[self.op](metrics[self.metric], self.value)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:g}"


@dataclass(frozen=True)
class Selection:
    """Eligible runs best first, and why every other run was left out (reason -> count)."""

    ranked: list[RunRecord]
    excluded: Counter

    @property
    def best(self) -> RunRecord:
        return self.ranked[0]


def is_experiment_run(run: RunRecord) -> bool:
    """A run of the pipeline: not a sweep's parent run, a report's or a calibration's run, or the backbone
    store (which stores before this version kept among the experiment's runs)."""
    return (run.tags.get(TAG_SWEEP) != SWEEP_PARENT and TAG_REPORT not in run.tags and TAG_CALIBRATION not in run.tags
            and TAG_BACKBONE_STORE not in run.tags)


def finished_experiment_runs(runs: list[RunRecord]) -> list[RunRecord]:
    """The FINISHED runs of the pipeline among ``runs``, in start order."""
    return sorted((run for run in runs if is_experiment_run(run) and run.status == "FINISHED"),
                  key=lambda run: run.start_time)


def select_runs(runs: list[RunRecord], metric: str = HEADLINE_METRIC, higher_is_better: bool = True,
                constraints: tuple[Constraint, ...] = ()) -> Selection:
    """Rank the FINISHED runs that have ``metric``, a logged model and meet every constraint.

    Ties keep the earlier run first (stable sort over runs in start order).
    """
    eligible, excluded = [], Counter()
    for run in runs:
        if not is_experiment_run(run):
            continue
        if run.status != "FINISHED":
            excluded[f"status {run.status}"] += 1
        elif metric not in run.metrics:
            excluded[f"no metric {metric!r}"] += 1
        elif TAG_MODEL_URI not in run.tags:
            excluded["no logged model (tracking.log_model=false)"] += 1
        elif failed := [c for c in constraints if not c.holds(run.metrics)]:
            excluded[f"fails {failed[0]}"] += 1
        else:
            eligible.append(run)
    ranked = sorted(eligible, key=lambda run: run.metrics[metric], reverse=higher_is_better)
    return Selection(ranked, excluded)


def resolve_metric(name: str, runs: list[RunRecord]) -> str:
    """The logged key a command-line metric name means: the name itself when a run has it, else
    the one key that ends in ``/<name>`` (``test_accuracy`` is ``model/test_accuracy``). An unknown
    or ambiguous name is returned unchanged, for the caller's "no metric" message."""
    keys = set().union(*(run.metrics for run in runs)) if runs else set()
    if name in keys:
        return name
    matches = sorted(key for key in keys if key.endswith("/" + name))
    return matches[0] if len(matches) == 1 else name


def resolve_constraints(constraints: tuple[Constraint, ...], runs: list[RunRecord]) -> tuple[Constraint, ...]:
    return tuple(Constraint(require_metric(c.metric, runs, f"--constraint {c}"), c.op, c.value) for c in constraints)


def closest(name: str, known: list[str]) -> list[str]:
    """The names in ``known`` a mistyped ``name`` may have meant: those that contain it, and those
    whose whole name or last part (after ``/`` or ``.``) is spelled alike, in ``known``'s order."""
    lowered = name.lower()
    alike = set(difflib.get_close_matches(lowered, [k.lower() for k in known], n=10, cutoff=0.75))
    last = {k for k in known if difflib.get_close_matches(lowered, [re.split(r"[/.]", k)[-1].lower()], cutoff=0.75)}
    return [k for k in known if lowered in k.lower() or k.lower() in alike or k in last]


class MetricNotFoundError(LookupError):
    """A metric that no run logged (or a short name that several logged keys end in)."""


def require_metric(name: str, runs: list[RunRecord], option: str = "--metric") -> str:
    """``resolve_metric``, for a metric some run must have: raises MetricNotFoundError, in one line
    naming the option, the metric and the logged keys it could have meant, when none has it."""
    runs = [run for run in runs if is_experiment_run(run)]
    resolved = resolve_metric(name, runs)
    keys = sorted(set().union(*(run.metrics for run in runs))) if runs else []
    if resolved in keys or not runs:  # no runs: the caller says there is nothing to read
        return resolved
    endings = [key for key in keys if key.endswith("/" + name)]
    if len(endings) > 1:
        raise MetricNotFoundError(f"{option}: {name!r} could be any of {endings}; name one in full")
    close = closest(name, keys)
    listed = close or keys
    raise MetricNotFoundError(f"{option}: no run logged a metric {name!r}; "
                              f"{'the closest' if close else 'the runs have'}: {', '.join(listed[:12])}"
                              f"{' ...' if len(listed) > 12 else ''} ({len(keys)} metrics in all)")


def latest_sweep_id(runs: list[RunRecord]) -> str | None:
    """The id of the most recently started sweep parent run among ``runs``, if any."""
    parents = [r for r in runs if r.tags.get(TAG_SWEEP) == SWEEP_PARENT]
    return max(parents, key=lambda r: r.start_time).run_id if parents else None


@dataclass(frozen=True)
class SweepRow:
    """One job of a sweep as its tables show it: the run, how it ended, and its headline numbers."""

    run: RunRecord
    status: str  # the run's status, or "skipped" for an earlier run a resumed sweep reused
    test_accuracy: float | None
    metric: float | None
    random: float | None  # the random recommender's value of the metric (its floor)
    train_seconds: float | None


def sweep_rows(runs: list[RunRecord], metric: str = HEADLINE_METRIC, skipped: list[RunRecord] = ()) -> list[SweepRow]:
    """The rows of a sweep's table, in start order: its runs, and the earlier runs it skipped jobs for.
    Both the console's table at the end of a sweep and the report's sweep table are drawn from them."""
    rows = [(run, run.status) for run in runs] + [(run, "skipped") for run in skipped]
    return [SweepRow(run, status, run.metrics.get(TEST_ACCURACY), run.metrics.get(metric),
                     run.metrics.get(random_counterpart(metric)), run.metrics.get(TRAIN_SECONDS))
            for run, status in sorted(rows, key=lambda row: row[0].start_time)]


def sweep_table(children: list[RunRecord], reused: list[RunRecord], parent_id: str, status: str) -> str:
    """The sweep's jobs, one line each: swept values, status, headline metrics; skipped jobs
    (their earlier run reused) say so."""
    lines = [f"sweep {parent_id} {status}: {len(children)} run(s)"
             + (f", {len(reused)} job(s) skipped: an earlier run of their config FINISHED (tracking.resume=false "
                "runs them again)" if reused else ""),
             f"  {'job':<36} {'status':<9} {'test_accuracy':>13} {'precision_at_k':>15} {'random':>7}"]
    for row in sweep_rows(children, HEADLINE_METRIC, reused):
        cells = [f"{value:.3f}" if value is not None else "-" for value in (row.test_accuracy, row.metric, row.random)]
        lines.append(f"  {(row.run.run_name or row.run.run_id)[:36]:<36} {row.status:<9} "
                     f"{cells[0]:>13} {cells[1]:>15} {cells[2]:>7}")
    return "\n".join(lines)
