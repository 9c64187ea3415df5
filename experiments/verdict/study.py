"""Does the verdict call a winner on training noise? The whole pipeline's A/A false-positive rate and its
power on a planted difference, measured on real trainings of the embedded default.

    python experiments/verdict/study.py                      # 20 trainings: ~20 min on 2 CPU cores
    python experiments/verdict/study.py --trainings 8        # the least the issue asks for
    python experiments/verdict/study.py --analyse-only       # the store exists: statistics only (~1 min)

1. Trains the default configuration R times on the same users and splits (``-m model.seed=0..R-1``)
   and, from each training, also embeds with ``model.embedding_layer=softmax`` (4-d class
   probabilities instead of the 2048-d pooled features: the same weights, reused, a known-worse
   embedding): a planted difference. One sweep, into its own store (``--store``).
2. Draws studies from those trainings, as a researcher would run them, and asks of each what
   ``compare`` asks (``fashionbench.analysis``):

   - one-seed A/A: two trainings of the same configuration, one each. Before: the per-pair test
     (user-clustered sign-flip, the verdict's old rule with one seed). After: the calibrated
     configuration test, its training noise from a calibration of 8 other trainings.
   - three-seed A/A: three trainings against three others. Before: the per-pair test on the
     trainings' average (the old rule: significant, and in every seed: one stratum, so always).
     After: the configuration test over the trainings (``stats.replicate_test``).
   - planted: pool against softmax, one training each (calibrated) and three each.

   A rate is the share of drawn studies that call a difference at alpha = 0.05, with a Wilson 95 %
   interval over the independent trainings behind it (drawn studies share trainings, so the
   interval uses the number of disjoint studies the trainings allow, not the number of draws).
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fashionbench.analysis.stats import paired_test, replicate_test  # noqa: E402
from fashionbench.analysis.study import load_run_pairs  # noqa: E402
from fashionbench.analysis.variance import TrainingNoise, calibrated_test, user_shares  # noqa: E402
from fashionbench.evaluation.pairs import eval_fingerprint  # noqa: E402
from fashionbench.tracking.records import finished_experiment_runs  # noqa: E402
from fashionbench.tracking.settings import tracking_settings  # noqa: E402
from fashionbench.tracking.store import experiment_runs  # noqa: E402

EXPERIMENT = "verdict-study"
METRIC = "precision_at_5"
ALPHA = 0.05
CALIBRATION_TRAININGS = 8


def run_sweep(store: Path, trainings: int) -> None:
    seeds = ",".join(str(seed) for seed in range(trainings))
    command = [sys.executable, "-m", "fashionbench.run", "-m", f"model.seed={seeds}",
               "model.embedding_layer=pool,softmax", f"tracking.uri=sqlite:///{store / 'mlflow.db'}",
               f"tracking.experiment_name={EXPERIMENT}",
               f"hydra.sweep.dir={store / 'multirun'}"]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, cwd=store, check=True)


def load_shares(store: Path) -> tuple[dict[str, dict[int, pd.Series]], dict[str, dict[int, pd.DataFrame]]]:
    """Per embedding layer and model seed: each user's share of the run's precision@5 (the model's),
    and the run's per-pair rows of the model."""
    settings = tracking_settings(f"sqlite:///{store / 'mlflow.db'}", EXPERIMENT)
    runs = finished_experiment_runs(experiment_runs(settings))
    with tempfile.TemporaryDirectory() as scratch:
        tables = load_run_pairs(settings, runs, Path(scratch))
    shares: dict[str, dict[int, pd.Series]] = {}
    pairs: dict[str, dict[int, pd.DataFrame]] = {}
    fingerprints = set()
    for table in tables:
        layer, seed = table.run.params["model.embedding_layer"], int(table.run.params["model.seed"])
        model = table.table[table.table.recommender == "model"]
        fingerprints.add(eval_fingerprint(table.table, {}))
        shares.setdefault(layer, {})[seed] = user_shares(model.rename(columns={METRIC: "value"}))
        pairs.setdefault(layer, {})[seed] = model.set_index(["user_id", "category"])[METRIC]
    assert len(fingerprints) == 1, "every training must share users and splits"
    return shares, pairs


def wilson(successes: float, trials: float) -> str:
    if trials <= 0:
        return "–"
    p, z = successes / trials, 1.96
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * np.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return f"{max(0.0, centre - half):.3f} .. {min(1.0, centre + half):.3f}"


def rate_row(name: str, calls: list[bool], independent: int) -> list[str]:
    rate = float(np.mean(calls))
    return [name, str(len(calls)), f"{rate:.3f}", wilson(rate * independent, independent)]


def noise_of(shares: dict[int, pd.Series], seeds: list[int]) -> TrainingNoise:
    table = np.array([shares[s].to_numpy() for s in seeds])
    return TrainingNoise.measure(table, METRIC, "model", "study", "default", [str(s) for s in seeds])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainings", type=int, default=20)
    parser.add_argument("--store", type=Path, default=ROOT / ".cache" / "verdict_study")
    parser.add_argument("--analyse-only", action="store_true")
    parser.add_argument("--draws", type=int, default=400)
    args = parser.parse_args()
    args.store.mkdir(parents=True, exist_ok=True)
    if not args.analyse_only:
        run_sweep(args.store, args.trainings)
    shares, pairs = load_shares(args.store)
    pool, softmax = shares["pool"], shares.get("softmax", {})
    seeds = sorted(pool)
    r = len(seeds)
    rng = np.random.default_rng(0)
    means = {s: float(pool[s].mean()) for s in seeds}
    print(f"{r} trainings of the default configuration on {len(pool[seeds[0]])} users: precision@5 "
          f"{min(means.values()):.4f} .. {max(means.values()):.4f}, sd {np.std(list(means.values()), ddof=1):.4f}")
    whole = noise_of(pool, seeds)
    print(f"calibration of all {r}: trainings' sd {whole.training_sd:.4f}, training itself "
          f"{np.sqrt(whole.training_variance):.4f}, a user's wobble sd {np.sqrt(whole.wobble):.4f}")

    def per_pair_p(a: pd.Series, b: pd.Series) -> float:
        difference = (a - b).to_numpy()
        users = a.index.get_level_values("user_id").to_numpy()
        return paired_test(difference, users, n_resamples=1999, seed=0).p_value

    rows = []
    # One-seed A/A, before: every pair of trainings, the per-pair test.
    before = [per_pair_p(pairs["pool"][i], pairs["pool"][j]) <= ALPHA for i, j in itertools.combinations(seeds, 2)]
    rows.append(rate_row("one-seed A/A, before (per-pair test)", before, r // 2))
    # One-seed A/A, after: a calibration of 8 trainings, a pair of two others.
    after, planted_one = [], []
    for _ in range(args.draws):
        chosen = list(rng.permutation(seeds))
        calibration, (i, j) = chosen[:CALIBRATION_TRAININGS], chosen[CALIBRATION_TRAININGS:CALIBRATION_TRAININGS + 2]
        noise = noise_of(pool, calibration)
        after.append(calibrated_test((pool[i] - pool[j]).to_numpy(), 1, noise).p_value <= ALPHA)
        if softmax:
            test = calibrated_test((pool[i] - softmax[i]).to_numpy(), 1, noise)
            planted_one.append(test.p_value <= ALPHA and test.difference > 0)
    rows.append(rate_row(f"one-seed A/A, after (calibrated, {CALIBRATION_TRAININGS} trainings)", after,
                         (r - CALIBRATION_TRAININGS) // 2))
    # Three-seed A/A: three trainings against three others.
    before3, after3, planted3 = [], [], []
    for _ in range(args.draws):
        chosen = list(rng.permutation(seeds))[:6]
        a, b = chosen[:3], chosen[3:]
        average_a = sum(pairs["pool"][s] for s in a) / 3
        average_b = sum(pairs["pool"][s] for s in b) / 3
        before3.append(per_pair_p(average_a, average_b) <= ALPHA)
        table = np.array([(pool[x] - pool[y]).to_numpy() for x, y in zip(a, b)])
        after3.append(replicate_test(table.mean(axis=1), table).p_value <= ALPHA)
        if softmax:
            planted = np.array([(pool[x] - softmax[x]).to_numpy() for x in a])
            test = replicate_test(planted.mean(axis=1), planted)
            planted3.append(test.p_value <= ALPHA and test.difference > 0)
    rows.append(rate_row("three-seed A/A, before (per-pair test on the average)", before3, r // 6))
    rows.append(rate_row("three-seed A/A, after (configuration test)", after3, r // 6))
    if softmax:
        difference = np.mean([pool[s].mean() - softmax[s].mean() for s in seeds])
        rows.append(rate_row(f"planted pool − softmax ({difference:+.4f}), one seed, calibrated", planted_one,
                             r - CALIBRATION_TRAININGS))
        rows.append(rate_row("planted pool − softmax, three seeds", planted3, r // 3))
    header = ["study (alpha = 0.05)", "drawn", "rate", "95 % interval (independent studies)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
