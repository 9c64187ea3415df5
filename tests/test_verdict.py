"""A verdict that training noise cannot fake: the calibrated test, the variance components and the
planner, calibrated on simulated two-level data (no TensorFlow); calibration runs, compare's
--calibrate and --plan, and the promotion gate, on planted runs in a real MLflow store."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fashionbench import compare as compare_command
from fashionbench.analysis.comparison import RunPairs, compare
from fashionbench.analysis.gate import gate
from fashionbench.analysis.stats import detectable_effect_size, replicate_test
from fashionbench.analysis.study import calibrate, plan_study, stored_calibrations
from fashionbench.analysis.variance import TrainingNoise, calibrated_test, components, plan
from fashionbench.tracking.records import RunRecord
from fashionbench.tracking.settings import tracking_settings
from fashionbench.tracking.store import experiment_runs
from tests.tracked_store import plant_run

USERS, CALIBRATION = 150, 8
TRAINING_SD, USER_SD, WOBBLE_SD = 0.01, 0.08, 0.15


def trainings(rng: np.random.Generator, users: np.ndarray, n: int, mean: float = 0.2) -> np.ndarray:
    """n trainings of one configuration on the same users (n x users): each training shifts every
    user alike, and each user's result wobbles from training to training."""
    return mean + rng.normal(0, TRAINING_SD, (n, 1)) + users + rng.normal(0, WOBBLE_SD, (n, users.size))


def one_seed_study(rng: np.random.Generator, effect: float) -> tuple[np.ndarray, int, TrainingNoise]:
    """One training of A and of B on the same users (each user's difference), and a calibration of 8 other
    trainings: the arguments of ``calibrated_test``."""
    users = rng.normal(0, USER_SD, USERS)
    noise = TrainingNoise.measure(trainings(rng, users, CALIBRATION), "precision_at_5", "model", "s", "A")
    a, b = trainings(rng, users, 1, 0.2 + effect)[0], trainings(rng, users, 1)[0]
    return a - b, 1, noise


def mc_bound(rate: float, trials: int) -> float:
    return 3 * np.sqrt(rate * (1 - rate) / trials)


def test_one_training_each_against_a_calibration_rejects_no_more_than_alpha():
    rng = np.random.default_rng(1)
    trials = 2000
    rejected = sum(calibrated_test(*one_seed_study(rng, 0.0)).p_value <= 0.05 for _ in range(trials))
    assert rejected / trials <= 0.05 + mc_bound(0.05, trials)


def test_the_calibrated_test_has_the_power_it_promises_and_its_interval_covers_the_truth():
    rng = np.random.default_rng(2)
    true_error = np.sqrt(2 * TRAINING_SD ** 2 + 2 * WOBBLE_SD ** 2 / USERS)  # two trainings' luck, their wobble
    effect = detectable_effect_size(CALIBRATION - 1) * true_error  # the conservative end of its df
    trials = 1000
    tests = [calibrated_test(*one_seed_study(rng, effect)) for _ in range(trials)]
    assert np.mean([t.p_value <= 0.05 and t.difference > 0 for t in tests]) >= 0.8 - mc_bound(0.8, trials)
    assert np.mean([t.ci_low <= effect <= t.ci_high for t in tests]) >= 0.95 - mc_bound(0.95, trials)
    assert all(t.noise_from.startswith("calibration") and t.n_replicates == 1 for t in tests[:5])


def test_without_the_training_noise_the_same_study_calls_noise_a_difference():
    """What the calibration prevents: the users' spread alone (the per-pair test's view) rejects
    equal configurations far more often than alpha once trainings differ by luck."""
    rng = np.random.default_rng(3)
    trials, rejected = 500, 0
    for _ in range(trials):
        difference, _, _ = one_seed_study(rng, 0.0)
        error = difference.std(ddof=1) / np.sqrt(difference.size)
        rejected += abs(difference.mean()) / error > 1.97
    assert rejected / trials > 0.10


def test_the_components_recover_planted_training_user_wobble_and_data_split_variances():
    rng = np.random.default_rng(4)
    rows = []
    for stratum in range(6):  # six data splits, each with its own users and shift, four trainings on each
        shift, users = rng.normal(0, 0.02), rng.normal(0, USER_SD, 400)
        for replicate, values in enumerate(trainings(rng, users, 4, 0.2 + shift)):
            rows.append(pd.DataFrame({"stratum": stratum, "replicate": replicate, "user_id": np.arange(400),
                                      "value": values}))
    found = components(pd.concat(rows), data_varies=True)
    assert found.training == pytest.approx(TRAINING_SD ** 2, rel=0.6)
    assert found.users == pytest.approx(USER_SD ** 2, rel=0.15)
    assert found.wobble == pytest.approx(WOBBLE_SD ** 2, rel=0.05)
    assert found.data_split == pytest.approx(0.02 ** 2, rel=1.0) and found.data_split > 0
    total, parts = found.design_variance(3, 1, 200)
    assert set(parts) == {"training", "users", "wobble", "data split"} and total == pytest.approx(sum(parts.values()))


def test_the_plan_says_how_many_trainings_and_users_find_a_difference():
    rows = plan(TRAINING_SD ** 2, WOBBLE_SD ** 2, 0.0, delta=0.02, users_now=200)
    cell = {(row.trainings, row.users): row for row in rows}
    assert cell[3, 200].detectable > cell[8, 200].detectable > cell[20, 200].detectable  # more trainings, smaller
    assert cell[8, 100].detectable > cell[8, 800].detectable  # more users, smaller
    assert cell[8, 200].detectable == pytest.approx(detectable_effect_size(7) * np.sqrt(
        2 * TRAINING_SD ** 2 / 8 + 2 * WOBBLE_SD ** 2 / (8 * 200)))
    assert [row.meets for row in rows] == [row.detectable <= 0.02 for row in rows]
    # What it promises holds: 8 trainings of each on 200 users find its detectable difference 80 % of the time.
    rng = np.random.default_rng(5)
    effect, found = cell[8, 200].detectable, 0
    for _ in range(500):
        users = rng.normal(0, USER_SD, 200)
        table = trainings(rng, users, 8, 0.2 + effect) - trainings(rng, users, 8)
        found += replicate_test(table.mean(axis=1), table).p_value <= 0.05
    assert found / 500 >= 0.8 - mc_bound(0.8, 500)


def planted_pairs(rng: np.random.Generator, users: np.ndarray, mean: float) -> pd.DataFrame:
    """A run's per-pair table: precision@5 of the model (one training) and of random, two categories a user."""
    rows = []
    shift = rng.normal(0, TRAINING_SD)
    for i, user in enumerate(users):
        for category in ("Dresses", "Skirts"):
            value = float(np.clip(mean + shift + user + rng.normal(0, WOBBLE_SD), 0, 1))
            rows += [{"user_id": f"user-{i:04d}", "category": category, "recommender": "model", "precision_at_5": value,
                      "queries": "[]", "held_out": "[]"},
                     {"user_id": f"user-{i:04d}", "category": category, "recommender": "random", "precision_at_5": 0.1,
                      "queries": "[]", "held_out": "[]"}]
    return pd.DataFrame(rows)


def planted_run(run_id: str, table: pd.DataFrame, stratum: str = "users-0", **params) -> RunPairs:
    record = RunRecord(run_id, run_id, "FINISHED", 0, {"eval.k": "5", "seed": "0", **params}, {},
                       {"eval_fingerprint": stratum})
    return RunPairs(record, table)


def test_one_training_each_with_a_calibration_of_these_users_can_call_a_best_and_one_of_others_cannot():
    rng = np.random.default_rng(6)
    users = rng.normal(0, USER_SD, USERS)
    calibration = replace(TrainingNoise.measure(trainings(rng, users, CALIBRATION), "precision_at_5", "model",
                                                "users-0", "freeze=4"), run_id="cal1")
    runs = [planted_run("a", planted_pairs(rng, users, 0.35), freeze="8", **{"model.seed": "0"}),
            planted_run("b", planted_pairs(rng, users, 0.20), freeze="2", **{"model.seed": "0"})]
    result = compare(runs, "precision_at_5", n_resamples=499, calibrations=[calibration])
    assert result.best == "freeze=8" and "the noise of training from the calibration run cal1" in result.verdict()
    assert "calibration run cal1: 8 trainings of freeze=4" in result.markdown()
    elsewhere = replace(calibration, stratum="users-9", run_id="cal2")
    untested = compare(runs, "precision_at_5", n_resamples=499, calibrations=[elsewhere])
    assert untested.best is None and untested.verdict().startswith("cannot tell configurations apart")
    assert "run cal2: users and splits (eval_fingerprint): calibrated 'users-9', compared 'users-0'" in untested.untested
    other_metric = replace(calibration, metric="ndcg_at_10", run_id="cal3")
    assert "metric: calibrated 'ndcg_at_10', compared 'precision_at_5'" in compare(
        runs, "precision_at_5", n_resamples=99, calibrations=[other_metric]).untested


def test_trainings_on_several_data_splits_are_tested_split_by_split_and_say_what_the_splits_add():
    rng = np.random.default_rng(7)
    runs = []
    for split in range(3):
        users = rng.normal(0, USER_SD, USERS)
        shift = rng.normal(0, 0.03)
        for model_seed in range(2):
            for freeze, mean in (("2", 0.2), ("8", 0.2)):
                runs.append(planted_run(f"r{split}{model_seed}{freeze}", planted_pairs(rng, users, mean + shift),
                                        f"split-{split}", freeze=freeze, seed=str(split), **{"data.seed": str(split),
                                                                                           "model.seed": str(model_seed)}))
    result = compare(runs, "precision_at_5", n_resamples=99)
    test = result.comparisons[0].configuration
    assert test.df == 2  # the three splits are the unit, not the six trainings
    assert "training" in result.markdown() and test.share_training > 0
    assert test.share_training + test.share_users + test.share_interaction + test.share_data == pytest.approx(1.0)


# --- calibration runs, compare --calibrate and --plan, and the promotion gate, in a real store -----------------

def log_pairs_run(client: MlflowClient, experiment_id: str, table: pd.DataFrame, tmp_path, name: str,
                  stratum: str = "users-0", **params) -> str:
    run_id = plant_run(client, experiment_id, "FINISHED",
                       {"headline/precision_at_k": float(table[table.recommender == "model"].precision_at_5.mean())},
                       {"eval.k": "5", "seed": "0", "model.seed": "0", **params},
                       {"eval_fingerprint": stratum, "model_uri": f"runs:/{name}/model"}, name=name)
    path = tmp_path / name / "pairs.csv"
    path.parent.mkdir(parents=True)
    table.to_csv(path, index=False)
    client.log_artifact(run_id, str(path), "eval")
    return run_id


@pytest.fixture
def planted_study(store_uri, tmp_path):
    """Eight trainings of freeze=4 on one set of users, then one training each of freeze=2 and freeze=8."""
    client = MlflowClient(store_uri)
    experiment_id = client.create_experiment("verdict", artifact_location=(tmp_path / "artifacts").as_uri())
    rng = np.random.default_rng(8)
    users = rng.normal(0, USER_SD, USERS)
    seeds = [log_pairs_run(client, experiment_id, planted_pairs(rng, users, 0.2), tmp_path, f"seed-{s}", freeze="4",
                           **{"model.seed": str(s)}) for s in range(CALIBRATION)]
    pick = {freeze: log_pairs_run(client, experiment_id, planted_pairs(rng, users, mean), tmp_path, f"freeze-{freeze}",
                                  freeze=freeze) for freeze, mean in (("2", 0.2), ("8", 0.35))}
    return tracking_settings(store_uri, "verdict"), seeds, pick


def test_a_calibration_is_measured_once_stored_as_a_run_and_used_by_later_comparisons(planted_study, capsys):
    settings, seeds, pick = planted_study
    code = compare_command.main(["--tracking-uri", settings.uri, "--experiment", "verdict", "--calibrate", "--runs",
                                 *seeds, "--out", str(settings.uri.removeprefix("sqlite:///") + ".md")])
    assert code == 0 and "8 trainings of freeze=4" in capsys.readouterr().out
    (noise,) = stored_calibrations(settings)
    assert noise.trainings == 8 and noise.users == USERS and noise.stratum == "users-0"
    runs = {run.run_id: run for run in experiment_runs(settings)}
    means = [runs[seed].metrics["headline/precision_at_k"] for seed in seeds]
    assert noise.mean == pytest.approx(np.mean(means)) and noise.training_sd == pytest.approx(np.std(means, ddof=1))
    calibration_run = runs[noise.run_id]
    assert calibration_run.tags["calibration"] == "precision_at_5 of model"  # not a pipeline run: never promoted
    with pytest.raises(Exception, match="2 configurations"):
        calibrate(settings, run_ids=[pick["2"], pick["8"]])
    code = compare_command.main(["--tracking-uri", settings.uri, "--experiment", "verdict", "--runs", pick["2"],
                                 pick["8"], "--out", str(settings.uri.removeprefix("sqlite:///") + ".md")])
    out = capsys.readouterr().out
    assert code == 0 and "best: freeze=8" in out and f"calibration run {noise.run_id}" in out
    plan_text = plan_study(settings, 0.05)
    assert f"**Study plan** from calibration run {noise.run_id}" in plan_text
    assert "trainings of each configuration (seeds) on" in plan_text  # 0.05 is found by some design of the table


def test_the_gate_keeps_a_champion_the_pick_does_not_beat_and_replaces_one_it_does(planted_study):
    settings, seeds, pick = planted_study
    runs = {run.run_id: run for run in experiment_runs(settings)}
    calibrate(settings, run_ids=seeds)
    better = gate(settings, runs[pick["8"]], runs[pick["2"]], "headline/precision_at_k")
    assert better.passes and better.test.ci_low > 0 and "beats the champion's freeze=2" in better.reason
    worse = gate(settings, runs[pick["2"]], runs[pick["8"]], "headline/precision_at_k")
    assert not worse.passes and "does not beat the champion's freeze=8" in worse.reason and "is worse than" in worse.reason
    same = gate(settings, runs[seeds[1]], runs[seeds[0]], "headline/precision_at_k")
    assert not same.passes and "trained the champion's own configuration" in same.reason
    not_per_pair = gate(settings, runs[pick["8"]], runs[pick["2"]], "model/test_accuracy")
    assert not not_per_pair.passes and "has no per-pair results" in not_per_pair.reason


def test_a_champion_on_other_users_cannot_gate_the_pick(planted_study, tmp_path):
    settings, _, pick = planted_study
    client = MlflowClient(settings.uri)
    experiment_id = client.get_experiment_by_name("verdict").experiment_id
    rng = np.random.default_rng(9)
    other = log_pairs_run(client, experiment_id, planted_pairs(rng, rng.normal(0, USER_SD, USERS), 0.2), tmp_path,
                          "other-users", stratum="users-1", freeze="16")
    runs = {run.run_id: run for run in experiment_runs(settings)}
    decision = gate(settings, runs[pick["8"]], runs[other], "headline/precision_at_k")
    assert not decision.passes and "share no users and splits" in decision.reason
    assert json.dumps(decision.reason)  # one line


def test_the_report_draws_every_difference_and_the_users_the_top_two_differ_for(store_uri, tmp_path):
    """A sweep of two configurations, three trainings each on one set of users, with the shop's images:
    the report's forest plot, contact sheet, HTML page (pictures inline) and LaTeX tables."""
    from PIL import Image

    from fashionbench.analysis.written_report import write_report
    from fashionbench.data.artifact_files import save_shop
    from fashionbench.data.catalogue import Catalogue

    client = MlflowClient(store_uri)
    experiment_id = client.create_experiment("pictures", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = plant_run(client, experiment_id, "FINISHED", {}, tags={"sweep": "parent"})
    rng = np.random.default_rng(10)
    items = [f"item-{i:02d}" for i in range(12)]
    shop = Catalogue(pd.DataFrame({"item_id": items, "category": "Dresses", "split": "test", "source": "planted"}),
                     rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8))
    save_shop(shop, tmp_path / "shop" / "shop_items.csv", tmp_path / "shop" / "shop_images.npz")
    for model_seed in range(3):
        for freeze, skill in (("2", 0.2), ("8", 0.6)):
            rows = []
            for user in range(30):
                favourites = list(np.random.default_rng(user).choice(items, 5, replace=False))  # every run: the same
                queries, held_out = favourites[:2], favourites[2:]
                ranked = held_out[:2] + [i for i in items if i not in held_out][:3] if rng.random() < skill else \
                    [i for i in items if i not in held_out][:5]
                hits = len(set(ranked[:5]) & set(held_out))
                for recommender, value, listed in (("model", hits / 5, ranked), ("random", 0.1, [])):
                    rows.append({"user_id": f"user-{user:02d}", "category": "Dresses", "recommender": recommender,
                                 "precision_at_5": value, "queries": json.dumps(queries), "held_out": json.dumps(held_out),
                                 "recommended": json.dumps(listed) if listed else ""})
            table = pd.DataFrame(rows)
            run_id = log_pairs_run(client, experiment_id, table, tmp_path, f"f{freeze}s{model_seed}", freeze=freeze,
                                   **{"model.seed": str(model_seed)})
            client.set_tag(run_id, "sweep_id", parent)
            client.log_artifact(run_id, str(tmp_path / "shop" / "shop_items.csv"), "data")
            client.log_artifact(run_id, str(tmp_path / "shop" / "shop_images.npz"), "data")
    written = write_report(tracking_settings(store_uri, "pictures"), tmp_path / "report.md", sweep_id=parent,
                           log_run=False)
    names = {path.name for path in written.pictures}
    assert {"report_forest.png", "report_contact_sheet.png"} <= names
    for path in written.pictures:
        assert Image.open(path).size[0] > 300
    text = written.markdown.read_text()
    assert "![Every paired difference" in text and "![Where the top two configurations differ most" in text
    page = written.html.read_text()
    assert page.count('src="data:image/png;base64,') == len(written.pictures) and "report_forest.png" not in page
    assert "\\begin{tabular}" in written.latex.read_text()


def test_reading_commands_answer_without_tensorflow(planted_study, tmp_path):
    """compare (its calibration, comparison and plan) and report read runs, and promote's gate keeps a champion
    (a second training of its configuration scored higher: a tie by the configuration test): no TensorFlow."""
    import subprocess
    import sys

    settings, seeds, pick = planted_study
    client = MlflowClient(settings.uri)
    client.create_registered_model("gated")
    champion = client.create_model_version("gated", source=str(tmp_path), run_id=pick["8"],
                                           tags={"source_run_id": pick["8"]})
    client.set_registered_model_alias("gated", "champion", champion.version)
    rng = np.random.default_rng(11)
    log_pairs_run(client, client.get_experiment_by_name("verdict").experiment_id,
                  planted_pairs(rng, rng.normal(0, USER_SD, USERS), 0.5), tmp_path, "freeze-8-again", freeze="8",
                  **{"model.seed": "1"})
    code = ("import sys\nfrom fashionbench import compare\n"
            f"codes = [compare.main(['--tracking-uri', {settings.uri!r}, '--experiment', 'verdict', *args, '--out', "
            f"{str(tmp_path / 'c.md')!r}]) for args in (['--calibrate', '--runs', *{seeds!r}], "
            f"['--runs', {pick['2']!r}, {pick['8']!r}], ['--plan', '--delta', '0.05'])]\n"
            "from fashionbench import report\n"
            f"codes.append(report.main(['--tracking-uri', {settings.uri!r}, '--experiment', 'verdict', '--out', "
            f"{str(tmp_path / 'r.md')!r}]) or 0)\n"
            "from fashionbench import promote\n"
            f"codes.append(promote.main(['--tracking-uri', {settings.uri!r}, '--experiment', 'verdict', "
            "'--model-name', 'gated']))\n"
            "print('CODES', codes, 'LOADED', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "CODES [0, 0, 0, 0, 0] LOADED []" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"champion kept: alias 'champion' -> version {champion.version} of 'gated'" in result.stdout


def test_what_an_index_costs_is_measured_against_exact_search_on_the_same_weights(store_uri, tmp_path):
    """An index sweep: exact search trained; two Annoy settings reused its weights and lost some of its hits;
    a run of other weights is not compared with it. The report adds the table and the Pareto figure."""
    from fashionbench.analysis.index_cost import index_costs
    from fashionbench.analysis.written_report import write_report

    client = MlflowClient(store_uri)
    experiment_id = client.create_experiment("index-cost", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = plant_run(client, experiment_id, "FINISHED", {}, tags={"sweep": "parent"})
    rng = np.random.default_rng(11)
    users = rng.normal(0, USER_SD, USERS)
    exact_table = planted_pairs(rng, users, 0.3)
    ids = {}
    for name, backend, lost, extra in (("exact", "exact", 0.0, {}), ("annoy-1", "annoy", 0.2, {"index.n_trees": "1"}),
                                       ("annoy-10", "annoy", 0.0, {"index.n_trees": "10"})):
        table = exact_table.copy()
        model = table.recommender == "model"
        dropped = model & (rng.random(len(table)) < lost)
        table.loc[dropped, "precision_at_5"] = 0.0  # the hits an approximate search missed
        table["ndcg_at_5"] = table["precision_at_5"]
        ids[name] = log_pairs_run(client, experiment_id, table, tmp_path, name, freeze="4", **extra)
        client.set_tag(ids[name], "index_backend", backend)
        client.set_tag(ids[name], "sweep_id", parent)
        client.log_metric(ids[name], "pipeline/index/recall_at_k", 1.0 - lost)
        client.log_metric(ids[name], "pipeline/index/qps", {"exact": 500.0, "annoy": 4000.0}[backend])
        if name != "exact":
            client.set_tag(ids[name], "training_reused_from", ids["exact"])
    other_table = planted_pairs(rng, users, 0.3).assign(ndcg_at_5=lambda frame: frame["precision_at_5"])
    other = log_pairs_run(client, experiment_id, other_table, tmp_path, "other-weights", freeze="4",
                          **{"index.n_trees": "3"})
    client.set_tag(other, "index_backend", "annoy")
    settings = tracking_settings(store_uri, "index-cost")
    from fashionbench.analysis.study import load_run_pairs

    runs = [run for run in experiment_runs(settings) if run.run_id in {*ids.values(), other}]
    tables = load_run_pairs(settings, runs, tmp_path / "pairs")
    costs = index_costs(tables, 5, resamples=499).set_index("setting")
    assert sorted(costs.index) == ["annoy n_trees=1", "annoy n_trees=10"]  # other weights: no exact run to compare
    one, ten = costs.loc["annoy n_trees=1"], costs.loc["annoy n_trees=10"]
    assert one["precision_at_5 − exact"] < 0 and one["precision_at_5 CI high"] < 0  # lost hits, and it shows
    assert ten["precision_at_5 − exact"] == 0 and one["recall"] == pytest.approx(0.8)
    written = write_report(settings, tmp_path / "report.md", sweep_id=parent, log_run=False)
    text = written.markdown.read_text()
    assert "## What the index costs" in text and "report_index_cost.png" in text
    assert any(path.name == "report_index_cost.png" for path in written.pictures)
