"""``python -m fashionbench.promote``: register the best finished run as the champion recommender.

Picks the best FINISHED run of an experiment (or of one sweep) by a metric, subject to
constraints, and registers one MLflow model version (an ``mlflow.pyfunc`` model around a
recommender bundle, see ``fashionbench.recommender``) with the alias ``champion``::

    python -m fashionbench.promote --experiment fashionbench
    python -m fashionbench.promote --sweep <parent run id> --metric test_accuracy
    python -m fashionbench.promote --constraint "test_accuracy>=0.7" --model-name shop-recommender

Plain argparse rather than Hydra: this queries runs that exist, it composes no experiment,
and a researcher expects ``--help`` and no ``outputs/`` folder from it.
Exits non-zero, saying which experiment was searched and why nothing qualified, when no
run is eligible. Promoting a run that is already registered makes no new version.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from omegaconf import OmegaConf  # noqa: E402

from fashionbench.recommender import DEFAULT_MODEL_NAME  # noqa: E402
from fashionbench.selection import (  # noqa: E402
    DEFAULT_METRIC,
    Constraint,
    Selection,
    add_run_selection_arguments,
    is_experiment_run,
    latest_sweep_id,
    select_runs,
    swept_parameters,
)
from fashionbench.tracking import (  # noqa: E402
    RunRecord,
    TrackingSettings,
    download_run_artifacts,
    experiment_runs,
    load_keras_model,
    model_alias_version,
    register_recommender,
    registered_version_of_run,
    set_model_alias,
    tracking_settings,
)

log = logging.getLogger("fashionbench.promote")

DEFAULT_ALIAS = "champion"


class PromotionError(RuntimeError):
    """No run can be promoted; the message says where we looked and why nothing qualified."""


def candidates_table(selection: Selection, metric: str, constraints: tuple[Constraint, ...] = (),
                     top: int = 5) -> str:
    """The top candidates as a small text table: rank, run, name, the params the candidates
    differ in, the metric and the constrained metrics."""
    shown = selection.ranked[:top]
    params = swept_parameters(selection.ranked)
    columns = [metric, *dict.fromkeys(c.metric for c in constraints if c.metric != metric)]
    header = ["rank", "run_id", "run_name", *params, *columns]
    rows = [[str(rank), run.run_id, run.run_name or "-", *(run.params.get(p, "-") for p in params),
             *(f"{run.metrics[c]:.4f}" for c in columns)]
            for rank, run in enumerate(shown, start=1)]
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in [header, *rows]]
    return "\n".join(lines)


def build_bundle(settings: TrackingSettings, run: RunRecord, directory: Path, metric: str) -> Path:
    """Gather what the recommender needs from ``run`` into ``directory`` (see fashionbench.recommender).

    Raises PromotionError when the run lacks an artifact or its users cannot be rebuilt."""
    from hydra.utils import instantiate

    from fashionbench.recommender import load_shop

    scratch = directory / "_downloads"
    for artifact in ("config.yaml", "data", "indexes"):
        try:
            download_run_artifacts(settings, run.run_id, artifact, scratch)
        except Exception as error:  # MlflowException or OSError, by store
            raise PromotionError(f"run {run.run_id} lacks the artifact {artifact!r} a recommender needs "
                                 f"({type(error).__name__}: {error})") from None
    (directory / "indexes").mkdir(parents=True)
    for path in (scratch / "indexes").iterdir():
        path.rename(directory / "indexes" / path.name)
    for name in ("shop_items.csv", "shop_images.npz"):
        (scratch / "data" / name).rename(directory / name)
    (scratch / "config.yaml").rename(directory / "config.yaml")

    config = OmegaConf.load(directory / "config.yaml")
    logged_ratings = scratch / "data" / "user_ratings.csv"
    if logged_ratings.exists():
        logged_ratings.rename(directory / "users.csv")
    else:
        # Runs from before user_ratings.csv was logged: their users are deterministic from the
        # seed and the shop (and the reviews file, if configured), so rebuild them as run.py did.
        shop = load_shop(directory / "shop_items.csv", directory / "shop_images.npz")
        users = instantiate(config.users)(shop=shop, seed=config.seed)
        expected = run.metrics.get("favourites")
        if expected is not None and int(expected) != len(users.favourites):
            raise PromotionError(f"run {run.run_id}: rebuilt users have {len(users.favourites)} favourites, "
                                 f"the run logged {int(expected)}; the users cannot be reproduced")
        users.ratings.to_csv(directory / "users.csv", index=False)

    load_keras_model(settings, run.tags["model_uri"]).save(directory / "classifier.keras")
    meta = {
        "source_run_id": run.run_id, "experiment": settings.experiment_name,
        "embedding_layer": config.model.embedding_layer, "image_size": int(config.data.image_size),
        "k": int(config.eval.k), "index_metric": config.index.metric,
        "favourite_threshold": float(config.users.favourite_threshold),
        "selected_by": metric, metric: run.metrics[metric],
    }
    (directory / "recommender.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(scratch)
    return directory


@dataclass(frozen=True)
class Promotion:
    run: RunRecord
    version: str
    created: bool  # False: the run was registered already


def promote(settings: TrackingSettings, sweep_id: str | None = None, metric: str = DEFAULT_METRIC,
            higher_is_better: bool = True, constraints: tuple[Constraint, ...] = (),
            model_name: str = DEFAULT_MODEL_NAME, alias: str = DEFAULT_ALIAS) -> tuple[Promotion, Selection]:
    """Register the best eligible run as a version of ``model_name`` and point ``alias`` at it.

    ``sweep_id="latest"`` picks the most recent sweep. Raises PromotionError when no run
    qualifies, and ExperimentNotFoundError (from tracking) for an unknown experiment.
    """
    if sweep_id == "latest":
        sweep_id = latest_sweep_id(experiment_runs(settings))
        if sweep_id is None:
            raise PromotionError(f"--sweep latest: experiment {settings.experiment_name!r} has no sweep")
    runs = experiment_runs(settings, sweep_id)
    selection = select_runs(runs, metric, higher_is_better, constraints)
    if not selection.ranked:
        where = f"experiment {settings.experiment_name!r}" + (f", sweep {sweep_id}" if sweep_id else "")
        searched = sum(is_experiment_run(run) for run in runs)
        reasons = "; ".join(f"{n} {reason}" for reason, n in selection.excluded.most_common()) or "no runs"
        raise PromotionError(f"no eligible run in {where} of {settings.uri}: {searched} run(s) searched "
                             f"({reasons}); eligible runs are FINISHED, have {metric!r} and a logged model"
                             + (f" and meet {', '.join(map(str, constraints))}" if constraints else ""))
    best = selection.best
    version = registered_version_of_run(settings, model_name, best.run_id)
    created = version is None
    if created:
        with tempfile.TemporaryDirectory() as scratch:
            bundle = build_bundle(settings, best, Path(scratch) / "bundle", metric)
            version = register_recommender(settings, model_name, bundle, best.run_id, tags={
                "source_run_id": best.run_id, "source_run_name": best.run_name,
                "experiment": settings.experiment_name, "selected_by": metric,
                "direction": "max" if higher_is_better else "min", metric: best.metrics[metric],
                "constraints": "; ".join(map(str, constraints)) or "none",
                "data_fingerprint": best.tags.get("data_fingerprint", ""),
                "git_commit": best.tags.get("git_commit", ""),
            })
    if model_alias_version(settings, model_name, alias) != version:
        set_model_alias(settings, model_name, alias, version)
    return Promotion(best, version, created), selection


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fashionbench.promote",
        description="Register the best FINISHED run of an experiment (or sweep) as the champion recommender.",
    )
    add_run_selection_arguments(parser)
    parser.add_argument("--direction", choices=("max", "min"), default="max", help="max: higher is better")
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
    settings = tracking_settings(args.tracking_uri, args.experiment)
    try:
        if args.sweep == "latest":  # resolved here too, to print which sweep was searched
            args.sweep = latest_sweep_id(experiment_runs(settings)) or args.sweep
        promotion, selection = promote(settings, args.sweep, args.metric, args.direction == "max", constraints,
                                       args.model_name, args.alias)
    except (PromotionError, LookupError) as error:
        print(f"fashionbench.promote: {error}", file=sys.stderr)
        return 1
    run = promotion.run
    print(f"Top candidates by {args.metric} ({args.direction}) in experiment {args.experiment!r}"
          + (f", sweep {args.sweep}" if args.sweep else "") + ":")
    print(candidates_table(selection, args.metric, constraints))
    if selection.excluded:
        print("left out: " + "; ".join(f"{n} {reason}" for reason, n in selection.excluded.most_common()))
    state = "registered as new version" if promotion.created else "already registered as version"
    print(f"\nwinner: run {run.run_id} ({run.run_name}) with {args.metric} = {run.metrics[args.metric]:.4f}")
    print(f"{state} {promotion.version} of {args.model_name!r}; alias {args.alias!r} -> version {promotion.version}")
    print(f"load it with  mlflow.pyfunc.load_model('models:/{args.model_name}@{args.alias}')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
