"""Which configuration recommends best, with the evidence: paired statistics over runs' per-pair results.

Runs are grouped into configurations by the params a sweep varied, seeds aside; runs that share
users and held-out splits (the same ``eval_fingerprint``: in a sweep, the same seed) form a
stratum. Within a stratum every configuration is scored on exactly the same (user, category)
pairs, so configurations are compared pair by pair (fashionbench.analysis.stats):

- per configuration: the mean over strata of its mean over pairs, with a 95 % CI — a Student t
  interval over the strata's means when there are several seeds (it then includes the noise of
  training and of drawing users), else a bootstrap over users;
- per two configurations: the mean paired difference, a bootstrap CI that resamples users within
  each stratum, and a sign-flip p-value flipping all pairs of a user together; p-values are
  Holm-corrected across every comparison of the report, and the number of strata whose mean
  difference has the same sign is shown (the per-pair test holds the trained models fixed);
- per two configurations, two questions (Bouthillier et al., "Accounting for Variance in Machine
  Learning Benchmarks", MLSys 2021): are *these trained models* different for these users (the
  per-pair test above, which holds each training fixed), and does one *configuration* train
  better models than the other (``configuration_test``: the replicate, a training of each seeded
  alike, is the unit, so training noise is in it; with one or two trainings each, a calibration
  of the training noise on the same users stands in for the replicates);
- the verdict: a configuration is **best** only when the configuration test finds it better than
  every other one (Holm-adjusted); otherwise the ones it cannot be told apart from are reported as
  tied with it, with their differences, intervals and the difference the study could detect, and
  a study that cannot run the configuration test says so and what to run.

Runs that do not share users and splits cannot be compared pair by pair: ``compare`` refuses
them, naming the runs and the params that differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations

import numpy as np
import pandas as pd

from fashionbench.analysis.design import (
    SEED_PARAMS,
    USERS_AND_SPLITS,
    configuration_label,
    configuration_params,
    decides,
    replicate_key,
)
from fashionbench.analysis.schema import AnalysisConfig
from fashionbench.analysis.stats import (
    MIN_REPLICATES,
    PairedTest,
    ReplicateTest,
    holm,
    mean_confidence_interval,
    paired_test,
    replicate_test,
)
from fashionbench.analysis.variance import TrainingNoise, calibrated_test, components, user_shares
from fashionbench.artifacts import TAG_DATA_FINGERPRINT, TAG_EVAL_FINGERPRINT, TAG_GIT_COMMIT
from fashionbench.evaluation.pairs import eval_fingerprint
from fashionbench.evaluation.references import LADDER, MODEL, ORACLE, RANDOM
from fashionbench.options import Stage
from fashionbench.tracking.records import RunRecord, closest

PAIR_KEYS = ["stratum", "user_id", "category"]
DATA_OPTIONS = frozenset({Stage.DATA})


class IncomparableRunsError(ValueError):
    """Runs that cannot be compared pair by pair; the message names them and what differs."""


@dataclass(frozen=True)
class RunPairs:
    """A finished run and its per-pair results (the ``eval/pairs.csv`` artifact)."""

    run: RunRecord
    table: pd.DataFrame

    @property
    def stratum(self) -> str:
        """Who is evaluated on what: the run's eval fingerprint."""
        return self.run.tags.get(TAG_EVAL_FINGERPRINT) or eval_fingerprint(self.table, {})


@dataclass(frozen=True)
class ConfigurationSummary:
    """One configuration's metric over its runs: mean, 95 % CI, and the mean of each stratum."""

    label: str
    runs: list[str]
    mean: float
    ci_low: float
    ci_high: float
    per_stratum: dict[str, float]
    n_pairs: int
    ladder: dict[str, float]  # recommender -> mean of the metric, floor to ceiling

    @property
    def normalised(self) -> float | None:
        """(model − random) / (oracle − random) of the metric, when the ladder has both ends."""
        if RANDOM in self.ladder and ORACLE in self.ladder and self.ladder[ORACLE] != self.ladder[RANDOM]:
            return (self.ladder[MODEL] - self.ladder[RANDOM]) / (self.ladder[ORACLE] - self.ladder[RANDOM])
        return None


@dataclass(frozen=True)
class PairwiseComparison:
    """Configuration ``a`` minus ``b``, answering two questions.

    - These trainings, for these users (``test``, ``p_holm``): are the trained models of ``a``
      better than those of ``b`` on the shared (user, category) pairs? Users are resampled, the
      trained models are held fixed: training noise is not in it.
    - Configuration against configuration (``configuration``, ``configuration_p_holm``): does ``a``
      train better models than ``b``? The unit is the replicate (a training of each, seeded alike),
      so training noise is in it (``stats.replicate_test``); None when the study cannot answer it,
      and ``untested`` says why.
    """

    a: str
    b: str
    test: PairedTest
    p_holm: float
    strata_agreeing: int  # strata whose mean difference has the sign of the overall one
    configuration: ReplicateTest | None = None
    configuration_p_holm: float = 1.0
    untested: str = ""

    def significant(self, alpha: float) -> bool:
        """These trained models differ for these users (the per-pair test)."""
        return self.p_holm <= alpha and self.test.difference != 0

    def beats(self, alpha: float) -> bool:
        """Configuration ``a`` trains better models than ``b``: by the configuration test, never by
        the per-pair test alone (one training's luck is not a configuration's effect)."""
        return (self.configuration is not None and self.configuration_p_holm <= alpha
                and self.configuration.difference > 0)


@dataclass(frozen=True)
class Comparison:
    """Every configuration's summary, every pairwise comparison, and the verdict."""

    metric: str
    recommender: str
    alpha: float
    summaries: list[ConfigurationSummary]  # best mean first
    comparisons: list[PairwiseComparison]
    swept: list[str]
    n_strata: int
    stratum_labels: dict[str, str] = field(default_factory=dict)  # eval fingerprint -> "seed=0"
    best: str | None = None
    tied: list[str] = field(default_factory=list)  # with the top configuration (itself first), when no best
    untested: str = ""  # why configurations could not be tested against each other (then no best, none tied)

    def between(self, a: str, b: str) -> PairwiseComparison:
        """The comparison of a and b, oriented as a minus b."""
        for comparison in self.comparisons:
            if (comparison.a, comparison.b) == (a, b):
                return comparison
            if (comparison.b, comparison.a) == (a, b):
                test = comparison.test
                flipped = PairedTest(-test.difference, -test.ci_high, -test.ci_low, test.p_value, test.n_pairs,
                                     test.n_clusters, test.n_strata, test.confidence)
                config = comparison.configuration
                if config is not None:
                    config = replace(config, difference=-config.difference, ci_low=-config.ci_high,
                                     ci_high=-config.ci_low)
                return PairwiseComparison(a, b, flipped, comparison.p_holm, comparison.strata_agreeing, config,
                                          comparison.configuration_p_holm, comparison.untested)
        raise KeyError((a, b))

    def verdict(self) -> str:
        """One sentence a reader can act on: the best configuration, or which are tied and why."""
        if len(self.summaries) == 1:
            return f"one configuration ({self.summaries[0].label}): nothing to compare."
        top = self.summaries[0].label
        if self.untested:
            advice = "" if "train each" in self.untested else (
                f" To compare configurations, train each at least {MIN_REPLICATES} times with the same seeds (add "
                f"model.seed=0,1,2 to the sweep, e.g. -m freeze=2,8 model.seed=0,1,2).")
            return (f"cannot tell configurations apart: {self.untested}. {top} has the highest mean {self.metric} "
                    f"({self.recommender}); the per-pair test below is about these trained models for these users "
                    f"only.{advice}")
        if self.best is not None:
            tests = [c.configuration for c in self.comparisons if c.configuration is not None]
            n = min(test.n_replicates for test in tests)
            calibrated = next((test.noise_from for test in tests if test.noise_from.startswith("calibration")), "")
            unit = (f"{n} training(s) each, the noise of training from the {calibrated}" if calibrated else
                    f">= {n} trainings each (training noise included)")
            return (f"best: {self.best} beats every other configuration on {self.metric} ({self.recommender}): "
                    f"configuration test over {unit}, Holm-adjusted p <= {self.alpha:g} in each of "
                    f"{len(self.summaries) - 1} comparison(s).")
        reasons = []
        for other in self.tied[1:]:
            c = self.between(top, other)
            t = c.configuration
            seeds = f", {c.strata_agreeing} of {c.test.n_strata} seeds agreeing" if c.test.n_strata > 1 else ""
            reasons.append(f"{other} (difference {t.difference:+.4f}, 95 % CI {t.ci_low:+.4f} .. {t.ci_high:+.4f} "
                           f"over {t.n_replicates} trainings, Holm p = {c.configuration_p_holm:.3g}{seeds}; "
                           f"this study detects a difference of {t.minimum_detectable:.4f} with 80 % power)")
        return (f"no configuration is best: {top} has the highest mean {self.metric} ({self.recommender}) but "
                f"cannot be told apart from " + "; ".join(reasons) + f" at alpha = {self.alpha:g}.")

    def is_tied(self, label: str) -> bool:
        return self.best is None and label in self.tied

    def markdown(self) -> str:
        """Tables: configurations (mean ± CI, per seed, the ladder) and pairwise comparisons; the verdict."""
        strata = sorted({s for summary in self.summaries for s in summary.per_stratum},
                        key=lambda s: self.stratum_labels.get(s, s))
        seeds = {s: self.stratum_labels.get(s) or f"s{i + 1}" for i, s in enumerate(strata)}
        ladder = [name for name in LADDER if any(name in s.ladder for s in self.summaries)]
        header = ["configuration", "runs", f"{self.metric} ({self.recommender})", "95 % CI",
                  *(f"{seeds[s]}" for s in strata), *ladder, "normalised", ""]
        rows = []
        for summary in self.summaries:
            mark = "**best**" if summary.label == self.best else ("tied" if self.is_tied(summary.label) else "")
            rows.append([summary.label, str(len(summary.runs)), f"{summary.mean:.4f}",
                         f"{summary.ci_low:.4f} .. {summary.ci_high:.4f}",
                         *(_number(summary.per_stratum.get(s)) for s in strata),
                         *(_number(summary.ladder.get(name)) for name in ladder),
                         _number(summary.normalised, 3), mark])
        parts = [
            f"Metric: `{self.metric}` of the `{self.recommender}` recommender, per (user, category) pair; "
            f"{self.n_strata} stratum(s) of shared users and splits (seeds: "
            + ", ".join(f"{seeds[s]} = `{s}`" for s in strata) + "). "
            "Ladder columns: the same metric for each recommender, floor to ceiling; "
            "normalised = (model − random) / (oracle − random).",
            markdown_table(header, rows),
        ]
        if self.comparisons:
            pair_rows = [[c.a, c.b, f"{c.test.difference:+.4f}", f"{c.test.ci_low:+.4f} .. {c.test.ci_high:+.4f}",
                          f"{c.test.p_value:.3g}", f"{c.p_holm:.3g}", f"{c.strata_agreeing}/{c.test.n_strata}",
                          "yes" if c.significant(self.alpha) else "no"]
                         for c in self.comparisons]
            tested = [c for c in self.comparisons if c.configuration is not None]
            if tested:
                config_rows = [[c.a, c.b, f"{t.difference:+.4f}", f"{t.ci_low:+.4f} .. {t.ci_high:+.4f}",
                                f"{t.p_value:.3g}", f"{c.configuration_p_holm:.3g}", str(t.n_replicates),
                                variance_shares(t), f"{t.minimum_detectable:.4f}",
                                "yes" if c.configuration_p_holm <= self.alpha and t.difference != 0 else "no"]
                               for c in tested for t in [c.configuration]]
                parts += [
                    "**Configuration against configuration** (the verdict; training noise included): does a "
                    "configuration train better models? One paired difference per replicate (a training of each "
                    "configuration, seeded alike), Student t with the replicate as the unit (Bouthillier et al., "
                    "MLSys 2021): over the trainings, the users' sampling error added where every training has "
                    "the same users; over the strata (data splits) where the trainings lie on several; or, with "
                    "one or two trainings each, against the training noise a calibration measured on these users "
                    "and splits. Holm-corrected. 'variance from' splits the squared standard error by source "
                    "(user x training: how a user's result moves between trainings); 'detectable' is the "
                    "difference this study finds with 80 % power at the alpha.",
                    markdown_table(["a", "b", "difference", "95 % CI", "p", "Holm p", "trainings",
                                    "variance from", "detectable", f"significant at {self.alpha:g}"],
                                   config_rows),
                ]
            parts += [
                "**These trainings, for these users** (not a verdict on configurations): paired differences "
                "(a − b) over shared pairs, 95 % bootstrap CI resampling users within each seed, two-sided "
                "sign-flip p-value flipping all pairs of a user together, Holm-corrected over all "
                f"{len(self.comparisons)} comparison(s); 'seeds agreeing' counts the seeds whose mean difference "
                "has the same sign. It holds the trained models fixed: training noise is not in it.",
                markdown_table(["a", "b", "difference", "95 % CI", "p", "Holm p", "seeds agreeing",
                                 f"significant at {self.alpha:g}"], pair_rows),
            ]
        parts.append(f"**Verdict:** {self.verdict()}")
        return "\n\n".join(parts)


def compare(runs: Sequence[RunPairs], metric: str, recommender: str = MODEL, alpha: float = AnalysisConfig.alpha,
            n_resamples: int = AnalysisConfig.resamples, seed: int = AnalysisConfig.seed,
            group_by: Sequence[str] | None = None, calibrations: Sequence[TrainingNoise] = ()) -> Comparison:
    """Compare the configurations of ``runs`` on the per-pair ``metric`` (a column of the pair table,
    e.g. ``precision_at_5``) of ``recommender``. Configurations are the runs' values of
    ``group_by`` (default: the params the runs differ in, seeds aside); ``group_by=["model.seed"]``
    compares trainings of one configuration with each other (an A/A test of training noise).

    Raises IncomparableRunsError when configurations do not share users and splits, and
    ValueError for a metric or recommender the tables do not have.
    """
    if not runs:
        raise ValueError("no runs to compare")
    for run in runs:
        if metric not in run.table.columns:
            raise ValueError(f"--metric {metric!r}: run {run.run.run_id} has no such per-pair column; it has "
                             f"{[c for c in run.table.columns if '_at_' in c]}")
    if group_by:
        params = set().union(*(r.run.params for r in runs))
        unknown = [p for p in group_by if p not in params]
        if unknown:
            close = sorted({p for u in unknown for p in closest(u, sorted(params))})
            raise ValueError(f"--group-by: no run has the param(s) {unknown}; "
                             + (f"the closest: {', '.join(close[:12])}" if close else
                                f"the runs have {', '.join(sorted(params)[:12])} ... ({len(params)} params)"))
    swept = list(group_by) if group_by else configuration_params([r.run for r in runs])
    groups: dict[str, list[RunPairs]] = {}
    for run in runs:
        groups.setdefault(configuration_label(run.run, swept), []).append(run)
    _check_comparable(groups)

    values = {label: pair_values(members, metric, recommender) for label, members in groups.items()}
    summaries = sorted((_summarise(label, members, values[label], metric, seed, n_resamples)
                        for label, members in groups.items()), key=lambda s: -s.mean)
    order = [s.label for s in summaries]
    tests = []
    for a, b in combinations(order, 2):
        joined = values[a].merge(values[b], on=PAIR_KEYS, suffixes=("_a", "_b"))
        difference = joined["value_a"] - joined["value_b"]
        test = paired_test(difference.to_numpy(), joined["user_id"].to_numpy(), joined["stratum"].to_numpy(),
                           n_resamples=n_resamples, seed=seed)
        per_stratum = difference.groupby(joined["stratum"]).mean()
        agreeing = int((np.sign(per_stratum) == np.sign(test.difference)).sum())
        configuration, untested = configuration_test(groups[a], groups[b], metric, recommender, alpha,
                                                     calibrations)
        tests.append((a, b, test, agreeing, configuration, untested))
    adjusted = holm([t[2].p_value for t in tests]) if tests else []
    tested = [i for i, t in enumerate(tests) if t[4] is not None]
    config_adjusted = dict(zip(tested, holm([tests[i][4].p_value for i in tested]), strict=True)) if tested else {}
    comparisons = [PairwiseComparison(a, b, test, float(p), agreeing, configuration,
                                      float(config_adjusted.get(i, 1.0)), untested)
                   for i, ((a, b, test, agreeing, configuration, untested), p) in enumerate(zip(tests, adjusted,
                                                                                                 strict=True))]
    result = Comparison(metric, recommender, alpha, summaries, comparisons, swept,
                        len({r.stratum for r in runs}), stratum_labels(runs))
    top = order[0]
    beaten = [result.between(top, other) for other in order[1:]]
    untested = next((c.untested for c in beaten if c.configuration is None), "")
    if untested:
        return replace(result, untested=untested)
    if beaten and all(c.beats(alpha) for c in beaten):
        return replace(result, best=top)
    tied = [top] + [c.b for c in beaten if not c.beats(alpha)]
    return replace(result, tied=tied if len(order) > 1 else [])


def configuration_test(members_a: list[RunPairs], members_b: list[RunPairs], metric: str, recommender: str,
                       alpha: float, calibrations: Sequence[TrainingNoise] = ()) -> tuple[ReplicateTest | None, str]:
    """Configuration ``a`` minus ``b`` with the training in its noise, or None and why the study cannot
    answer it. Replicates are trainings of each configuration seeded alike (the same seed params);
    the test depends on how they lie on strata (data splits and draws of users):

    - all on one stratum, >= MIN_REPLICATES of them: ``stats.replicate_test`` over the trainings, the
      users' sampling error added (users shared by every training);
    - all on one stratum, fewer: with a calibration of that stratum, metric and recommender,
      ``variance.calibrated_test``; without one, untested;
    - on several strata: the strata are the unit (a t test over the strata's mean differences, their
      trainings averaged), >= MIN_REPLICATES strata.
    """
    by_key_a, by_key_b = _by_replicate(members_a), _by_replicate(members_b)
    shared = sorted(set(by_key_a) & set(by_key_b), key=str)
    if not shared:
        return None, ("each configuration was trained once, and one training's luck is not a configuration's effect"
                      if max(len(by_key_a), len(by_key_b)) <= 1 else
                      "the configurations share no training seed (replicates of each, seeded alike)")
    rows, differences, stratum_of = [], {}, {}
    for key in shared:
        joined = pair_values(by_key_a[key], metric, recommender).merge(
            pair_values(by_key_b[key], metric, recommender), on=PAIR_KEYS, suffixes=("_a", "_b"))
        joined["value"] = joined["value_a"] - joined["value_b"]
        differences[key] = float(joined["value"].mean())
        stratum = stratum_of[key] = joined["stratum"].iat[0]
        rows.append(user_shares(joined).rename("value").reset_index().assign(stratum=stratum, replicate=str(key)))
    table = pd.concat(rows, ignore_index=True)
    strata = list(dict.fromkeys(table["stratum"]))
    data_varies = _data_varies([r.run for r in members_a + members_b])
    if len(strata) == 1:
        per_user = table.pivot_table(index="replicate", columns="user_id", values="value", aggfunc="sum",
                                     fill_value=0.0).loc[[str(key) for key in shared]].to_numpy()
        if len(shared) >= MIN_REPLICATES:
            return replicate_test([differences[key] for key in shared], per_user, alpha=alpha), ""
        usable = [noise for noise in calibrations if not noise.refusal(metric, recommender, strata[0])]
        if usable:
            return calibrated_test(per_user.mean(axis=0), len(shared), usable[0], alpha=alpha), ""
        times = {1: "once", 2: "twice"}[len(shared)]
        reason = (f"each configuration was trained {times}, and a training's luck is not a configuration's effect; "
                  f"train each >= {MIN_REPLICATES} times with the same seeds (e.g. add model.seed=0,1,2 to the "
                  f"sweep), or calibrate the training noise of these users and splits (compare --calibrate)")
        if calibrations:
            reason += "; the calibration(s) stored cannot serve: " + " | ".join(
                f"run {noise.run_id}: {noise.refusal(metric, recommender, strata[0])}" for noise in calibrations)
        return None, reason
    if len(strata) < MIN_REPLICATES:
        return None, (f"the trainings lie on {len(strata)} data splits or draws of users (strata), and the strata "
                      f"are the unit of the configuration test: it needs >= {MIN_REPLICATES} (e.g. seed=0,1,2)")
    means = [float(np.mean([differences[key] for key in shared if stratum_of[key] == s])) for s in strata]
    result = replicate_test(means, alpha=alpha)
    found = components(table, data_varies)
    _, parts = found.design_variance(len(strata), found.trainings, found.users_per_stratum)
    total = sum(parts.values()) or 1.0
    return replace(result, share_training=parts.get("training", 0.0) / total,
                   share_users=(parts.get("users", 0.0)) / total, share_interaction=parts.get("wobble", 0.0) / total,
                   share_data=parts.get("data split", 0.0) / total,
                   noise_from="" if found.training is not None else "training and data split not separable"), ""


def _data_varies(runs: Sequence[RunRecord]) -> bool:
    """Whether the runs differ in an option that decides the data (their strata are data splits)."""
    params = set().union(*(run.params for run in runs))
    return any(len({run.params.get(p) for run in runs}) > 1 for p in params if decides(p, DATA_OPTIONS))


def _by_replicate(members: list[RunPairs]) -> dict[tuple, list[RunPairs]]:
    grouped: dict[tuple, list[RunPairs]] = {}
    for run in members:
        grouped.setdefault(replicate_key(run.run), []).append(run)
    return grouped


def stratum_labels(runs: Sequence[RunPairs]) -> dict[str, str]:
    """A readable name per stratum: the seed params that differ between strata (``seed=1``)."""
    by_stratum = {run.stratum: run.run for run in runs}
    varying, seen = [], set()
    for param in SEED_PARAMS:  # one name per group of seeds that vary together (seed drives data.seed, ...)
        column = tuple(r.params.get(param) for r in by_stratum.values())
        if len(set(column)) > 1 and column not in seen:
            seen.add(column)
            varying.append(param)
    return {stratum: " ".join(f"{p}={run.params.get(p)}" for p in varying) for stratum, run in by_stratum.items()
            if varying}


def _check_comparable(groups: dict[str, list[RunPairs]]) -> None:
    """Every configuration must have been evaluated on the same strata (users and splits)."""
    strata = {label: {run.stratum for run in members} for label, members in groups.items()}
    labels = list(groups)
    for other in labels[1:]:
        if strata[other] == strata[labels[0]]:
            continue
        a, b = labels[0], other
        only_a = [r for r in groups[a] if r.stratum not in strata[b]]
        only_b = [r for r in groups[b] if r.stratum not in strata[a]]
        pairs_a, pairs_b = (only_a or groups[a])[0], (only_b or groups[b])[0]
        run_a, run_b = pairs_a.run, pairs_b.run
        differing = sorted(p for p in set(run_a.params) | set(run_b.params)
                           if decides(p, USERS_AND_SPLITS) and run_a.params.get(p) != run_b.params.get(p))
        tags = [t for t in (TAG_DATA_FINGERPRINT, TAG_GIT_COMMIT) if run_a.tags.get(t) != run_b.tags.get(t)]
        what = ", ".join(f"{p}: {run_a.params.get(p, '–')} vs {run_b.params.get(p, '–')}" for p in differing)
        what = what or ", ".join(f"{t}: {run_a.tags.get(t)} vs {run_b.tags.get(t)}" for t in tags) or \
            "the same options (their users or splits were drawn differently)"
        raise IncomparableRunsError(
            f"runs {run_a.run_id} ({a}) and {run_b.run_id} ({b}) do not share users and held-out splits "
            f"(eval_fingerprint {pairs_a.stratum} vs {pairs_b.stratum}): {what}. Compare runs of one sweep, or runs "
            f"that differ only in model, training or index settings.")


def pair_values(members: list[RunPairs], metric: str, recommender: str) -> pd.DataFrame:
    """The configuration's value per (stratum, user, category): runs of one stratum averaged."""
    frames = []
    for run in members:
        rows = run.table[run.table["recommender"] == recommender]
        if rows.empty:
            raise ValueError(f"run {run.run.run_id} has no rows for the recommender {recommender!r}")
        frames.append(rows[["user_id", "category"]].assign(stratum=run.stratum, value=rows[metric].to_numpy()))
    return pd.concat(frames).groupby(PAIR_KEYS, as_index=False)["value"].mean()


def _summarise(label: str, members: list[RunPairs], values: pd.DataFrame, metric: str, seed: int,
               n_resamples: int) -> ConfigurationSummary:
    per_stratum = values.groupby("stratum")["value"].mean()
    if len(per_stratum) > 1:
        mean, low, high = mean_confidence_interval(per_stratum.to_numpy())
    else:
        test = paired_test(values["value"].to_numpy(), values["user_id"].to_numpy(), n_resamples=n_resamples,
                           seed=seed)
        mean, low, high = test.difference, test.ci_low, test.ci_high
    tables = pd.concat([run.table.assign(stratum=run.stratum) for run in members])
    ladder = {name: float(rows.groupby("stratum")[metric].mean().mean())
              for name, rows in tables.groupby("recommender")}
    return ConfigurationSummary(label, [r.run.run_id for r in members], float(mean), float(low), float(high),
                                {str(k): float(v) for k, v in per_stratum.items()}, len(values),
                                {name: ladder[name] for name in LADDER if name in ladder})


def variance_shares(test: ReplicateTest) -> str:
    """``training 60 % / users 30 % / user x training 10 %``: where a configuration test's noise comes from."""
    training = "training + data split" if test.noise_from == "training and data split not separable" else "training"
    parts = [(training, test.share_training), ("users", test.share_users), ("user x training", test.share_interaction),
             ("data split", test.share_data)]
    text = " / ".join(f"{name} {share:.0%}" for name, share in parts if share > 0.005) or "none measured"
    return text + (f" ({test.noise_from})" if test.noise_from.startswith("calibration") else "")


def _number(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or (isinstance(value, float) and np.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
