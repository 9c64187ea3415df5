"""What the read-side commands share: which store, experiment and runs they read, with the run's defaults.

``compare``, ``report``, ``promote`` and ``recommend`` read runs that exist; they compose no
experiment of their own, but they compose the run's config to take its defaults: the tracking
URI and experiment name come from ``tracking.*`` (``fashionbench.tracking.settings``), so
``python -m fashionbench.compare --sweep latest tracking=server`` reads the server that
``python -m fashionbench.run tracking=server`` logged to. Overrides go after the options, as
Hydra's command line takes them; ``--tracking-uri`` and ``--experiment`` set the two most used
ones directly. The statistics' defaults (``--alpha``, ``--resamples``) are those of
``analysis.schema.AnalysisConfig``.
"""

from __future__ import annotations

import argparse
import os

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from fashionbench.analysis.schema import AnalysisConfig, AnalysisConfigError
from fashionbench.artifacts import HEADLINE_METRIC
from fashionbench.config import compose_config
from fashionbench.tracking.records import LATEST
from fashionbench.tracking.settings import TrackingSettings, tracking_settings

# A command reads a run's files one by one (its per-pair results, their checksums, a bundle's parts):
# MLflow's bar for each download filled the output with a line per file.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


class ReadSideOptionError(ValueError):
    """An override or option the read-side commands cannot use; the message names it."""


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tracking-uri``, ``--experiment`` and trailing ``key=value`` overrides of the run's config."""
    parser.add_argument("--tracking-uri", help="MLflow store (default: the config's tracking.uri, else "
                                               "$MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--experiment", help="experiment to read (default: the config's tracking.experiment_name, "
                                             "'fashionbench')")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="overrides of the run's config whose tracking.* settings say where to read, e.g. "
                             "tracking=server tracking.uri=http://host:5000")


def add_run_selection_arguments(parser: argparse.ArgumentParser, metric_help: str | None = None) -> None:
    """The store's options, ``--sweep`` and ``--metric``: which runs to read and what ranks them."""
    add_store_arguments(parser)
    parser.add_argument("--sweep", metavar="RUN_ID",
                        help=f"only the runs of this sweep (its parent run's id, or '{LATEST}')")
    if metric_help:
        parser.add_argument("--metric", help=metric_help)
    else:
        parser.add_argument("--metric", default=HEADLINE_METRIC,
                            help="metric that ranks the runs (default: %(default)s)")


def add_statistics_arguments(parser: argparse.ArgumentParser) -> None:
    """``--alpha`` and ``--resamples``, defaulting to ``AnalysisConfig``'s."""
    parser.add_argument("--alpha", type=float, default=AnalysisConfig.alpha,
                        help="family-wise error rate (default: %(default)s)")
    parser.add_argument("--resamples", type=int, default=AnalysisConfig.resamples,
                        help="bootstrap and sign-flip draws (default: %(default)s)")


def store_settings(args: argparse.Namespace) -> TrackingSettings:
    """The store and experiment the command reads: the composed config's ``tracking.*`` with the
    overrides, then ``--tracking-uri`` and ``--experiment``. Raises ReadSideOptionError naming an
    override that does not compose."""
    try:
        tracking = compose_config(list(args.overrides or [])).tracking
    except (HydraException, OmegaConfBaseException) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ReadSideOptionError(f"overrides {list(args.overrides)}: {first_line}") from None
    return tracking_settings(args.tracking_uri or tracking.uri, args.experiment or tracking.experiment_name,
                             tracking.artifact_location)


def statistics(args: argparse.Namespace) -> AnalysisConfig:
    """The statistics' options from ``--alpha`` and ``--resamples``; AnalysisConfigError names a bad one."""
    return AnalysisConfig(alpha=args.alpha, resamples=args.resamples)


__all__ = ["AnalysisConfigError", "ReadSideOptionError", "add_run_selection_arguments", "add_statistics_arguments",
           "add_store_arguments", "statistics", "store_settings"]
