"""``python -m fashionbench.run``: compose the config, run every stage, log it all to MLflow.

One experiment: load the catalogue, build and fine-tune the classifier (timed), evaluate it
on the test split, embed the shop (the test split: new items in the shop), index it per
category, simulate users, and measure precision@k of the recommendations against held-out
favourites, beside a random recommender's. Each stage is a function of ``fashionbench``
that returns what it measured; ``run_experiment`` only composes them and hands each result
to the run (``TrackedRun.record``).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field

from fashionbench.console import quiet_tensorflow

quiet_tensorflow()  # before anything imports TensorFlow: its start-up messages are set aside

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from fashionbench.artifacts import (  # noqa: E402
    BALANCED_ACCURACY,
    EVAL_PAIRS,
    HEADLINE_METRIC,
    MAJORITY_RATE,
    NORMALISED_HEADLINE,
    TEST_ACCURACY,
    TRAIN_SECONDS,
)
from fashionbench.config import (  # noqa: E402
    CONFIG_MODULE,
    CONFIG_NAME,
    ExperimentConfig,
    config_node,
    experiment_config,
)
from fashionbench.data.catalogue_store import load_catalogue  # noqa: E402
from fashionbench.device import configure_device  # noqa: E402
from fashionbench.embed import embed_items  # noqa: E402
from fashionbench.evaluate import evaluate_classifier  # noqa: E402
from fashionbench.index import build_shop_index  # noqa: E402
from fashionbench.model import build_classifier, preprocess_images  # noqa: E402
from fashionbench.pair_results import check_cutoffs, evaluate_shop, metric_name  # noqa: E402
from fashionbench.references import LADDER, MODEL, ORACLE, RANDOM, UNTRAINED  # noqa: E402
from fashionbench.tracking.runs import Terminated, disk_full, reap_orphaned_runs, tracked_run  # noqa: E402
from fashionbench.tracking.store import tracking_settings  # noqa: E402
from fashionbench.train import train_classifier  # noqa: E402
from fashionbench.trunk_cache import TrunkCache  # noqa: E402
from fashionbench.users import hold_out_favourites  # noqa: E402

log = logging.getLogger("fashionbench")

# MLflow 3.17's UI opens an experiment on its GenAI view unless the browser last chose "Model
# training"; this query parameter picks the training runs' view (and the browser remembers it).
MODEL_TRAINING_VIEW = "?workflowType=machine_learning"


@dataclass
class RunSummary:
    """What a finished run reports: its MLflow id and headline metrics."""

    run_id: str
    tracking_uri: str
    experiment_id: str
    headline_k: int
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def objective(self) -> float:
        """What a sweeper maximises: overall precision@k."""
        return self.metrics[HEADLINE_METRIC]

    def text(self) -> str:
        """The run's headline, its reference ladder floor to ceiling, and where to see the rest."""
        m = self.metrics
        k = self.headline_k
        lines = [
            f"test accuracy      {m[TEST_ACCURACY]:.3f}   (balanced {m[BALANCED_ACCURACY]:.3f}; always the most "
            f"frequent category: {m[MAJORITY_RATE]:.3f})",
            f"train seconds      {m[TRAIN_SECONDS]:.1f}",
            f"precision@{k} by recommender, {int(m.get(EVAL_PAIRS, 0))} (user, category) pairs:",
        ]
        for recommender in LADDER:
            value = m.get(metric_name("precision", k, recommender))
            if value is not None:
                note = "   <- the fine-tuned model" if recommender == MODEL else ""
                lines.append(f"  {recommender:<16} {value:.3f}{note}")
        if NORMALISED_HEADLINE in m:
            window = m[metric_name("precision", k, ORACLE)] - m[metric_name("precision", k, RANDOM)]
            lines.append(f"normalised         {m[NORMALISED_HEADLINE]:.3f}   (model - random) / (oracle - random), "
                         f"on a window of {window:.3f}")
        lines += [
            f"MLflow run         {self.run_id}",
            f"open it with       mlflow ui --backend-store-uri {self.tracking_uri}",
            f"                   then http://127.0.0.1:5000/#/experiments/{self.experiment_id}/runs/{self.run_id}"
            f"{MODEL_TRAINING_VIEW}",
        ]
        return "\n".join(lines)


def run_experiment(cfg: DictConfig | ExperimentConfig) -> RunSummary:
    """Run one experiment as one MLflow run; the run ends FAILED (and this raises) on any error.

    The config is validated first: an invalid option raises (naming it) before any MLflow run starts.
    """
    x = experiment_config(cfg)
    settings = tracking_settings(x.tracking.uri, x.tracking.experiment_name, x.tracking.artifact_location)
    # The data before the run: an unusable data folder, or a k the shop cannot fill, starts no run.
    data = load_catalogue(x.data, x.data_store.directory, x.data_store.enabled)
    catalogue, shop = data.catalogue, data.catalogue.split("test")  # the test split plays the shop's new items
    check_cutoffs(x.eval, shop)
    reap_orphaned_runs(settings)  # runs of this host whose process died (SIGKILL, a crash) are marked KILLED
    with tracked_run(settings, run_name=x.run_name) as run:
        run.log_config(config_node(cfg))
        run.record(data)
        configure_device(x.device)  # before the model is built: its dtype policy and the GPU's memory
        classifier = build_classifier(x.model, x.data.image_size)
        run.record(classifier)
        untrained = embed_items(classifier, shop, x.eval.batch_size) if UNTRAINED in x.eval.references else None
        cache = TrunkCache.from_config(x.train, x.eval.batch_size) if x.train.cache else None
        training = train_classifier(classifier.model, catalogue.split("train"), catalogue.split("val"), x.train,
                                    seed=x.model.seed, cache=cache, jit_compile=x.device.jit_compile)
        run.record(training)
        classification = evaluate_classifier(classifier.model, shop, x.eval.batch_size)
        run.record(classification)

        embeddings = embed_items(classifier, shop, x.eval.batch_size)
        run.record(embeddings)
        shop_index = build_shop_index(shop, embeddings, x.index)
        run.record(shop_index)
        run.record(x.index.measure(shop_index, embeddings))  # against exact search, as ann-benchmarks does

        users = x.users.simulate(shop)
        run.record(users)
        splits = hold_out_favourites(users, x.eval.holdout_fraction, seed=x.users.seed)
        run.record(splits)
        recommendations = evaluate_shop(shop_index, users, splits, untrained, x.index, x.eval)
        run.record(recommendations)  # the model and the reference ladder, pair by pair

        if x.tracking.log_model:  # with a preprocessed shop image as its input example
            run.log_keras_model(classifier.model, preprocess_images(shop.images[:1]))
        metrics = {**training.metrics(), **classification.metrics(), **recommendations.metrics()}
        return RunSummary(run.run_id, settings.uri, run.experiment_id, x.eval.k, metrics)


def swept_overrides(job_overrides: list[str], command_line: list[str]) -> str:
    """The job's overrides of the keys the command line sweeps (``freeze=2,4,8`` -> "freeze=4")."""
    sweeps = ("range(", "choice(", "glob(")
    swept = {arg.split("=", 1)[0].lstrip("+~") for arg in command_line
             if "=" in arg and ("," in arg.split("=", 1)[1] or arg.split("=", 1)[1].startswith(sweeps))}
    return " ".join(o for o in job_overrides if o.split("=", 1)[0].lstrip("+~") in swept)


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> float | None:
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun and cfg.run_name is None:
        # Name each job by its swept values: MLflow draws names from Python's `random`, which
        # the previous job seeded, so generated names would repeat across a sweep.
        cfg.run_name = swept_overrides(HydraConfig.get().overrides.task, sys.argv[1:]) or (
            f"job {HydraConfig.get().job.num}")
    try:
        experiment_config(cfg)  # run_experiment checks it too; here a config error gets its own message
    except Exception as error:  # an invalid option, named in the message: no run was started
        message = f"invalid config: {type(error).__name__}: {error}"
        if multirun:  # the other jobs of the sweep may be valid
            log.error("%s (no MLflow run started)", message)
            return None
        sys.exit(f"fashionbench.run: {message}")
    try:
        summary = run_experiment(cfg)
    except (Terminated, KeyboardInterrupt) as interruption:  # the run is marked KILLED; a sweep stops here
        sys.exit(f"fashionbench.run: {interruption or 'interrupted'}; the MLflow run is marked KILLED"
                 if isinstance(interruption, Terminated) else 130)
    except Exception as error:
        if multirun:
            # The basic launcher stops a sweep at the first job that raises; a started run is
            # already marked FAILED in MLflow, so report it and let the next job run.
            log.error("job failed (its MLflow run, if one started, is marked FAILED): %s: %s",
                      type(error).__name__, error)
            return None
        log.debug("run failed", exc_info=True)
        if disk_full(error):
            first_line = (str(error).strip().splitlines() or [""])[0][:120]
            sys.exit(f"fashionbench.run failed: the disk is full ({type(error).__name__}: {first_line}); its "
                     "partial artifacts were removed and the MLflow run is marked FAILED where the store still "
                     "accepts it (otherwise the next command finds it and marks it KILLED)")
        sys.exit(f"fashionbench.run failed: {type(error).__name__}: {error}")
    print(summary.text())
    return summary.objective


if __name__ == "__main__":
    main()
