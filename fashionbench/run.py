"""``python -m fashionbench.run``: compose the config, run every stage, log it all to MLflow.

One experiment: load the catalogue, build and fine-tune the classifier (timed), evaluate it
on the test split, embed the shop (the test split: new items in the shop), index it per
category, simulate users, and measure precision@k of the recommendations against held-out
favourites, beside a random recommender's. Each stage is a function of ``fashionbench``
that returns what it measured; ``run_experiment`` only composes them and hands each result
to the run (``TrackedRun.record``).

Work already done is not done again: a run whose training settings, data and code match a
FINISHED run's reuses its trained weights (``tracking.reuse_training``), and a sweep job whose
whole config has a FINISHED run is skipped (``tracking.resume``); see ``fashionbench.pipeline.fingerprints``.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field, replace

from fashionbench.runtime.console import quiet_tensorflow
from fashionbench.runtime.paths import anchor_path_variables

quiet_tensorflow()  # before anything imports TensorFlow: its start-up messages are set aside
anchor_path_variables()  # before Keras reads $KERAS_HOME and before Hydra moves a job elsewhere

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from fashionbench.artifacts import (  # noqa: E402
    BALANCED_ACCURACY,
    EVAL_PAIRS,
    FIT_SECONDS,
    HEADLINE_METRIC,
    MAJORITY_RATE,
    NORMALISED_HEADLINE,
    TAG_CONFIG_FINGERPRINT,
    TAG_GPU,
    TAG_MODEL_URI,
    TAG_TRAINING_FINGERPRINT,
    TAG_TRAINING_REUSED_FROM,
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
from fashionbench.data import Catalogue  # noqa: E402
from fashionbench.data.catalogue_store import load_catalogue  # noqa: E402
from fashionbench.evaluation.classification import evaluate_classifier  # noqa: E402
from fashionbench.evaluation.pairs import check_cutoffs, evaluate_shop, metric_name  # noqa: E402
from fashionbench.evaluation.references import LADDER, MODEL, ORACLE, RANDOM, UNTRAINED  # noqa: E402
from fashionbench.index import build_shop_index  # noqa: E402
from fashionbench.index.quality import measure_shop_index  # noqa: E402
from fashionbench.model.classifier import Classifier, build_classifier  # noqa: E402
from fashionbench.model.embed import embed_items  # noqa: E402
from fashionbench.options import Stage  # noqa: E402
from fashionbench.pipeline.fingerprints import job_fingerprint, stage_fingerprint, training_fingerprint  # noqa: E402
from fashionbench.runtime import gpu_pool  # noqa: E402
from fashionbench.runtime.device import configure_device  # noqa: E402
from fashionbench.tracking.records import RunRecord  # noqa: E402
from fashionbench.tracking.run_models import model_tags  # noqa: E402
from fashionbench.tracking.runs import (  # noqa: E402
    Terminated,
    disk_full,
    reap_orphaned_runs,
    time_limit,
    tracked_run,
)
from fashionbench.tracking.store import (  # noqa: E402
    StoredRun,
    TrackingSettings,
    check_server_answers,
    finished_runs_with,
    tracking_settings,
)
from fashionbench.tracking.sweep import (  # noqa: E402
    earlier_finished_run,
    job_name,
    record_skipped_job,
    sweep_command_overrides,
)
from fashionbench.training.fit import ReusedTraining, train_classifier  # noqa: E402
from fashionbench.training.trunk_cache import TrunkCache  # noqa: E402
from fashionbench.users.simulation import hold_out_favourites  # noqa: E402

log = logging.getLogger("fashionbench")
SUBMITIT_JOB = "SUBMITIT_FOLDER"  # set by submitit in each job it runs (hydra/launcher=slurm or local)

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
    check_server_answers(settings.uri)  # an unreachable tracking server fails here, in seconds, before any data
    # The data before the run: an unusable data folder, or a k the shop cannot fill, starts no run.
    data = load_catalogue(x.data, x.data_store.directory, x.data_store.enabled)
    catalogue, shop = data.catalogue, data.catalogue.split("test")  # the test split plays the shop's new items
    check_cutoffs(x.eval, shop)
    reap_orphaned_runs(settings)  # runs of this host whose process died (SIGKILL, a crash) are marked KILLED
    values = resolved_values(cfg)
    fingerprints = fingerprint_tags(values, data.catalogue.fingerprint())
    weights_from = trained_run(settings, fingerprints) if x.tracking.reuse_training else None
    gpu = gpu_pool.claimed_gpu()  # in a parallel sweep with a GPU pool: the one this worker holds
    with tracked_run(settings, run_name=x.run_name, tags={TAG_GPU: gpu} if gpu else None,
                     parent_run_id=x.tracking.parent_run_id) as run:
        run.log_config(config_node(cfg))
        run.set_tags(fingerprints)
        run.record(data)
        configure_device(x.device)  # before the model is built: its dtype policy and the GPU's memory
        embedding_key = stage_fingerprint(values, Stage.EMBEDDING)  # what the kept results depend on
        if weights_from is None:
            classifier = build_classifier(x.model, x.data.image_size)
            run.record(classifier)
            kept = KeptTraining(run.run_id, embedding_key, classifier)
            if UNTRAINED in x.eval.references:  # before training changes the weights in place
                kept.remember("untrained", lambda: embed_items(classifier, shop, x.eval.batch_size))
            cache = TrunkCache.from_config(x.train, x.eval.batch_size) if x.train.cache else None
            training = train_classifier(classifier.model, catalogue.split("train"), catalogue.split("val"), x.train,
                                        seed=x.model.seed, cache=cache, jit_compile=x.device.jit_compile)
        else:  # the same data, model, training, seeds and code FINISHED before: its weights, no training
            kept, training = reuse_training(settings, weights_from, x, shop, embedding_key)
            classifier = kept.classifier
            run.record(classifier)
        run.record(training)
        # Kept from a job that did not score the untrained reference: the seeded classifier, built again,
        # starts where the trained one started.
        untrained = kept.remember("untrained", lambda: embed_items(build_classifier(x.model, x.data.image_size), shop,
                                                                   x.eval.batch_size)) \
            if UNTRAINED in x.eval.references else None
        # Same weights, same shop: the same predictions (kept for the sweep's next index-only job).
        classification = kept.remember("classification", lambda: evaluate_classifier(classifier.model, shop,
                                                                                     x.eval.batch_size))
        run.record(classification)

        embeddings = kept.remember("embeddings", lambda: embed_items(classifier, shop, x.eval.batch_size))
        run.record(embeddings)
        shop_index = build_shop_index(shop, embeddings, x.index)
        run.record(shop_index)
        # Against exact search, as ann-benchmarks does, whatever the backend.
        run.record(measure_shop_index(shop_index, embeddings, x.index.quality_k, x.index.quality_repeats))

        users_key = stage_fingerprint(values, Stage.USERS)  # users.* and eval.holdout_fraction
        users = kept.remember(("users", users_key), lambda: x.users.simulate(shop))
        run.record(users)
        splits = kept.remember(("splits", users_key),
                               lambda: hold_out_favourites(users, x.eval.holdout_fraction, seed=x.users.seed))
        run.record(splits)
        recommendations = evaluate_shop(shop_index, users, splits, untrained, x.index, x.eval)
        run.record(recommendations)  # the model and the reference ladder, pair by pair

        if x.tracking.log_model and weights_from is None:  # lean: its own layers; the backbone once per experiment
            run.log_classifier(classifier)
        elif x.tracking.log_model:  # the weights the source run logged: that model, not a second copy
            run.set_tags(model_tags(weights_from))
        _KEPT[:] = [kept]  # for the next job of this process, once this run has done its work
        metrics = {**training.metrics(), **classification.metrics(), **recommendations.metrics()}
        return RunSummary(run.run_id, settings.uri, run.experiment_id, x.eval.k, metrics)


class TrialFailed(RuntimeError):
    """A sweep's job that failed, raised to a sweeper that counts failed trials itself (Optuna).
    Only the message travels: the job's own exception might not survive the pickling back from a
    joblib or submitit worker."""


def sweeper_counts_failures() -> bool:
    """Whether the multirun's sweeper takes a job's exception as one failed trial and goes on.

    hydra-optuna-sweeper 1.3 tells Optuna a job that raised as FAIL and goes on while a batch's
    failures stay within ``hydra.sweeper.max_failure_rate``; a job that returned None or NaN
    instead is logged as "Return value must be float-castable", and NaN ends the study (it tells
    FAIL with a value). Hydra's basic sweeper ends the multirun at the first job that raised."""
    return "max_failure_rate" in HydraConfig.get().sweeper


def failed_job(message: str) -> None:
    """End a sweep's failed job so that the sweep goes on: logged, and raised as TrialFailed
    where the sweeper counts failed trials (Optuna), returned as None otherwise."""
    log.error("%s", message)
    if sweeper_counts_failures():
        raise TrialFailed(message) from None
    return None


def resolved_values(cfg: DictConfig | ExperimentConfig) -> dict:
    """The config's values with every interpolation resolved, as plain containers (what fingerprints hash)."""
    return OmegaConf.to_container(config_node(cfg), resolve=True)


def fingerprint_tags(values: dict, data_fingerprint: str) -> dict[str, str]:
    """The run's fingerprints, by which a later run finds it (fashionbench.pipeline.fingerprints)."""
    return {TAG_CONFIG_FINGERPRINT: job_fingerprint(values),
            TAG_TRAINING_FINGERPRINT: training_fingerprint(values, data_fingerprint)}


def trained_run(settings: TrackingSettings, fingerprints: dict[str, str]) -> RunRecord | None:
    """The newest FINISHED run with a logged model that trained what this config would train."""
    fingerprint = fingerprints[TAG_TRAINING_FINGERPRINT]
    return next((run for run in finished_runs_with(settings, TAG_TRAINING_FINGERPRINT, fingerprint)
                 if TAG_MODEL_URI in run.tags and TRAIN_SECONDS in run.metrics), None)


@dataclass
class KeptTraining:
    """The last trained (or reused) classifier of this process, by the run that trained its
    weights, with what the run computed from it and the shop: the sweep's next job (the basic
    launcher runs them in one process) that reuses that run's training takes them from here
    instead of loading the model, retracing its predict functions and predicting the same shop
    again. One at a time."""

    weights_of: str  # the run that trained these weights
    # The options of the embedding stage (the embedding layer, the prediction batch size): what the
    # kept results depend on besides the weights, whose run's training fingerprint covers the data.
    key: str
    classifier: Classifier
    results: dict = field(default_factory=dict)

    def remember(self, what, compute):
        """``compute()``, or its value from an earlier job with this classifier; ``what`` names
        the result and every setting besides the weights and the shop that it depends on."""
        if what not in self.results:
            self.results[what] = compute()
        return self.results[what]


_KEPT: list[KeptTraining] = []  # the last run's, once it has done its work


def reuse_training(settings: TrackingSettings, source: RunRecord, x: ExperimentConfig, shop: Catalogue,
                   embedding_key: str) -> tuple[KeptTraining, ReusedTraining]:
    """The classifier with ``source``'s trained weights (loaded as ``promote`` loads a run's model)
    and, when the untrained reference is scored, the untrained classifier's shop embeddings, kept
    from an earlier job of this process when it had them; and the training stage's result: the run
    that trained the weights and its times."""
    trained_by = source.tags.get(TAG_TRAINING_REUSED_FROM, source.run_id)  # the run that did train
    kept = next((kept for kept in _KEPT if (kept.weights_of, kept.key) == (trained_by, embedding_key)), None)
    if kept is None:
        initial = build_classifier(x.model, x.data.image_size)  # what the source started from
        trained = replace(initial, model=StoredRun(settings, source).keras_model())
        kept = KeptTraining(trained_by, embedding_key, trained)
        if UNTRAINED in x.eval.references:
            kept.remember("untrained", lambda: embed_items(initial, shop, x.eval.batch_size))
    return kept, ReusedTraining(trained_by, source.metrics[TRAIN_SECONDS], source.metrics.get(FIT_SECONDS, 0.0))


def name_job(cfg: DictConfig, settings: TrackingSettings) -> str:
    """A sweep job's run name: its swept values, from Hydra's job overrides and the sweep's
    command line as its parent recorded it; "job <n>" when nothing is swept."""
    job = HydraConfig.get().job
    parent = cfg.tracking.parent_run_id
    command = sweep_command_overrides(settings, parent) if parent else []
    return job_name(list(HydraConfig.get().overrides.task), command) or f"job {job.num}"


def skip_finished_job(cfg: DictConfig, settings: TrackingSettings) -> float | None:
    """A multirun job's earlier FINISHED run of the same config (tracking.resume): say so, count it
    among the sweep's runs, and return its headline metric (what a sweeper expects); else None."""
    earlier = earlier_finished_run(settings, job_fingerprint(resolved_values(cfg)))
    if earlier is None:
        return None
    if cfg.tracking.parent_run_id:
        record_skipped_job(settings, cfg.tracking.parent_run_id, earlier, cfg.run_name)
    value = earlier.metrics[HEADLINE_METRIC]
    print(f"skipped {cfg.run_name}: run {earlier.run_id} FINISHED with this config ({HEADLINE_METRIC} {value:.3f}); "
          "tracking.resume=false runs it again")
    return value


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> float | None:
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        x = experiment_config(cfg)  # run_experiment checks it too; here a config error gets its own message
    except Exception as error:  # an invalid option, named in the message: no run was started
        message = f"invalid config: {type(error).__name__}: {error}"
        if multirun:  # the other jobs of the sweep may be valid
            return failed_job(f"{message} (no MLflow run started)")
        sys.exit(f"fashionbench.run: {message}")
    if multirun:
        settings = tracking_settings(x.tracking.uri, x.tracking.experiment_name, x.tracking.artifact_location)
        if cfg.run_name is None:
            # Name each job by its swept values: MLflow draws names from Python's `random`, which
            # the previous job seeded, so generated names would repeat across a sweep.
            cfg.run_name = name_job(cfg, settings)
        if x.tracking.resume and (earlier := skip_finished_job(cfg, settings)) is not None:
            return earlier
    try:
        summary = run_experiment(cfg)
    except (Terminated, KeyboardInterrupt) as interruption:  # the run is marked KILLED
        if multirun and SUBMITIT_JOB in os.environ:  # a scheduler's job (scancel, a time limit), a process of its own
            # Returning lets submitit write the job's result, so the sweep collects its other jobs; an
            # exit here left it without one and the launcher stopped the whole sweep.
            return failed_job(f"job interrupted ({interruption or 'Ctrl-C'}); its MLflow run is marked KILLED")
        sys.exit(f"fashionbench.run: {interruption or 'interrupted'}; the MLflow run is marked KILLED"
                 if isinstance(interruption, Terminated) else 130)
    except Exception as error:
        if multirun and time_limit(error):  # its run is marked KILLED, naming the limit; the next job runs
            return failed_job(f"job cut short by the scheduler's time limit (its MLflow run is marked KILLED): "
                              f"{type(error).__name__}: {error}")
        if multirun:  # a started run is already marked FAILED in MLflow; the next job runs
            return failed_job(f"job failed (its MLflow run, if one started, is marked FAILED): "
                              f"{type(error).__name__}: {error}")
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
