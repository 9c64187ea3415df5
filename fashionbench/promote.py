"""``python -m fashionbench.promote``: register the best finished run as the champion recommender, when it earns it.

Picks the best FINISHED run of an experiment (or of one sweep) by a metric, subject to
constraints, and registers one MLflow model version (an ``mlflow.pyfunc`` model around a
recommender bundle, see ``fashionbench.serving.recommender``) with the alias ``champion``::

    python -m fashionbench.promote --experiment fashionbench
    python -m fashionbench.promote --sweep <parent run id> --metric test_accuracy
    python -m fashionbench.promote --constraint "test_accuracy>=0.7" --model-name shop-recommender

When a champion exists, the pick replaces it only when its configuration beats the champion's
under the configuration test (``analysis.gate``: the lower end of the 95 % interval of the
difference above zero); otherwise the champion stays, the command says why and exits 0.
``--force`` skips the gate. The first promotion needs none.

Exits non-zero, saying which experiment was searched and why nothing qualified, when no run is
eligible. Promoting a run that is already registered makes no new version.
"""

from __future__ import annotations

import argparse
import logging
import sys

from fashionbench.read_side import ReadSideOptionError, add_run_selection_arguments, store_settings
from fashionbench.serving.recommender import DEFAULT_ALIAS, DEFAULT_MODEL_NAME
from fashionbench.tracking.records import Constraint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fashionbench.promote",
        description="Register the best FINISHED run of an experiment (or sweep) as the champion recommender.",
    )
    add_run_selection_arguments(parser)
    parser.add_argument("--direction", choices=("max", "min"),
                        help="max: higher is better (default: the metric's own direction)")
    parser.add_argument("--force", action="store_true", help="register the pick even when the gate would keep the "
                        "champion (its configuration does not beat the champion's under the configuration test)")
    parser.add_argument("--constraint", action="append", default=[], metavar="EXPR",
                        help="e.g. 'test_accuracy>=0.7'; repeat for several")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME, help="registered model (default: %(default)s)")
    parser.add_argument("--alias", default=DEFAULT_ALIAS, help="alias to set (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        constraints = tuple(Constraint.parse(text) for text in args.constraint)
    except ValueError as error:
        parser.error(str(error))
    # Imported once the command line is parsed: MLflow and SciPy take seconds to import, and
    # --help or a bad option answer without them.
    from fashionbench.analysis.promotion import PromotionError, candidates_table, evidence_lines, promote
    from fashionbench.tracking.runs import reap_orphaned_runs
    from fashionbench.tracking.store import require_store, resolve_sweep

    try:
        settings = store_settings(args)
        require_store(settings)  # reading never creates a store
        reap_orphaned_runs(settings)  # RUNNING runs of this host whose process is gone: KILLED
        args.sweep = resolve_sweep(settings, args.sweep)  # resolved here too, to print which sweep was searched
        direction = None if args.direction is None else args.direction == "max"
        promotion, selection = promote(settings, args.sweep, args.metric, direction, constraints, args.model_name,
                                       args.alias, args.force)
    except (PromotionError, LookupError, ReadSideOptionError) as error:
        print(f"fashionbench.promote: {error}", file=sys.stderr)
        return 1
    run, metric = promotion.run, promotion.metric
    print(f"Top candidates by {metric} ({'max' if promotion.higher_is_better else 'min'}) in experiment "
          f"{settings.experiment_name!r}" + (f", sweep {args.sweep}" if args.sweep else "") + ":")
    print(candidates_table(selection, metric, constraints))
    if selection.excluded:
        print("left out: " + "; ".join(f"{n} {reason}" for reason, n in selection.excluded.most_common()))
    print(f"\npick: run {run.run_id} ({run.run_name}) with {metric} = {run.metrics[metric]:.4f}")
    if promotion.gate is not None:
        print(f"gate (configuration against configuration): {promotion.gate.reason}")
    if promotion.kept:
        print(f"champion kept: alias {args.alias!r} -> version {promotion.version} of {args.model_name!r} "
              f"(--force registers the pick anyway)")
        return 0
    state = "registered as new version" if promotion.created else "already registered as version"
    print(f"{state} {promotion.version} of {args.model_name!r}; alias {args.alias!r} -> version {promotion.version}")
    print(f"load it with  mlflow.pyfunc.load_model('models:/{args.model_name}@{args.alias}')")
    for line in evidence_lines(settings, selection, metric, promotion.higher_is_better, run):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
