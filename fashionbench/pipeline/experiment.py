"""One experiment as one MLflow run: every stage in order, each result handed to the run.

Load the catalogue, simulate users (or read them from a log) and hold out their favourites
(before the run starts: a log that cannot be used fails first), build and fine-tune the
classifier (timed), evaluate it on the test split, embed the shop (the test split: new items in
the shop), index it per category and measure the index against exact search, and score the
model beside the reference ladder on every (user, category) pair. Each stage is a function of the
stage packages that returns what it measured; this module only composes them and hands each
result to the run (``TrackedRun.record``). A run whose training a FINISHED run already did reuses
its weights (``pipeline.reuse``).
"""

from __future__ import annotations

import contextlib
import time

from omegaconf import DictConfig

from fashionbench.artifacts import TAG_CONFIG_FINGERPRINT, TAG_GPU, TAG_TRAINING_FINGERPRINT
from fashionbench.config import ExperimentConfig
from fashionbench.data.catalogue_store import load_catalogue
from fashionbench.evaluation.classification import score_classification
from fashionbench.evaluation.pairs import check_cutoffs, evaluate_shop
from fashionbench.evaluation.references import UNTRAINED
from fashionbench.evaluation.same_item import has_views, ladder_vectors, same_item_retrieval
from fashionbench.index.quality import measure_shop_index
from fashionbench.index.shop import build_shop_index
from fashionbench.model.classifier import build_classifier
from fashionbench.options import Stage
from fashionbench.pipeline.fingerprints import stage_fingerprint, training_fingerprint
from fashionbench.pipeline.job import Job, prepare_job
from fashionbench.pipeline.reuse import MEMORY, KeptTraining, reuse_training, trained_run
from fashionbench.pipeline.summary import RunSummary
from fashionbench.runtime import gpu_pool
from fashionbench.runtime.device import configure_device
from fashionbench.tracking.run_models import model_tags
from fashionbench.tracking.runs import reap_orphaned_runs, tracked_run
from fashionbench.tracking.settings import tracking_settings
from fashionbench.tracking.store import check_server_answers
from fashionbench.training.fit import train_classifier
from fashionbench.training.shop_pass import shop_outputs
from fashionbench.training.trunk_cache import TrunkCache
from fashionbench.training.trunk_free import BuildRecorder, build_key, trunk_free_start
from fashionbench.users.simulation import HeldOutSplits, SimulatedUsers


def run_experiment(job: Job | DictConfig | ExperimentConfig) -> RunSummary:
    """Run one experiment as one MLflow run; the run ends FAILED (and this raises) on any error.

    A config not yet prepared is validated first: an invalid option raises (naming it) before any
    MLflow run starts, as does an unusable data folder or a k the shop cannot fill.
    """
    job = job if isinstance(job, Job) else prepare_job(job)
    x = job.config
    settings = tracking_settings(x.tracking.uri, x.tracking.experiment_name, x.tracking.artifact_location)
    check_server_answers(settings.uri)  # an unreachable tracking server fails here, in seconds, before any data
    data = load_catalogue(x.data, x.data_store.directory, x.data_store.enabled)
    catalogue, shop = data.catalogue, data.catalogue.split("test")  # the test split plays the shop's new items
    check_cutoffs(x.eval, shop)
    # The users and their held-out items, before any run starts: an interaction log that cannot be
    # used (a cut outside it) fails here, and the jobs of a sweep in this process share them.
    users, splits, users_seconds = _users_and_splits(x, catalogue, shop, (stage_fingerprint(job.values, Stage.USERS),
                                                                          data.catalogue.fingerprint()))
    reap_orphaned_runs(settings)  # runs of this host whose process died (SIGKILL, a crash) are marked KILLED
    fingerprints = {TAG_CONFIG_FINGERPRINT: job.fingerprint,
                    TAG_TRAINING_FINGERPRINT: training_fingerprint(job.values, data.catalogue.fingerprint())}
    weights_from = trained_run(settings, fingerprints[TAG_TRAINING_FINGERPRINT]) if x.tracking.reuse_training \
        else None
    gpu = gpu_pool.claimed_gpu()  # in a parallel sweep with a GPU pool: the one this worker holds
    with tracked_run(settings, run_name=x.run_name, tags={TAG_GPU: gpu} if gpu else None,
                     parent_run_id=x.tracking.parent_run_id) as run, contextlib.ExitStack() as leases:
        run.log_config(job.node)
        run.set_tags(fingerprints)
        run.record(data)
        configure_device(x.device)  # before the model is built: its dtype policy and the GPU's memory
        embedding_key = stage_fingerprint(job.values, Stage.EMBEDDING)  # what the kept results depend on
        cache = TrunkCache.from_config(x.train, x.eval.batch_size) if x.train.cache else None
        # The shop's passes run the tail on the frozen trunk's cached activations (training.shop_pass),
        # unless augmented training leaves the cache out.
        shop_cache = None if x.train.augment else cache
        digests: dict[int, str] = {}  # the frozen trunk's weight hashes, once for the shop and the training
        train_split, val_split = catalogue.split("train"), catalogue.split("val")
        # Where the cache holds the record of this build and every split's activations, the classifier's
        # tail is built alone: the frozen trunk would compute nothing (training.trunk_free).
        build = build_key(x.model, x.data.image_size) if weights_from is None and shop_cache is not None else None
        start = trunk_free_start(shop_cache, build, train_split, val_split, shop,
                                 run.backbone_stored if x.tracking.log_model else None) if build else None
        if start is not None:
            leases.callback(start.release)

        def shop_pass(classifier):
            """The shop classified and embedded: on its stored activations for a tail built alone."""
            if start is not None:
                return start.shop_outputs(classifier, shop, x.eval.batch_size)
            return shop_outputs(classifier, shop, x.eval.batch_size, shop_cache, digests)
        recorder = None
        if weights_from is None:
            if start is not None:
                classifier = start.classifier
            else:
                classifier = build_classifier(x.model, x.data.image_size)
                if build is not None:  # for the runs after this one: their tails built alone
                    recorder = BuildRecorder(shop_cache, build, x.model.seed)
                    recorder.start(classifier, digests)
            run.record(classifier)
            kept = KeptTraining(run.run_id, embedding_key, classifier)
            if UNTRAINED in x.eval.references:  # before training changes the weights in place
                kept.remember("untrained", lambda: shop_pass(classifier)[1])
            if start is not None:
                training = start.train(train_split, val_split, x.train, seed=x.model.seed,
                                       jit_compile=x.device.jit_compile)
            else:
                training = train_classifier(classifier.model, train_split, val_split, x.train, seed=x.model.seed,
                                            cache=cache, trunk_digests=digests, jit_compile=x.device.jit_compile)
        else:  # the same data, model, training, seeds and code FINISHED before: its weights, no training
            kept, training = reuse_training(settings, weights_from, x, shop, embedding_key, shop_cache)
            classifier = kept.classifier
            run.record(classifier)
        run.record(training)
        # Kept from a job that did not score the untrained reference: the seeded classifier, built again,
        # starts where the trained one started.
        untrained = kept.remember("untrained", lambda: shop_outputs(build_classifier(x.model, x.data.image_size), shop,
                                                                    x.eval.batch_size, shop_cache)[1]) \
            if UNTRAINED in x.eval.references else None
        # One pass over the shop (the test split) classifies and embeds it. Same weights, same shop: the
        # same predictions (kept for the sweep's next index-only job).
        probabilities, embeddings = kept.remember("shop outputs", lambda: shop_pass(classifier))
        classification = score_classification(shop, probabilities)
        run.record(classification)
        run.record(embeddings)
        shop_index = build_shop_index(shop, embeddings, x.index)
        run.record(shop_index)
        # Against exact search, as ann-benchmarks does, whatever the backend; its queries per second
        # are timed with nothing on the run's own thread (a plot being drawn would share the processor).
        run.wait_idle()
        run.record(measure_shop_index(shop_index, embeddings, x.index.quality_k, x.index.quality_repeats))
        if x.tracking.log_model and weights_from is None:  # trained: its weights are final
            run.prepare_classifier(classifier)  # on the run's thread while the stages below run

        run.record(users, users_seconds[0])  # the seconds they took before the run
        run.record(splits, users_seconds[1])
        recommendations = evaluate_shop(shop_index, users, splits, untrained, x.index, x.eval)
        run.record(recommendations)  # the model and the reference ladder, pair by pair
        if has_views(shop):  # several photos of each garment: a ground truth that no user simulation shapes
            run.record(same_item_retrieval(shop, ladder_vectors(shop, embeddings, untrained, x.eval), x.index.metric,
                                           x.eval.same_item_ks))

        if x.tracking.log_model and weights_from is None:  # lean: its own layers; the backbone once per experiment
            run.log_classifier(classifier)
        elif x.tracking.log_model:  # the weights the source run logged: that model, not a second copy
            run.set_tags(model_tags(weights_from))
        if recorder is not None:
            recorder.finish()
        MEMORY.keep(kept)  # for the next job of this process, once this run has done its work
        metrics = {**training.metrics(), **classification.metrics(), **recommendations.metrics()}
        return RunSummary(run.run_id, settings.uri, run.experiment_id, x.eval.k, metrics)


_USERS: dict[tuple[str, str], tuple[SimulatedUsers, HeldOutSplits]] = {}  # this process's last users and splits


def _users_and_splits(x: ExperimentConfig, catalogue, shop, key: tuple[str, str]
                      ) -> tuple[SimulatedUsers, HeldOutSplits, tuple[float, float]]:
    """The users of ``shop``, their held-out splits and the seconds each took (0 when kept), kept
    for the next job of this process with the same ``users.*`` and ``eval.holdout_fraction``
    options and the same catalogue (``key``)."""
    if key in _USERS:
        return *_USERS[key], (0.0, 0.0)
    start = time.perf_counter()
    users = x.users.simulate(shop, catalogue)
    simulated = time.perf_counter()
    splits = x.users.hold_out(users, x.eval.holdout_fraction)
    _USERS.clear()
    _USERS[key] = users, splits
    return users, splits, (simulated - start, time.perf_counter() - simulated)
