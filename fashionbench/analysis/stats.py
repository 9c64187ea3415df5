"""Paired statistics for comparing two recommenders (or configurations) on the same users.

Two systems evaluated on the same (user, category) pairs give one paired difference per pair.
The pairs of one user are not independent (a user who is easy to recommend for is easy for
every category), so, as IR and RecSys evaluation do with queries and users, every resampling
here draws or flips whole users (clusters), never single pairs:

- ``paired_test``: the mean paired difference, a percentile bootstrap CI that resamples
  users within each stratum (e.g. the seed of a run pair), and a sign-flip randomisation
  p-value that flips all pairs of a user together.
- ``holm``: Holm's step-down adjustment when several comparisons are tested at once.
- ``mean_confidence_interval``: a Student t interval over independent replicates
  (e.g. one mean per seed).
- ``replicate_test``: configuration A minus B with the noise of training in it: one paired
  difference per replicate (a training of each configuration on the same users and splits),
  tested with the replicate as the unit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Integral

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from scipy.optimize import brentq

from fashionbench.analysis.schema import AnalysisConfig

# Largest index/sign matrix (resamples x clusters) built at once: bounds memory for many
# users while keeping each block a single vectorised numpy operation.
_MAX_BLOCK_ELEMENTS = 1 << 22
# |T*| >= |T_obs| up to rounding: the all-plus sign pattern reproduces T_obs by a different
# summation order, and must count as "at least as extreme".
_TIE_TOLERANCE = 1e-12


@dataclass(frozen=True)
class PairedTest:
    """The outcome of ``paired_test``: A minus B, with its uncertainty."""

    difference: float  # mean paired difference (mean of stratum means when stratified)
    ci_low: float  # percentile bootstrap CI of the difference
    ci_high: float
    p_value: float  # two-sided sign-flip (randomisation) p-value
    n_pairs: int
    n_clusters: int  # users (clusters) across all strata
    n_strata: int
    confidence: float  # e.g. 0.95


def paired_test(differences, clusters, strata=None, *, n_resamples: int = AnalysisConfig.resamples,
                confidence: float = 0.95,
                seed: int = 0) -> PairedTest:
    """Test whether the mean paired difference of two systems is zero, resampling whole clusters.

    ``differences[i]`` is metric(A) - metric(B) on pair i (one (user, category) pair);
    ``clusters[i]`` labels its user; ``strata[i]`` (optional) labels the stratum, e.g. the
    seed of the run pair. A cluster is a (stratum, label) pair: the same user id under two
    seeds is two clusters, resampled and flipped independently.

    The statistic is the mean over pairs; with strata, the mean over strata of each
    stratum's mean over its pairs, so every stratum weighs the same.

    CI: percentile bootstrap (Efron & Tibshirani 1993, ch. 13) of the cluster bootstrap
    (Davison & Hinkley 1997, sec. 3.8; Field & Welsh 2007): clusters are drawn with
    replacement within each stratum and bring all their pairs along.

    p-value: two-sided randomisation test as recommended for IR by Smucker, Allan &
    Carterette (CIKM 2007). Under H0 each cluster's differences are symmetric around zero,
    so all signs of a cluster flip together with an independent fair coin. When
    ``2**n_clusters <= n_resamples`` every sign pattern is enumerated and the p-value is
    exact; otherwise ``n_resamples`` random patterns give p = (1 + #extreme) / (1 + n_resamples),
    which keeps the test valid (Phipson & Smyth 2010).

    Deterministic for a given ``seed``. Raises ValueError, naming the argument, when the
    lengths differ, there are no pairs, a difference is not finite, a label is missing,
    ``n_resamples`` < 1 or ``confidence`` is not in (0, 1).
    """
    d = np.asarray(differences, dtype=float)
    if d.ndim != 1:
        raise ValueError(f"differences: expected a 1-D array, got shape {d.shape}")
    if d.size == 0:
        raise ValueError("differences: expected at least one pair, got none")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"differences: expected finite values, got {np.count_nonzero(~np.isfinite(d))} NaN/inf")
    label_codes = _label_codes(clusters, "clusters", d.size)
    stratum_codes = np.zeros(d.size, dtype=np.int64) if strata is None else _label_codes(strata, "strata", d.size)
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, Integral) or n_resamples < 1:
        raise ValueError(f"n_resamples: expected a positive integer, got {n_resamples!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    n_resamples = int(n_resamples)

    # Cluster identity is (stratum, label): one code per distinct combination.
    _, cluster_of_pair = np.unique(stratum_codes * (label_codes.max() + 1) + label_codes, return_inverse=True)
    n_clusters = int(cluster_of_pair.max()) + 1
    cluster_sum = np.bincount(cluster_of_pair, weights=d, minlength=n_clusters)
    cluster_size = np.bincount(cluster_of_pair, minlength=n_clusters).astype(float)
    stratum_of_cluster = np.empty(n_clusters, dtype=np.int64)
    stratum_of_cluster[cluster_of_pair] = stratum_codes
    n_strata = int(stratum_of_cluster.max()) + 1
    pairs_in_stratum = np.bincount(stratum_codes, minlength=n_strata)

    # The statistic is linear in the cluster sums: T = sum_c w_c, which makes a sign flip T* = signs @ w.
    weight = cluster_sum / (pairs_in_stratum[stratum_of_cluster] * n_strata)
    observed = float(weight.sum())

    rng = np.random.default_rng(seed)
    low, high = _cluster_bootstrap_interval(cluster_sum, cluster_size, stratum_of_cluster, n_strata,
                                            n_resamples, confidence, rng)
    p_value = _sign_flip_p_value(weight, observed, n_resamples, rng)
    return PairedTest(difference=observed, ci_low=low, ci_high=high, p_value=p_value, n_pairs=int(d.size),
                      n_clusters=n_clusters, n_strata=n_strata, confidence=float(confidence))


def holm(p_values) -> np.ndarray:
    """Holm's (1979, Scand. J. Statistics 6:65-70) step-down adjusted p-values, in the given order.

    The i-th smallest p-value is multiplied by (m - i + 1), made monotone along the sorted
    order and capped at 1; rejecting where the adjusted value <= alpha controls the
    family-wise error rate at alpha. Raises ValueError naming ``p_values`` for values
    outside [0, 1] or NaN.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values: expected a 1-D array, got shape {p.shape}")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError(f"p_values: expected values in [0, 1], got {p.tolist()}")
    order = np.argsort(p, kind="stable")
    multipliers = np.arange(p.size, 0, -1)
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(multipliers * p[order])) if p.size else p
    adjusted = np.empty_like(p)
    adjusted[order] = adjusted_sorted
    return adjusted


def mean_confidence_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): Student t interval of the mean of independent replicates.

    Meant for a handful of independent runs (e.g. one mean per seed), where the t
    distribution with n - 1 degrees of freedom accounts for estimating the spread from so
    few values. With one value the spread is unknown: low and high are NaN. Raises
    ValueError naming ``values`` when empty or not finite, ``confidence`` when not in (0, 1).
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"values: expected a non-empty 1-D array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"values: expected finite values, got {x.tolist()}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    mean = float(x.mean())
    if x.size == 1:
        return mean, float("nan"), float("nan")
    half_width = scipy_stats.t.ppf((1 + confidence) / 2, df=x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return mean, float(mean - half_width), float(mean + half_width)


# The fewest replicates (trainings of each configuration) ``replicate_test`` accepts: with two, the
# spread between trainings rests on one degree of freedom and the test has almost no power.
MIN_REPLICATES = 3


class TooFewReplicatesError(ValueError):
    """A configuration test asked of fewer replicates than it needs; the message says how many."""


@dataclass(frozen=True)
class ReplicateTest:
    """The outcome of ``replicate_test``: configuration A minus B, training noise included."""

    difference: float  # mean over replicates of the paired difference
    ci_low: float  # Student t interval
    ci_high: float
    p_value: float  # two-sided t test
    n_replicates: int
    df: float
    standard_error: float
    # Of the variance of the difference: the spread between trainings (with the users and splits
    # each replicate drew, when they draw their own), the users' lasting preferences (users shared by
    # every replicate), and what is left (how a user's result moves from training to training).
    share_training: float
    share_users: float
    share_interaction: float
    minimum_detectable: float  # the true difference found with ``power`` at ``alpha``, this study as run
    confidence: float
    # Where the noise of training came from when the study could not measure it (a calibration run).
    noise_from: str = ""
    # Of the variance: the data split (strata drawn with their own data and users), where they vary.
    share_data: float = 0.0


def replicate_test(replicate_differences, per_user=None, *, alpha: float = AnalysisConfig.alpha,
                   power: float = AnalysisConfig.power,
                   confidence: float = 0.95) -> ReplicateTest:
    """Test whether configuration A trains better models than B, with the replicate as the unit.

    ``replicate_differences[r]`` is A's mean metric minus B's over the shared (user, category) pairs
    of replicate r: one training of each configuration (seeded alike) on the same users and splits.
    A replicate that draws its own seeds for everything (model, data, users) carries every source of
    noise, so the spread of the replicates is the whole uncertainty (Bouthillier et al., "Accounting
    for Variance in Machine Learning Benchmarks", MLSys 2021: re-randomise every source of variation
    and compare over the replicates): the standard error is s / sqrt(R), with R - 1 degrees of freedom.

    When every replicate has the same users, their sampling error is common to all replicates and
    their spread cannot show it. ``per_user`` (R x N: user i's share of replicate r's difference,
    scaled so that each row's mean is ``replicate_differences[r]``) then gives the two-way crossed
    random-effects decomposition (replicates x users, as in generalisability theory): with the mean
    squares of replicates, users and residual, Var(mean) = (MS_r + max(0, MS_u - MS_e)) / (R N): the
    replicates' spread, as the t test over replicates has it, plus the users' lasting part it cannot
    see, on Satterthwaite's degrees of freedom (at least R - 1).

    The minimum detectable difference is ``detectable_effect_size`` (the exact power of the
    two-sided t test, from the noncentral t) times the standard error. Raises TooFewReplicatesError for fewer than
    MIN_REPLICATES replicates, ValueError naming the argument for values that are not finite,
    a ``per_user`` that does not match, or options out of range.
    """
    d = np.asarray(replicate_differences, dtype=float)
    if d.ndim != 1:
        raise ValueError(f"replicate_differences: expected a 1-D array, got shape {d.shape}")
    if d.size < MIN_REPLICATES:
        raise TooFewReplicatesError(f"{d.size} replicate(s): the configuration test needs at least {MIN_REPLICATES} "
                                    "trainings of each configuration, seeded alike")
    if not np.all(np.isfinite(d)):
        raise ValueError(f"replicate_differences: expected finite values, got {d.tolist()}")
    for name, value in (("alpha", alpha), ("power", power), ("confidence", confidence)):
        if not 0 < value < 1:
            raise ValueError(f"{name}: expected a number in (0, 1), got {value!r}")
    n = int(d.size)
    if per_user is None:
        variance = float(d.var(ddof=1)) / n
        df = float(n - 1)
        parts = (variance, 0.0, 0.0)
    else:
        variance, df, parts = _crossed_variance(np.asarray(per_user, dtype=float), d)
    mean = float(d.mean())
    t = scipy_stats.t
    if variance == 0:  # every replicate and user agrees exactly: an exact difference, or none
        p_value, half_width, shares = (1.0 if mean == 0 else 0.0), 0.0, (0.0, 0.0, 0.0)
    else:
        p_value = float(2 * t.sf(abs(mean) / np.sqrt(variance), df))
        half_width = float(t.ppf((1 + confidence) / 2, df) * np.sqrt(variance))
        shares = tuple(part / variance for part in parts)
    detectable = float(detectable_effect_size(df, alpha, power) * np.sqrt(variance))
    return ReplicateTest(mean, mean - half_width, mean + half_width, p_value, n, df, float(np.sqrt(variance)),
                         *shares, detectable, float(confidence))


def detectable_effect_size(df: float, alpha: float = AnalysisConfig.alpha,
                           power: float = AnalysisConfig.power) -> float:
    """The true difference, in standard errors, that a two-sided t test at ``alpha`` with ``df``
    degrees of freedom rejects with probability ``power``: the noncentrality at which
    P(|T| > t_{1-alpha/2}) = power for T ~ noncentral t(df) (Cohen 1988, ch. 2). With few
    degrees of freedom it is well above the normal approximation's 2.8."""
    critical = scipy_stats.t.ppf(1 - alpha / 2, df)

    def shortfall(ncp: float) -> float:
        lower = scipy_stats.nct.cdf(-critical, df, ncp)  # the wrong tail: tiny, and NaN where it underflows
        return scipy_stats.nct.sf(critical, df, ncp) + (0.0 if np.isnan(lower) else lower) - power

    return float(brentq(shortfall, 0.0, 40.0))


def _crossed_variance(y: np.ndarray, d: np.ndarray) -> tuple[float, float, tuple[float, float, float]]:
    """Var of the grand mean of a replicates x users table with crossed random effects, its
    Satterthwaite degrees of freedom (at least R - 1), and the variance's parts (replicates, users,
    residual)."""
    if y.ndim != 2 or y.shape[0] != d.size or y.shape[1] < 2 or not np.all(np.isfinite(y)) \
            or not np.allclose(y.mean(axis=1), d):
        raise ValueError(f"per_user: expected a finite {d.size} x N table (N >= 2 users) whose row means are the "
                         f"replicate differences, got shape {y.shape}")
    r, u = y.shape
    grand = y.mean()
    rows, columns = y.mean(axis=1), y.mean(axis=0)
    ms_rep = u * np.sum((rows - grand) ** 2) / (r - 1)
    ms_users = r * np.sum((columns - grand) ** 2) / (u - 1)
    residual = y - rows[:, None] - columns[None, :] + grand
    ms_error = np.sum(residual ** 2) / ((r - 1) * (u - 1))
    # The replicates' spread (MS_r, on R - 1 degrees of freedom) measures training and each user's
    # training-to-training wobble together, exactly as the t test over replicates does; it is not
    # clipped to the wobble's share, which would put a floor under the standard error that a t
    # reference on R - 1 degrees of freedom then makes far too cautious. The users' lasting part
    # (MS_u - MS_e) / (R N), clipped at zero, is what the spread cannot see.
    spread = ms_rep / (r * u)
    interaction = min(ms_error, ms_rep) / (r * u)
    training = spread - interaction
    users = max(0.0, ms_users - ms_error) / (r * u)
    variance = spread + users
    # Satterthwaite (1946) for MS_r + (MS_u - MS_e), never fewer than the replicates' R - 1.
    terms = [(ms_rep, r - 1)] + ([(ms_users, u - 1), (-ms_error, (r - 1) * (u - 1))] if users else [])
    denominator = sum(value ** 2 / dof for value, dof in terms)
    df = (variance * r * u) ** 2 / denominator if denominator > 0 else float(r - 1)
    return float(variance), float(max(r - 1, df)), (float(training), float(users), float(interaction))


def clustered_standard_error(values, clusters) -> float:
    """The standard error of the mean of ``values`` when the values of one cluster (a user's
    pairs) are not independent: the cluster-robust (sandwich) variance of a mean,
    G / (G - 1) * sum_g (S_g - n_g * mean)^2 / n^2 for G clusters with sums S_g and sizes n_g.
    0 for a single cluster (no spread to measure)."""
    x = np.asarray(values, dtype=float)
    codes = _label_codes(clusters, "clusters", x.size)
    _, cluster = np.unique(codes, return_inverse=True)
    groups = int(cluster.max()) + 1 if x.size else 0
    if groups < 2:
        return 0.0
    sums = np.bincount(cluster, weights=x, minlength=groups)
    sizes = np.bincount(cluster, minlength=groups)
    residual = sums - sizes * x.mean()
    return float(np.sqrt(groups / (groups - 1) * np.sum(residual ** 2)) / x.size)


def _label_codes(labels, name: str, n: int) -> np.ndarray:
    """Integer codes of hashable labels (ints, strings, tuples); ValueError naming ``name``."""
    # A Series of objects keeps tuples as single labels instead of widening them into columns.
    series = pd.Series(list(labels), dtype=object)
    if len(series) != n:
        raise ValueError(f"{name}: expected one label per difference ({n}), got {len(series)}")
    if series.isna().any():
        raise ValueError(f"{name}: expected a label for every pair, got {int(series.isna().sum())} missing")
    codes, _ = pd.factorize(series)
    return codes.astype(np.int64)


def _blocks(n_resamples: int, width: int) -> Iterator[int]:
    """Sizes of consecutive blocks of resamples whose (block x width) matrix stays bounded."""
    size = max(1, _MAX_BLOCK_ELEMENTS // max(width, 1))
    for start in range(0, n_resamples, size):
        yield min(size, n_resamples - start)


def _cluster_bootstrap_interval(cluster_sum: np.ndarray, cluster_size: np.ndarray, stratum_of_cluster: np.ndarray,
                                n_strata: int, n_resamples: int, confidence: float,
                                rng: np.random.Generator) -> tuple[float, float]:
    """Percentile interval of the statistic over cluster resamples drawn within each stratum."""
    replicates = np.zeros(n_resamples)
    for stratum in range(n_strata):
        members = np.flatnonzero(stratum_of_cluster == stratum)
        sums, sizes = cluster_sum[members], cluster_size[members]
        start = 0
        for block in _blocks(n_resamples, members.size):
            drawn = rng.integers(0, members.size, size=(block, members.size))
            # A resample's stratum mean is over its pairs: drawn clusters differ in size.
            replicates[start:start + block] += sums[drawn].sum(axis=1) / sizes[drawn].sum(axis=1)
            start += block
    replicates /= n_strata
    alpha = 1 - confidence
    low, high = np.quantile(replicates, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def _sign_flip_p_value(weight: np.ndarray, observed: float, n_resamples: int, rng: np.random.Generator) -> float:
    """Two-sided p-value of T = sum(weight) under independent sign flips of each cluster's weight."""
    n_clusters = weight.size
    threshold = abs(observed) - _TIE_TOLERANCE
    if 2 ** n_clusters <= n_resamples:
        patterns = np.arange(2 ** n_clusters)[:, None] >> np.arange(n_clusters) & 1
        flipped = (2 * patterns - 1) @ weight
        return float(np.count_nonzero(np.abs(flipped) >= threshold) / 2 ** n_clusters)
    extreme = 0
    for block in _blocks(n_resamples, n_clusters):
        signs = 2.0 * rng.integers(0, 2, size=(block, n_clusters), dtype=np.int8) - 1.0
        extreme += int(np.count_nonzero(np.abs(signs @ weight) >= threshold))
    return (1 + extreme) / (1 + n_resamples)
