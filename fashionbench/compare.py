"""``python -m fashionbench.compare``: which configuration of a sweep recommends best, with the evidence.

    python -m fashionbench.compare --sweep latest
    python -m fashionbench.compare --sweep latest --metric ndcg_at_10
    python -m fashionbench.compare --runs <run id> <run id> ...
    python -m fashionbench.compare --sweep latest tracking=server      # the store a run with tracking=server used
    python -m fashionbench.compare --calibrate --sweep latest          # after -m model.seed=0,...,7: training noise
    python -m fashionbench.compare --plan --delta 0.005                # seeds and users to detect 0.005

Reads the runs' per-pair results (``eval/pairs.csv``), groups the runs into configurations by the
params the sweep varied (seeds aside), and answers two questions (``analysis.comparison``): are
these trained models different for these users (the per-pair test), and does one configuration
train better models than another (the configuration test, whose unit is the training). The
verdict names a best configuration only when the configuration test finds it better than every
other one. Writes Markdown to ``--out`` (default ``reports/compare.md``) and prints it.

``--calibrate`` measures how far the trainings of one configuration spread (a sweep over
``model.seed``) and stores it as a calibration run, which later comparisons of configurations
trained once on the same users and splits use; ``--plan --delta D`` says how many trainings and
users a study needs to detect D (``analysis.calibration``, ``analysis.variance``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from fashionbench.evaluation.references import LADDER, MODEL
from fashionbench.read_side import (
    ReadSideOptionError,
    add_run_selection_arguments,
    add_statistics_arguments,
    statistics,
    store_settings,
)

DEFAULT_OUT = Path("reports/compare.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fashionbench.compare",
        description="Compare the configurations of a sweep: mean ± CI, paired differences, a configuration test "
                    "whose noise includes training, and a verdict that says when configurations are tied.",
    )
    add_run_selection_arguments(parser, metric_help="per-pair metric to compare, e.g. ndcg_at_10 "
                                                    "(default: precision_at_<eval.k>)")
    parser.add_argument("--runs", nargs="+", metavar="RUN_ID", help="only these runs")
    parser.add_argument("--recommender", default=MODEL, choices=LADDER, help="whose results (default: %(default)s)")
    add_statistics_arguments(parser)
    parser.add_argument("--group-by", nargs="+", metavar="PARAM", help="params whose values make a configuration "
                        "(default: the swept params, seeds aside; e.g. model.seed for an A/A test of training)")
    task = parser.add_mutually_exclusive_group()
    task.add_argument("--calibrate", action="store_true", help="measure the training noise of one configuration "
                      "trained several times (a sweep over model.seed) and store it as a calibration run")
    task.add_argument("--plan", action="store_true", help="how many trainings and users detect --delta, from the "
                      "newest calibration (and, with --sweep, the users' preferences in that sweep)")
    parser.add_argument("--delta", type=float, help="with --plan: the difference to detect, e.g. 0.005")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown file (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.plan and not (args.delta and args.delta > 0):
        parser.error(f"--plan needs --delta, the difference to detect (> 0), got {args.delta}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # MLflow, SciPy and the analysis load once the command line is valid: --help and a usage error
    # answer without them (1 s instead of 2.8 s on two cores: experiments/startup.py).
    from fashionbench.analysis.calibration import CalibrationError
    from fashionbench.analysis.comparison import IncomparableRunsError
    from fashionbench.analysis.study import calibrate, compare_runs, plan_study
    from fashionbench.tracking.runs import reap_orphaned_runs
    from fashionbench.tracking.store import require_store

    try:
        options = statistics(args)
        settings = store_settings(args)
        require_store(settings)  # reading never creates a store
        reap_orphaned_runs(settings)  # RUNNING runs of this host whose process is gone: KILLED
        if args.calibrate:
            noise = calibrate(settings, args.sweep, args.runs, args.metric, args.recommender)
            body = (f"Calibration run `{noise.run_id}`: {noise.metric} of {noise.recommender}, {noise.trainings} "
                    f"trainings of {noise.configuration} on {noise.users} users: mean {noise.mean:.4f}, the "
                    f"trainings' means spread by sd {noise.training_sd:.4f} (of which training itself "
                    f"{noise.training_variance ** 0.5:.4f}, the rest the users' wobble from training to training). "
                    "Comparisons of configurations trained once or twice on these users and splits now test "
                    "against it.")
        elif args.plan:
            body = plan_study(settings, args.delta, args.metric, args.sweep, options)
        else:
            body = compare_runs(settings, args.sweep, args.runs, args.metric, args.recommender, options.alpha,
                                options.resamples, args.group_by).markdown()
    except (LookupError, IncomparableRunsError, ReadSideOptionError, CalibrationError, ValueError) as error:
        print(f"fashionbench.compare: {error}", file=sys.stderr)
        return 1
    text = f"# fashionbench comparison: experiment `{settings.experiment_name}`\n\n{body}\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
