"""Comparing a sweep's configurations pair by pair: grouping runs, verdicts, ties, refusals.

Runs are planted as RunRecords with per-pair tables (no TensorFlow, no MLflow): the
statistics themselves are calibrated in test_stats.py.
"""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from fashionbench.analysis.comparison import IncomparableRunsError, RunPairs, compare
from fashionbench.analysis.design import UnknownConfigurationError
from fashionbench.tracking.records import RunRecord

USERS = [f"user-{i:04d}" for i in range(120)]
CATEGORIES = ("Skirts", "Dresses", "Shorts")


def pair_table(seed: int, model_skill: float, rng: np.random.Generator) -> pd.DataFrame:
    """One run's per-pair table: users of this seed with their own difficulty, the model's
    precision@5 drawn around it plus ``model_skill``; random and oracle around it too."""
    users = np.random.default_rng(seed)  # the same seed draws the same users and difficulties
    difficulty = {user: users.uniform(0.1, 0.5) for user in USERS}
    rows = []
    for user in USERS:
        for category in CATEGORIES:
            base = difficulty[user]
            for recommender, shift in (("random", -0.05), ("model", model_skill), ("oracle", 0.3)):
                hits = rng.binomial(5, float(np.clip(base + shift, 0, 1)))
                rows.append({"user_id": user, "category": category, "recommender": recommender,
                             "precision_at_5": hits / 5, "queries": "[]", "held_out": "[]"})
    return pd.DataFrame(rows)


def run(run_id: str, freeze: int, seed: int, table: pd.DataFrame, **params) -> RunPairs:
    record = RunRecord(run_id, f"freeze={freeze} seed={seed}", "FINISHED", 0,
                       {"freeze": str(freeze), "seed": str(seed), "users.seed": str(seed), "eval.k": "5", **params},
                       {}, {"eval_fingerprint": f"users-of-seed-{seed}", "data_fingerprint": "d"})
    return RunPairs(record, table)


def sweep(skills: dict[int, float], seeds=(0, 1, 2)) -> list[RunPairs]:
    rng = np.random.default_rng(0)
    return [run(f"r{freeze}-{seed}", freeze, seed, pair_table(seed, skill, rng))
            for seed in seeds for freeze, skill in skills.items()]


def test_a_configuration_that_beats_every_other_is_best():
    result = compare(sweep({2: 0.0, 4: 0.0, 8: 0.15}), "precision_at_5", n_resamples=2000)
    assert result.swept == ["freeze"]  # seeds are replicates, not configurations
    assert [s.label for s in result.summaries][0] == "freeze=8"
    assert result.best == "freeze=8" and "best: freeze=8 beats every other configuration" in result.verdict()
    summary = result.summaries[0]
    assert len(summary.runs) == 3 and len(summary.per_stratum) == 3 and summary.n_pairs == 3 * 120 * 3
    assert summary.ci_low < summary.mean < summary.ci_high
    assert list(summary.ladder) == ["random", "model", "oracle"] and 0 < summary.normalised < 1
    assert len(result.comparisons) == 3  # every pair of the three configurations, Holm-corrected together
    assert all(c.p_holm >= c.test.p_value for c in result.comparisons)
    assert "**best**" in result.markdown()


def test_equal_configurations_are_reported_as_tied_not_best():
    result = compare(sweep({2: 0.0, 4: 0.0}), "precision_at_5", n_resamples=2000)
    assert result.best is None and sorted(result.tied) == ["freeze=2", "freeze=4"]
    verdict = result.verdict()
    assert verdict.startswith("no configuration is best") and "cannot be told apart from" in verdict
    assert "Holm p" in verdict and "**best**" not in result.markdown()


def test_the_difference_is_oriented_and_paired_on_the_same_users():
    runs = sweep({2: 0.0, 8: 0.1})
    result = compare(runs, "precision_at_5", n_resamples=2000)
    forward, backward = result.between("freeze=8", "freeze=2"), result.between("freeze=2", "freeze=8")
    assert forward.test.difference == pytest.approx(-backward.test.difference)
    assert forward.test.ci_low == pytest.approx(-backward.test.ci_high)
    model = {r.run.params["freeze"]: r.table[r.table.recommender == "model"].precision_at_5.mean() for r in runs
             if r.run.params["seed"] == "0"}
    assert forward.test.n_strata == 3 and forward.test.n_clusters == 3 * len(USERS)
    assert forward.strata_agreeing == 3
    assert abs(forward.test.difference - 0.1) < 0.03 and model["8"] > model["2"]


def test_runs_that_do_not_share_users_are_refused_naming_them_and_what_differs():
    rng = np.random.default_rng(0)
    runs = [run("a", 2, 0, pair_table(0, 0.0, rng)), run("b", 4, 1, pair_table(1, 0.0, rng))]
    with pytest.raises(IncomparableRunsError) as error:
        compare(runs, "precision_at_5")
    message = str(error.value)
    assert "runs a (freeze=2) and b (freeze=4) do not share users and held-out splits" in message
    assert "users.seed: 0 vs 1" in message


def test_a_run_without_the_swept_param_is_refused_never_pooled():
    """Before, one run lacking ``freeze`` made every run "one configuration: nothing to compare"."""
    runs = sweep({2: 0.0, 4: 0.1})
    lacking = runs[0]
    params = {name: value for name, value in lacking.run.params.items() if name != "freeze"}
    runs[0] = RunPairs(replace(lacking.run, params=params), lacking.table)
    with pytest.raises(UnknownConfigurationError) as error:
        compare(runs, "precision_at_5")
    message = str(error.value)
    assert "the param 'freeze' varies between the runs (2, 4) but 1 run(s) lack it: r2-0 (freeze=2 seed=0)" in message
    compare(runs[2:], "precision_at_5")  # without its replicate (seed 0), compared as before


def test_a_run_without_its_seed_is_refused_naming_it():
    """Its replicate is unknown: before, it showed as seed=None and the verdict miscounted the strata."""
    runs = sweep({2: 0.0, 4: 0.1})
    lacking = runs[3]
    params = {name: value for name, value in lacking.run.params.items() if name != "seed"}
    runs[3] = RunPairs(replace(lacking.run, params=params), lacking.table)
    with pytest.raises(UnknownConfigurationError, match=r"the param 'seed' varies between the runs \(0, 1, 2\) but "
                                                        r"1 run\(s\) lack it: r4-1"):
        compare(runs, "precision_at_5")


def test_an_unknown_metric_names_the_columns_there_are():
    with pytest.raises(ValueError, match=r"--metric 'ndcg_at_3'.*precision_at_5"):
        compare(sweep({2: 0.0}, seeds=(0,)), "ndcg_at_3")


def test_a_single_configuration_gets_a_bootstrap_interval_over_users():
    result = compare(sweep({4: 0.0}, seeds=(0,)), "precision_at_5", n_resamples=2000)
    (summary,) = result.summaries
    assert summary.ci_low < summary.mean < summary.ci_high and result.comparisons == []
    assert result.verdict().startswith("one configuration")


def test_trainings_of_one_configuration_can_be_compared_with_each_other():
    rng = np.random.default_rng(1)
    runs = [run(f"m{model_seed}", 4, 0, pair_table(0, 0.0, rng), **{"model.seed": str(model_seed)})
            for model_seed in range(3)]
    assert compare(runs, "precision_at_5", n_resamples=999).verdict().startswith("one configuration")
    result = compare(runs, "precision_at_5", n_resamples=999, group_by=["model.seed"])
    assert sorted(s.label for s in result.summaries) == ["model.seed=0", "model.seed=1", "model.seed=2"]
    assert len(result.comparisons) == 3 and result.n_strata == 1


def test_a_difference_that_one_seed_contradicts_is_not_best():
    rng = np.random.default_rng(0)
    skill = {0: 0.15, 1: 0.15, 2: -0.05}  # freeze=8 wins in two seeds and loses in the third
    runs = [run(f"r{freeze}-{seed}", freeze, seed, pair_table(seed, skill[seed] if freeze == 8 else 0.0, rng))
            for seed in (0, 1, 2) for freeze in (2, 8)]
    result = compare(runs, "precision_at_5", n_resamples=2000)
    (pair,) = result.comparisons
    assert pair.significant(result.alpha) and pair.strata_agreeing == 2
    assert result.best is None and "2 of 3 seeds agreeing" in result.verdict()


def test_one_training_per_configuration_never_makes_a_best_however_large_the_difference():
    result = compare(sweep({2: 0.0, 8: 0.15}, seeds=(0,)), "precision_at_5", n_resamples=2000)
    (pair,) = result.comparisons
    assert pair.significant(result.alpha)  # these trained models do differ for these users ...
    assert pair.configuration is None and not pair.beats(result.alpha)  # ... which says nothing of configurations
    assert result.best is None and result.tied == [] and "trained once" in result.untested
    verdict = result.verdict()
    assert verdict.startswith("cannot tell configurations apart") and "model.seed=0,1,2" in verdict
    assert "**best**" not in result.markdown() and "These trainings, for these users" in result.markdown()


def test_two_trainings_each_are_too_few_for_the_configuration_test():
    result = compare(sweep({2: 0.0, 8: 0.15}, seeds=(0, 1)), "precision_at_5", n_resamples=2000)
    assert result.best is None and "lie on 2 data splits or draws of users" in result.untested


def model_seed_sweep(skills: dict[int, float], training_sd: float, model_seeds=(0, 1, 2), seed: int = 0):
    """Configurations trained with several model seeds on one set of users and splits: each training
    shifts the model by its own luck (``training_sd``)."""
    rng = np.random.default_rng(seed)
    runs = []
    for model_seed in model_seeds:
        for freeze, skill in skills.items():
            luck = rng.normal(0, training_sd)
            runs.append(run(f"r{freeze}-{model_seed}", freeze, 0, pair_table(0, skill + luck, rng),
                            **{"model.seed": str(model_seed)}))
    return runs


def test_trainings_on_shared_users_are_replicates_of_the_configuration_test():
    result = compare(model_seed_sweep({2: 0.0, 8: 0.2}, training_sd=0.005), "precision_at_5", n_resamples=999)
    (pair,) = result.comparisons
    assert result.swept == ["freeze"] and pair.configuration.n_replicates == 3
    assert result.best == "freeze=8" and "configuration test over >= 3 trainings each" in result.verdict()
    assert "| variance from |" in result.markdown() and "training " in result.markdown()


def test_equal_configurations_whose_trainings_differ_by_luck_are_tied_with_a_detectable_difference():
    result = compare(model_seed_sweep({2: 0.0, 8: 0.0}, training_sd=0.05, seed=0), "precision_at_5",
                     n_resamples=999)
    assert result.best is None and sorted(result.tied) == ["freeze=2", "freeze=8"]
    assert "this study detects a difference of" in result.verdict()


def test_an_aa_study_of_equal_configurations_calls_a_winner_about_one_time_in_twenty_not_more():
    """Equal configurations whose trainings differ by luck (training sd 0.05 on 120 users): the
    per-pair test holds each training fixed and finds a difference most of the time; the verdict,
    by the configuration test, rarely calls a best."""
    studies = [compare(model_seed_sweep({2: 0.0, 8: 0.0}, training_sd=0.05, seed=seed), "precision_at_5",
                       n_resamples=99) for seed in range(30)]
    per_pair = sum(study.comparisons[0].significant(study.alpha) for study in studies)
    best = sum(study.best is not None for study in studies)
    assert per_pair >= 12  # 18 of 30 here: the trainings' luck, called a difference
    assert best <= 4  # 2 of 30 here; 1.5 expected at alpha = 0.05, and <= 4 with probability 0.98
