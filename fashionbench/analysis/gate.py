"""The promotion gate: a new champion only when its configuration beats the champion's.

``promote`` picks the best run by a metric; a run is one training, and the best of several is
often the luckiest. So before it moves the champion alias, the configuration the pick trained is
tested against the configuration the champion's run trained, with the configuration test
(``analysis.comparison.configuration_test``: training noise included), on the runs of the
experiment that trained either configuration on shared users and splits. The pick replaces the
champion only when the lower end of the 95 % interval of (pick − champion) is above zero.

A pick of the champion's own configuration (another training of it) never replaces it; nor does
one that cannot be tested (too few trainings and no calibration, no shared users and splits, a
metric without per-pair results). ``promote --force`` skips the gate.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from fashionbench.analysis.comparison import IncomparableRunsError, compare
from fashionbench.analysis.design import SEED_PARAMS, configuration_label, not_swept
from fashionbench.analysis.stats import ReplicateTest
from fashionbench.analysis.study import load_run_pairs, pair_column, stored_calibrations
from fashionbench.artifacts import parse_metric_name
from fashionbench.evaluation.references import MODEL
from fashionbench.tracking.records import RunRecord, finished_experiment_runs
from fashionbench.tracking.settings import TrackingSettings
from fashionbench.tracking.store import experiment_runs


@dataclass(frozen=True)
class GateDecision:
    """Whether the pick may replace the champion, and why, in one sentence."""

    passes: bool
    reason: str
    test: ReplicateTest | None = None


def design_params(run: RunRecord) -> dict[str, str]:
    """The params that make a run's configuration: every param but the seeds and where it was logged."""
    return {key: value for key, value in run.params.items() if key not in SEED_PARAMS and not not_swept(key)}


def gate(settings: TrackingSettings, pick: RunRecord, champion: RunRecord, metric: str) -> GateDecision:
    """Test the pick's configuration against the champion's on ``metric``; see the module docstring."""
    mine, theirs = design_params(pick), design_params(champion)
    differing = sorted(key for key in set(mine) | set(theirs) if mine.get(key) != theirs.get(key))
    if not differing:
        return GateDecision(False, f"run {pick.run_id} trained the champion's own configuration (run "
                                   f"{champion.run_id}): another training of it is not a better configuration")
    parsed = parse_metric_name(metric)
    if parsed is None:
        return GateDecision(False, f"{metric} has no per-pair results, so the configuration test cannot compare the "
                                   f"configurations; only a recommendation metric (e.g. headline/precision_at_k) can "
                                   f"gate a promotion")
    recommender = parsed.recommender or MODEL
    same_as = {"pick": mine, "champion": theirs}
    runs = [run for run in finished_experiment_runs(experiment_runs(settings))
            if any(design_params(run) == params for params in same_as.values())]
    label_pick, label_champion = configuration_label(pick, differing), configuration_label(champion, differing)
    try:
        column = pair_column(metric, runs)
        with tempfile.TemporaryDirectory() as scratch:
            tables = load_run_pairs(settings, runs, Path(scratch))
        comparison = compare(tables, column, recommender, group_by=differing,
                             calibrations=stored_calibrations(settings))
    except IncomparableRunsError as error:
        return GateDecision(False, f"the champion's runs share no users and splits with the pick's, so the gate cannot "
                                   f"test them ({error})")
    except (LookupError, ValueError) as error:
        return GateDecision(False, f"the configurations cannot be tested ({error})")
    pair = comparison.between(label_pick, label_champion)
    test = pair.configuration
    if test is None:
        return GateDecision(False, f"the configuration test cannot tell {label_pick} from the champion's "
                                   f"{label_champion}: {pair.untested}")
    interval = (f"{test.difference:+.4f}, 95 % CI {test.ci_low:+.4f} .. {test.ci_high:+.4f} over "
                f"{test.n_replicates} training(s) each")
    if test.ci_low > 0:
        return GateDecision(True, f"{label_pick} beats the champion's {label_champion} on {column} ({interval})", test)
    how = ("is worse than" if test.ci_high < 0 else "cannot be told apart from")
    return GateDecision(False, f"{label_pick} does not beat the champion's {label_champion} on {column}: it {how} it "
                               f"({interval}; a difference of {test.minimum_detectable:.4f} is what this study "
                               f"detects with 80 % power)", test)
