"""Where a study's noise comes from, measured: training, users, and data splits, and what they cost.

A comparison of configurations A and B has one value per (stratum, training, user): user u's share
of the difference A − B in one training of each (seeded alike) on stratum s (one data split and
one draw of users: runs with the same ``eval_fingerprint``). Its noise has four sources:

    d_stu = Δ + D_s + T_st + U_su + E_stu

- D: the data split (and the draw of users) a stratum has, shared by its trainings;
- T: training (initialisation, data order, dropout): one value per training, shared by its users;
- U: a user's lasting preference for A or B, the same in every training;
- E: how a user's result moves from one training to the next (training × user).

``components`` estimates their variances by the mean squares of the crossed training × user table
within each stratum (as in generalisability theory: Brennan, "Generalizability Theory", 2001,
ch. 3) and of the stratum means between strata; ``design_variance`` says what a study of S strata,
T trainings and N users pays of each, so ``shares`` prints where a comparison's noise comes from
and ``plan`` how many trainings and users a study needs to detect a given difference.

``TrainingNoise`` is the same decomposition for one configuration trained R times on one stratum
(a calibration): it lets a study with one training of each configuration test configurations, on
the assumption that the configurations compared train as noisily as the one calibrated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from fashionbench.analysis.schema import AnalysisConfig
from fashionbench.analysis.stats import MIN_REPLICATES, ReplicateTest, detectable_effect_size

# A per-user table's columns: stratum (eval fingerprint), replicate (which training), user, value.
TABLE_COLUMNS = ("stratum", "replicate", "user_id", "value")


def user_shares(pairs: pd.DataFrame, value: str = "value") -> pd.Series:
    """Each user's share of a replicate's mean over its pairs (``pairs``: user_id and ``value`` per
    (user, category) pair): the user's sum over the pair count, times the number of users, so that
    the mean over users is the replicate's mean over pairs (users with more pairs weigh more)."""
    sums = pairs.groupby("user_id")[value].sum()
    return sums / len(pairs) * len(sums)


@dataclass(frozen=True)
class VarianceComponents:
    """Estimated variances of the four sources (``None``: the study cannot tell this one apart)."""

    training: float | None  # σ²_T: a training's shift, shared by its users
    users: float | None  # σ²_U: a user's lasting preference (of the difference, or of the metric)
    wobble: float | None  # σ²_E: a user's result from one training to the next
    data_split: float | None  # σ²_D: a stratum's shift, shared by its trainings
    user_spread: float  # σ²_U + σ²_E: the between-user variance of a single training's values
    strata: int
    trainings: float  # per stratum (mean)
    users_per_stratum: float  # mean
    data_varies: bool = False  # whether the strata differ in their data split (else only in their users)

    def design_variance(self, strata: int, trainings: float, users: float) -> tuple[float, dict[str, float]]:
        """Var of a study's mean over ``strata`` x ``trainings`` x ``users`` and each source's part of it
        (a source the components could not separate is counted with the one it travels with)."""
        parts = {}
        if self.training is not None and self.wobble is not None:
            parts["training"] = self.training / (strata * trainings)
            parts["users"] = (self.users or 0.0) / (strata * users)
            parts["wobble"] = self.wobble / (strata * trainings * users)
        else:  # one training per stratum: users and wobble are one between-user spread
            parts["users"] = self.user_spread / (strata * users)
        if self.data_split is not None:
            parts["data split"] = self.data_split / strata
        return sum(parts.values()), parts


def components(table: pd.DataFrame, data_varies: bool = False) -> VarianceComponents:
    """Estimate the sources' variances from a per-user table (``TABLE_COLUMNS``): crossed mean squares
    within each stratum with two or more trainings (pooled over strata by degrees of freedom), and
    the between-strata spread of the stratum means less what training and users put in it."""
    within = []  # (df_r, df_u, df_e, ms_r, ms_u, ms_e, trainings, users) per stratum with >= 2 trainings
    spreads, stratum_means, sizes = [], [], []
    for _, stratum in table.groupby("stratum", sort=False):
        grid = stratum.pivot_table(index="replicate", columns="user_id", values="value", aggfunc="sum")
        grid = grid.dropna(axis=1)  # users every training of the stratum evaluated
        r, u = grid.shape
        y = grid.to_numpy(dtype=float)
        stratum_means.append(float(y.mean()))
        sizes.append((r, u))
        spreads.append(float(np.mean(y.var(axis=1, ddof=1))) if u > 1 else 0.0)
        if r >= 2 and u >= 2:
            rows, columns, grand = y.mean(axis=1), y.mean(axis=0), y.mean()
            residual = y - rows[:, None] - columns[None, :] + grand
            within.append((r - 1, u - 1, (r - 1) * (u - 1), u * np.sum((rows - grand) ** 2) / (r - 1),
                           r * np.sum((columns - grand) ** 2) / (u - 1),
                           np.sum(residual ** 2) / ((r - 1) * (u - 1)), r, u))
    trainings = float(np.mean([r for r, _ in sizes]))
    users = float(np.mean([u for _, u in sizes]))
    training = users_part = wobble = None
    if within:
        w = np.array(within)
        ms_r = np.average(w[:, 3], weights=w[:, 0])
        ms_u = np.average(w[:, 4], weights=w[:, 1])
        ms_e = np.average(w[:, 5], weights=w[:, 2])
        n_users, n_trainings = np.average(w[:, 7], weights=w[:, 0]), np.average(w[:, 6], weights=w[:, 1])
        training = max(0.0, (ms_r - ms_e) / n_users)
        users_part = max(0.0, (ms_u - ms_e) / n_trainings)
        wobble = float(ms_e)
    user_spread = float(np.mean(spreads))
    data_split = None
    if len(stratum_means) >= 2:
        between = float(np.var(stratum_means, ddof=1))
        explained = (training / trainings + (users_part or 0.0) / users + wobble / (trainings * users)
                     if training is not None else user_spread / (trainings * users) + 0.0)
        # With one training per stratum, training cannot be told from the data split: both are in it.
        data_split = max(0.0, between - explained)
    return VarianceComponents(training, users_part, wobble, data_split, user_spread, len(stratum_means), trainings,
                              users, data_varies)


def shares_text(parts: dict[str, float], data_varies: bool, separated: bool) -> str:
    """``training 62 % / users 31 % / data split 7 %``: where a variance comes from, in words."""
    total = sum(parts.values())
    if total <= 0:
        return "no noise measured"
    names = {"training": "training", "users": "users", "wobble": "user x training",
             "data split": "data split" if data_varies else "user draw"}
    if not separated and "data split" in parts:
        names["data split"] = "training + " + names["data split"] + " (one training each: not separable)"
    return " / ".join(f"{names[name]} {value / total:.0%}" for name, value in parts.items())


@dataclass(frozen=True)
class TrainingNoise:
    """How much one configuration's trainings differ on one stratum (a calibration): measured from R
    trainings (seeds) of it on the same users and splits, for one per-pair metric of one recommender."""

    metric: str  # a per-pair column: precision_at_5
    recommender: str
    stratum: str  # the eval fingerprint of the users and splits it was measured on
    configuration: str  # what was trained: configuration_label of the runs
    trainings: int  # R
    users: int  # N
    mean: float  # the metric's mean over the trainings
    mean_variance: float  # the variance of the trainings' means: σ²_T + σ²_E / N
    wobble: float  # σ²_E: MS_E of the trainings x users table
    runs: tuple[str, ...] = ()
    run_id: str = ""  # the run that stores it, once stored

    @property
    def training_sd(self) -> float:
        """The spread of the trainings' means (what one training's luck moves the metric by)."""
        return float(np.sqrt(self.mean_variance))

    @property
    def training_variance(self) -> float:
        """σ²_T: the trainings' spread less the users' wobble it averages (at least 0)."""
        return max(0.0, self.mean_variance - self.wobble / self.users)

    @classmethod
    def measure(cls, per_user: np.ndarray, metric: str, recommender: str, stratum: str, configuration: str,
                runs: Sequence[str] = ()) -> TrainingNoise:
        """From ``per_user`` (R trainings x N users, each row's mean the training's mean). Raises
        ValueError naming the trainings needed when R < MIN_REPLICATES."""
        y = np.asarray(per_user, dtype=float)
        if y.ndim != 2 or y.shape[0] < MIN_REPLICATES or y.shape[1] < 2:
            raise ValueError(f"a calibration needs at least {MIN_REPLICATES} trainings of one configuration on the "
                             f"same users (e.g. -m model.seed=0,1,2,3,4,5,6,7), got {y.shape[0]} training(s)")
        r, u = y.shape
        rows, columns, grand = y.mean(axis=1), y.mean(axis=0), y.mean()
        residual = y - rows[:, None] - columns[None, :] + grand
        wobble = float(np.sum(residual ** 2) / ((r - 1) * (u - 1)))
        return cls(metric, recommender, stratum, configuration, r, u, float(grand), float(np.var(rows, ddof=1)),
                   wobble, tuple(runs))

    def refusal(self, metric: str, recommender: str, stratum: str) -> str:
        """Why this calibration cannot serve a comparison of ``metric`` of ``recommender`` on ``stratum``
        (empty when it can)."""
        differs = [f"{name}: calibrated {mine!r}, compared {theirs!r}" for name, mine, theirs in (
            ("metric", self.metric, metric), ("recommender", self.recommender, recommender),
            ("users and splits (eval_fingerprint)", self.stratum, stratum)) if mine != theirs]
        return "; ".join(differs)


def calibrated_test(user_differences: np.ndarray, trainings: int, noise: TrainingNoise,
                    alpha: float = AnalysisConfig.alpha, power: float = AnalysisConfig.power,
                    confidence: float = 0.95) -> ReplicateTest:
    """Configuration A minus B from ``trainings`` (1 or 2) trainings of each on one stratum, with the
    noise of training taken from a calibration of that stratum.

    ``user_differences``: each user's share of the mean difference (averaged over the trainings), so
    its mean is the observed difference. With T trainings each and the calibration's spread of
    training means s² (= σ²_T + σ²_E / N) and wobble σ²_E:

        Var = 2 s² / T + max(0, S²_d − 2 σ²_E / T) / N

    the two trainings' luck (their users' wobble included) plus the users' lasting preference for
    one configuration (the between-user variance S²_d less the wobble it holds), on Satterthwaite's
    degrees of freedom (at least R − 1 of the calibration's R trainings). The calibrated spread is
    assumed to be the compared configurations' too."""
    d = np.asarray(user_differences, dtype=float)
    n = d.size
    spread = float(d.var(ddof=1)) if n > 1 else 0.0
    luck = 2 * noise.mean_variance / trainings
    lasting = max(0.0, spread - 2 * noise.wobble / trainings) / n
    variance = luck + lasting
    terms = [(luck, noise.trainings - 1)]
    if lasting > 0:
        terms += [(spread / n, n - 1), (-2 * noise.wobble / trainings / n, (noise.trainings - 1) * (n - 1))]
    denominator = sum(value ** 2 / dof for value, dof in terms)
    df = max(float(noise.trainings - 1), variance ** 2 / denominator if denominator > 0 else 0.0)
    mean = float(d.mean())
    t = scipy_stats.t
    if variance == 0:
        p_value, half = (1.0 if mean == 0 else 0.0), 0.0
    else:
        p_value = float(2 * t.sf(abs(mean) / np.sqrt(variance), df))
        half = float(t.ppf((1 + confidence) / 2, df) * np.sqrt(variance))
    training = 2 * noise.training_variance / trainings
    wobble = 2 * (noise.mean_variance - noise.training_variance) / trainings
    shares = (training / variance, lasting / variance, wobble / variance) if variance else (0.0, 0.0, 0.0)
    return ReplicateTest(mean, mean - half, mean + half, p_value, trainings, df, float(np.sqrt(variance)), *shares,
                         float(detectable_effect_size(df, alpha, power) * np.sqrt(variance)), confidence,
                         noise_from=f"calibration run {noise.run_id or '(unsaved)'}: {noise.trainings} trainings of "
                                    f"{noise.configuration}")


@dataclass(frozen=True)
class PlanRow:
    """One design: ``trainings`` per configuration on ``users`` users, and what it can detect."""

    trainings: int
    users: int
    standard_error: float
    detectable: float
    meets: bool


def plan(training_variance: float, wobble: float, users_variance: float, delta: float, users_now: int,
         alpha: float = AnalysisConfig.alpha, power: float = AnalysisConfig.power,
         trainings: Sequence[int] = (3, 4, 5, 6, 8, 10, 12, 15, 20),
         users: Sequence[int] | None = None) -> list[PlanRow]:
    """The difference each design detects with ``power`` at ``alpha``: T trainings of each of two
    configurations (seeded alike) on the same N users, tested with the training as the unit
    (``stats.replicate_test``): SE² = 2 σ²_T / T + σ²_U / N + 2 σ²_E / (T N) on T − 1 degrees of
    freedom (the conservative end: the users' part adds degrees of freedom). ``training_variance``
    (σ²_T) and ``wobble`` (σ²_E) are one configuration's (a calibration's); ``users_variance`` (σ²_U)
    is the users' lasting preference for one configuration of a pair (0 for equal ones)."""
    users = list(users or sorted({max(10, users_now // 2), *(factor * users_now for factor in (1, 2, 4, 8, 16))}))
    rows = []
    for t in trainings:
        for n in users:
            error = float(np.sqrt(2 * training_variance / t + users_variance / n + 2 * wobble / (t * n)))
            detectable = float(detectable_effect_size(t - 1, alpha, power) * error)
            rows.append(PlanRow(t, n, error, detectable, detectable <= delta))
    return rows
