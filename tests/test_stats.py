"""Paired statistics: calibration and power measured by simulation, then exact small cases.

The simulated table stands for one run's per-(user, category) precision@5 of two systems.
A/A comparisons drawn from it (H0 true, real correlations kept) measure the false-positive
rate; a decoy that flips single pairs instead of users shows that those checks can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats
from scipy.special import expit

from fashionbench.analysis.stats import (
    PairedTest,
    TooFewReplicatesError,
    clustered_standard_error,
    detectable_effect_size,
    holm,
    mean_confidence_interval,
    paired_test,
    replicate_test,
)

ALPHA = 0.05
DRAWS = 400
RESAMPLES = 999  # few, to stay fast: the randomisation test stays valid with any number
K = 5  # precision@5
N_CATEGORIES = 4

# Logit-scale model of a hit among the top 5: base rate 0.2, category effects, a user effect
# shared by both systems (users differ in how easy they are), a pair effect shared by both
# systems, and a user "tilt" towards one system (some users' tastes suit X, others Y).
BASE_LOGIT = np.log(0.2 / 0.8)
CATEGORY_EFFECT = np.array([-0.3, -0.1, 0.1, 0.3])
USER_SD, PAIR_SD, TILT_SD = 1.0, 0.8, 0.8
# The planted effect: B's hit rate on every pair is A's lowered by this fraction.
RATE_REDUCTION = 0.15


def simulate_hit_rates(rng: np.random.Generator, n_users: int = 150) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user of each pair, hit rate of X, hit rate of Y) on pairs: each user has 2-4 categories."""
    pairs_per_user = rng.integers(2, N_CATEGORIES + 1, n_users)
    user = np.repeat(np.arange(n_users), pairs_per_user)
    category = np.concatenate([rng.choice(N_CATEGORIES, k, replace=False) for k in pairs_per_user])
    shared = (BASE_LOGIT + CATEGORY_EFFECT[category] + rng.normal(0, USER_SD, n_users)[user]
              + rng.normal(0, PAIR_SD, user.size))
    tilt = rng.normal(0, TILT_SD, n_users)[user]
    return user, expit(shared + tilt), expit(shared - tilt)


def simulate_run(rng: np.random.Generator, n_users: int = 150) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user of each pair, precision@5 of X, precision@5 of Y): one run's per-pair table."""
    user, rate_x, rate_y = simulate_hit_rates(rng, n_users)
    return user, rng.binomial(K, rate_x) / K, rng.binomial(K, rate_y) / K


def expected_precision() -> float:
    """E[precision@5 of X] over the simulated population, by Gauss-Hermite quadrature."""
    # Categories are equally likely, and the user, pair and tilt effects add to one normal.
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    sd = np.sqrt(USER_SD**2 + PAIR_SD**2 + TILT_SD**2)
    per_category = expit(BASE_LOGIT + CATEGORY_EFFECT[:, None] + sd * nodes) @ weights / weights.sum()
    return float(per_category.mean())


def rejection_bound(rate: float, draws: int) -> float:
    """Nominal rate plus three Monte-Carlo standard errors."""
    return rate + 3 * np.sqrt(rate * (1 - rate) / draws)


def per_pair_sign_flip_p_value(differences: np.ndarray, rng: np.random.Generator) -> float:
    """The decoy: a sign-flip test that treats every pair as independent (ignores users)."""
    observed = abs(differences.mean())
    signs = 2.0 * rng.integers(0, 2, size=(RESAMPLES, differences.size), dtype=np.int8) - 1.0
    flipped = np.abs(signs @ differences / differences.size)
    return (1 + np.count_nonzero(flipped >= observed - 1e-12)) / (1 + RESAMPLES)


@pytest.fixture(scope="module")
def aa_draws() -> dict[str, np.ndarray]:
    """A/A comparisons from one run's table: per user, a fair coin says whether X or Y is A."""
    # Separate streams: the draws do not depend on how many numbers the decoy consumes.
    rng, decoy_rng = (np.random.default_rng(seed) for seed in np.random.SeedSequence(20240607).spawn(2))
    user, x, y = simulate_run(rng)
    assert np.corrcoef(x, y)[0, 1] > 0.2, "the systems should be positively correlated within a pair"
    differences = x - y
    p_values, ci_excludes_zero, decoy_p_values = [], [], []
    for draw in range(DRAWS):
        # Swapping the names of X and Y flips the sign of all of a user's differences: H0 holds
        # exactly while every within-user and within-pair correlation is kept.
        swapped = rng.choice([-1.0, 1.0], size=user.max() + 1)[user] * differences
        result = paired_test(swapped, user, n_resamples=RESAMPLES, seed=draw)
        p_values.append(result.p_value)
        ci_excludes_zero.append(not result.ci_low <= 0 <= result.ci_high)
        decoy_p_values.append(per_pair_sign_flip_p_value(swapped, decoy_rng))
    return {"p": np.array(p_values), "ci_excludes_zero": np.array(ci_excludes_zero),
            "decoy_p": np.array(decoy_p_values)}


def test_aa_false_positive_rate_is_at_most_alpha(aa_draws):
    rate = np.mean(aa_draws["p"] <= ALPHA)
    assert rate <= rejection_bound(ALPHA, DRAWS), f"A/A rejected in {rate:.1%} of {DRAWS} draws"


def test_aa_bootstrap_interval_excludes_zero_rarely(aa_draws):
    rate = np.mean(aa_draws["ci_excludes_zero"])
    assert rate <= rejection_bound(ALPHA, DRAWS), f"A/A CI excluded 0 in {rate:.1%} of {DRAWS} draws"


def test_flipping_single_pairs_instead_of_users_inflates_false_positives(aa_draws):
    decoy_rate = np.mean(aa_draws["decoy_p"] <= ALPHA)
    rate = np.mean(aa_draws["p"] <= ALPHA)
    # On the same draws: the check above would catch a test that ignored the users.
    assert decoy_rate > rejection_bound(ALPHA, DRAWS), f"decoy rejected in only {decoy_rate:.1%}"
    assert decoy_rate > 2 * rate


def test_planted_effect_is_detected_and_its_interval_covers_the_truth():
    rng = np.random.default_rng(7)
    truth = RATE_REDUCTION * expected_precision()
    rejected, covered = [], []
    for draw in range(DRAWS):
        # A and B draw their hits independently from related rates, so some pairs favour B:
        # unlike "B = A minus some hits" (never negative), this leaves the test work to do.
        user, rate, _ = simulate_hit_rates(rng)
        a = rng.binomial(K, rate) / K
        b = rng.binomial(K, (1 - RATE_REDUCTION) * rate) / K
        result = paired_test(a - b, user, n_resamples=RESAMPLES, seed=draw)
        rejected.append(result.p_value <= ALPHA)
        covered.append(result.ci_low <= truth <= result.ci_high)
    power, coverage = np.mean(rejected), np.mean(covered)
    assert power >= 0.8, f"planted effect {truth:.4f} detected in only {power:.1%} of draws"
    tolerance = 3 * np.sqrt(0.95 * 0.05 / DRAWS)
    assert abs(coverage - 0.95) <= tolerance, f"95% CI covered the truth in {coverage:.1%} of draws"


def test_stratified_statistic_is_the_mean_of_stratum_means():
    # Seed 1 has two pairs (mean 2), seed 2 has three (mean 1): each seed weighs the same,
    # so 1.5, not the pooled 7/5.
    differences = [1.0, 3.0, 0.0, 0.0, 3.0]
    result = paired_test(differences, ["u1", "u2", "u1", "u2", "u3"], strata=[1, 1, 2, 2, 2], n_resamples=99)
    assert result.difference == pytest.approx(1.5)
    assert (result.n_pairs, result.n_clusters, result.n_strata) == (5, 5, 2)
    assert paired_test(differences, ["u1", "u2", "u1", "u2", "u3"], n_resamples=99).difference == pytest.approx(1.4)


def test_same_user_in_two_strata_is_resampled_independently():
    rng = np.random.default_rng(3)
    differences = rng.normal(0.1, 1.0, 40)
    users = np.arange(40)
    one_seed = paired_test(differences, users)
    # The same users and values under two seeds: drawn independently per seed, the stratum
    # means average out and the interval narrows by about sqrt(2); drawn together, it would not.
    two_seeds = paired_test(np.tile(differences, 2), np.tile(users, 2), strata=np.repeat([0, 1], 40))
    assert two_seeds.n_clusters == 80
    assert two_seeds.difference == pytest.approx(one_seed.difference)
    width_ratio = (two_seeds.ci_high - two_seeds.ci_low) / (one_seed.ci_high - one_seed.ci_low)
    assert width_ratio == pytest.approx(1 / np.sqrt(2), abs=0.05)


def test_few_clusters_enumerate_every_sign_pattern():
    # 5 users, all better under A: only all-plus and all-minus are as extreme, p = 2/32.
    result = paired_test([0.2, 0.4, 0.2, 0.6, 0.2, 0.4], ["a", "a", "b", "c", "d", "e"], seed=1)
    assert result.p_value == 2 / 32
    assert paired_test([0.2, 0.4, 0.2, 0.6, 0.2, 0.4], ["a", "a", "b", "c", "d", "e"], seed=2).p_value == 2 / 32


def test_exact_p_value_matches_scipy_sign_flip_test():
    # One pair per user: the cluster test is the ordinary paired sign-flip test.
    differences = np.random.default_rng(5).normal(0.3, 1.0, 10)
    expected = scipy_stats.permutation_test((differences,), np.mean, permutation_type="samples",
                                            n_resamples=np.inf).pvalue
    assert paired_test(differences, np.arange(10)).p_value == pytest.approx(expected)


def test_many_clusters_all_positive_reach_the_smallest_monte_carlo_p_value():
    result = paired_test(np.full(20, 0.2), np.arange(20), n_resamples=999)
    assert result.p_value == pytest.approx(1 / 1000)
    assert result.ci_low == result.ci_high == pytest.approx(0.2)


def test_all_zero_differences():
    result = paired_test(np.zeros(30), np.repeat(np.arange(10), 3), n_resamples=999)
    assert result == PairedTest(difference=0.0, ci_low=0.0, ci_high=0.0, p_value=1.0, n_pairs=30,
                                n_clusters=10, n_strata=1, confidence=0.95)


def test_same_seed_same_result():
    user, x, y = simulate_run(np.random.default_rng(11), n_users=40)
    assert paired_test(x - y, user, seed=4) == paired_test(x - y, user, seed=4)
    assert paired_test(x - y, user, seed=4).ci_low != paired_test(x - y, user, seed=5).ci_low


def test_holm_hand_example():
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to 0.06.
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])


def test_holm_is_monotone_in_the_given_order_and_capped_at_one():
    p = np.random.default_rng(2).uniform(0, 0.5, 12)
    adjusted = holm(p)
    order = np.argsort(p)
    assert np.all(np.diff(adjusted[order]) >= 0)
    assert np.all(adjusted >= p)
    assert adjusted.max() == 1.0
    np.testing.assert_allclose(holm([0.5, 0.6, 0.7]), [1.0, 1.0, 1.0])
    assert holm([]).size == 0


def test_mean_confidence_interval_is_the_student_t_interval():
    mean, low, high = mean_confidence_interval([0.30, 0.34, 0.29])
    half_width = scipy_stats.t.ppf(0.975, df=2) * np.std([0.30, 0.34, 0.29], ddof=1) / np.sqrt(3)
    assert mean == pytest.approx(0.31)
    assert (low, high) == pytest.approx((0.31 - half_width, 0.31 + half_width))


def test_mean_confidence_interval_of_one_value_has_no_bounds():
    mean, low, high = mean_confidence_interval([0.3])
    assert mean == 0.3
    assert np.isnan(low)
    assert np.isnan(high)


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"differences": [0.1, 0.2], "clusters": ["a"]}, "clusters"),
    ({"differences": [0.1, 0.2], "clusters": ["a", "b"], "strata": [0]}, "strata"),
    ({"differences": [], "clusters": []}, "differences"),
    ({"differences": [0.1, np.nan], "clusters": ["a", "b"]}, "differences"),
    ({"differences": [0.1, 0.2], "clusters": ["a", None]}, "clusters"),
    ({"differences": [0.1, 0.2], "clusters": ["a", "b"], "n_resamples": 0}, "n_resamples"),
    ({"differences": [0.1, 0.2], "clusters": ["a", "b"], "confidence": 95}, "confidence"),
])
def test_paired_test_rejects_bad_input_naming_the_argument(kwargs, named):
    with pytest.raises(ValueError, match=named):
        paired_test(**kwargs)


def test_bad_p_values_and_replicates_name_the_argument():
    with pytest.raises(ValueError, match="p_values"):
        holm([0.1, np.nan])
    with pytest.raises(ValueError, match="values"):
        mean_confidence_interval([])
    with pytest.raises(ValueError, match="values"):
        mean_confidence_interval([0.1, np.inf])


# Two-level data as a configuration study has it: each replicate is one training of A and one of
# B on the same users; training adds a shared shift per replicate, each user a lasting preference
# for A or B, and each pair its own noise. The true difference is ``effect``.
TWO_LEVEL_TRAINING_SD, TWO_LEVEL_USER_SD, TWO_LEVEL_PAIR_SD, TWO_LEVEL_USERS, TWO_LEVEL_REPLICATES = 0.01, 0.03, 0.2, 150, 3


def simulated_study(rng: np.random.Generator, effect: float, replicates: int = TWO_LEVEL_REPLICATES,
                    users_shared: bool = True, user_sd: float = TWO_LEVEL_USER_SD):
    """(replicate differences, per-user table or None) of one simulated two-level study."""
    preference = rng.normal(0, user_sd, TWO_LEVEL_USERS)
    table = []
    for _ in range(replicates):
        if not users_shared:
            preference = rng.normal(0, user_sd, TWO_LEVEL_USERS)
        training = rng.normal(0, TWO_LEVEL_TRAINING_SD * np.sqrt(2))  # two independent trainings: A's and B's
        table.append(effect + training + preference + rng.normal(0, TWO_LEVEL_PAIR_SD, TWO_LEVEL_USERS))
    table = np.array(table)
    return table.mean(axis=1), (table if users_shared else None)


@pytest.mark.parametrize("users_shared, user_sd", [(True, TWO_LEVEL_USER_SD), (False, TWO_LEVEL_USER_SD), (True, 0.3)])
def test_the_configuration_test_rejects_no_more_than_alpha_when_configurations_are_equal(users_shared, user_sd):
    rng = np.random.default_rng(7)
    trials = 2000
    rejected = sum(replicate_test(*simulated_study(rng, 0.0, users_shared=users_shared, user_sd=user_sd)).p_value
                   <= 0.05 for _ in range(trials))
    assert rejected / trials <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / trials)  # within Monte-Carlo error of alpha


def test_users_shared_by_every_replicate_add_an_error_the_replicates_spread_cannot_show():
    """Users whose preferences differ a lot (sd 0.3), the same users in every replicate: the t test
    over replicates alone rejects equal configurations far more often than alpha."""
    rng = np.random.default_rng(11)
    studies = [simulated_study(rng, 0.0, user_sd=0.3) for _ in range(1000)]
    spread_only = np.mean([replicate_test(differences).p_value <= 0.05 for differences, _ in studies])
    crossed = np.mean([replicate_test(differences, table).p_value <= 0.05 for differences, table in studies])
    assert spread_only > 0.15 and crossed <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 1000)


def test_the_per_pair_test_alone_calls_training_noise_a_difference():
    """Why the verdict needs the configuration test: with one training each, the per-pair test
    holds the trainings fixed and rejects far more often than alpha on equal configurations."""
    rng = np.random.default_rng(8)
    trials, rejected = 300, 0
    for _ in range(trials):
        preference = rng.normal(0, TWO_LEVEL_USER_SD, TWO_LEVEL_USERS)
        pairs = rng.normal(0, TWO_LEVEL_TRAINING_SD * np.sqrt(2)) + preference + rng.normal(0, TWO_LEVEL_PAIR_SD, TWO_LEVEL_USERS)
        users = np.arange(TWO_LEVEL_USERS)
        rejected += paired_test(pairs, users, n_resamples=199, seed=0).p_value <= 0.05
    assert rejected / trials > 0.10


def test_the_configuration_test_finds_a_planted_difference_it_says_it_can_detect():
    rng = np.random.default_rng(9)
    # The standard error of the mean difference the simulation draws, and what the test promises for it.
    true_error = np.sqrt(2 * TWO_LEVEL_TRAINING_SD ** 2 / TWO_LEVEL_REPLICATES + TWO_LEVEL_USER_SD ** 2 / TWO_LEVEL_USERS
                         + TWO_LEVEL_PAIR_SD ** 2 / (TWO_LEVEL_REPLICATES * TWO_LEVEL_USERS))
    promised = [replicate_test(*simulated_study(rng, 0.0)) for _ in range(300)]
    effect = detectable_effect_size(TWO_LEVEL_REPLICATES - 1) * true_error
    trials = 1000
    found = sum(replicate_test(*simulated_study(rng, effect)).p_value <= 0.05 for _ in range(trials))
    assert found / trials >= 0.8 - 3 * np.sqrt(0.8 * 0.2 / trials)  # the promised 80 % power, or more
    assert np.median([t.minimum_detectable for t in promised]) == pytest.approx(effect, rel=0.35)


def test_few_degrees_of_freedom_need_a_larger_difference():
    assert detectable_effect_size(1000) == pytest.approx(2.80, abs=0.02)  # the normal approximation's 1.96 + 0.84
    assert detectable_effect_size(2) > 5


def test_the_configuration_interval_covers_the_true_difference():
    rng = np.random.default_rng(10)
    trials, effect = 2000, 0.02
    covered = 0
    for _ in range(trials):
        test = replicate_test(*simulated_study(rng, effect))
        covered += test.ci_low <= effect <= test.ci_high
    assert covered / trials >= 0.95 - 3 * np.sqrt(0.05 * 0.95 / trials)


def test_the_configuration_test_says_where_its_noise_comes_from_and_refuses_too_few_trainings():
    drawn = replicate_test([0.01, 0.03, 0.02])  # every replicate drew its own users: its spread is all of it
    assert drawn.df == 2 and drawn.n_replicates == 3 and drawn.share_training == 1.0
    assert drawn.standard_error == pytest.approx(np.sqrt(np.var([0.01, 0.03, 0.02], ddof=1) / 3))
    assert drawn.ci_low < drawn.difference < drawn.ci_high and drawn.minimum_detectable > drawn.standard_error
    # The same users in every replicate, users that differ a lot and trainings that barely do.
    rng = np.random.default_rng(3)
    users = rng.normal(0, 0.1, 200)
    table = np.array([0.02 + shift + users + rng.normal(0, 0.01, 200) for shift in (0.0, 0.001, -0.001)])
    shared = replicate_test(table.mean(axis=1), table)
    assert shared.share_users > 0.9 and shared.df > 50  # the users carry it, and their degrees of freedom
    assert shared.share_training + shared.share_users + shared.share_interaction == pytest.approx(1.0)
    with pytest.raises(TooFewReplicatesError, match="needs at least 3 trainings"):
        replicate_test([0.01, 0.02])
    with pytest.raises(ValueError, match="per_user"):
        replicate_test([0.01, 0.02, 0.03], np.zeros((3, 5)))


def test_the_clustered_standard_error_counts_users_not_pairs():
    # Two pairs per user, identical within a user: 2x the pairs, the same information.
    values = np.repeat(np.random.default_rng(1).normal(size=50), 2)
    users = np.repeat(np.arange(50), 2)
    assert clustered_standard_error(values, users) == pytest.approx(
        clustered_standard_error(values[::2], users[::2]), rel=1e-9)
    assert clustered_standard_error(values, np.zeros(100)) == 0.0
