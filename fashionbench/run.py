"""``python -m fashionbench.run``: compose the config, run every stage, log it all to MLflow.

One experiment: load the catalogue, build and fine-tune the classifier (timed), evaluate it
on the test split, embed the shop (the test split: new items in the shop), index it per
category, simulate users, and measure precision@k of the recommendations against held-out
favourites, beside a random recommender's.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

import hydra  # noqa: E402
import numpy as np  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from hydra.errors import InstantiationException  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from fashionbench.data import CATEGORIES  # noqa: E402
from fashionbench.data.catalogue_store import load_catalogue  # noqa: E402
from fashionbench.embed import embed_items  # noqa: E402
from fashionbench.evaluate import classification_report, evaluate_recommendations, random_recommender  # noqa: E402
from fashionbench.index import build_shop_index, validate_index_options  # noqa: E402
from fashionbench.index_quality import measure_index, shop_index_metrics  # noqa: E402
from fashionbench.model import predict_in_batches  # noqa: E402
from fashionbench.tracking import flatten_config, tracked_run, tracking_settings  # noqa: E402
from fashionbench.train import train_classifier  # noqa: E402
from fashionbench.trunk_cache import TrunkCache  # noqa: E402
from fashionbench.users import hold_out_favourites  # noqa: E402

log = logging.getLogger("fashionbench")


@dataclass
class RunSummary:
    """What a finished run reports: its MLflow id and headline metrics."""

    run_id: str
    tracking_uri: str
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def objective(self) -> float:
        """What a sweeper maximises: overall precision@k."""
        return self.metrics["precision_at_k"]

    def text(self) -> str:
        m = self.metrics
        lines = [
            f"test accuracy      {m['test_accuracy']:.3f}",
            f"train seconds      {m['train_seconds']:.1f}",
            f"precision@k        {m['precision_at_k']:.3f}   (random recommender {m['random_precision_at_k']:.3f})",
        ]
        for category in CATEGORIES:
            if f"precision_at_k_{category}" in m:
                lines.append(
                    f"  {category:<16} {m[f'precision_at_k_{category}']:.3f}   "
                    f"(random {m[f'random_precision_at_k_{category}']:.3f})"
                )
        lines += [
            f"MLflow run         {self.run_id}",
            f"open it with       mlflow ui --backend-store-uri {self.tracking_uri}",
        ]
        return "\n".join(lines)


def build(config: DictConfig, **kwargs):
    """``instantiate`` a config's ``_target_``; an error raised by the target itself (an invalid
    option, a missing file) propagates as it was raised, not wrapped in Hydra's exception."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as error:
        if error.__cause__ is not None:
            raise error.__cause__ from None
        raise


def run_experiment(cfg: DictConfig) -> RunSummary:
    """Run one experiment as one MLflow run; the run ends FAILED (and this raises) on any error."""
    settings = tracking_settings(cfg.tracking.uri, cfg.tracking.experiment_name, cfg.tracking.artifact_location)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    with tracked_run(settings, run_name=cfg.run_name) as run, tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        run.log_params(flatten_config(resolved))
        run.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        validate_index_options(cfg.index.metric, cfg.index.n_trees, cfg.index.search_k)

        # Model first: a bad freeze, layer or weights option fails before any data is loaded.
        image_size = (cfg.data.image_size, cfg.data.image_size)
        classifier = build(cfg.model, image_size=image_size, learning_rate=cfg.train.learning_rate, seed=cfg.seed)
        run.set_tags({"weights_used": classifier.weights_used})
        run.log_metrics({"trainable_backbone_layers": classifier.trainable_backbone_layers})

        loaded = load_catalogue(build(cfg.data), cfg.data_store.dir, cfg.data_store.enabled)
        catalogue = loaded.catalogue
        run.log_metrics(loaded.metrics())
        split_table = catalogue.split_table()
        run.set_tags({"data_fingerprint": catalogue.fingerprint()})
        run.log_text(split_table.to_csv(), "data/split_table.csv")
        run.log_metrics({f"items_{split}": float(split_table[split].sum()) for split in split_table.columns})
        run.log_metrics({f"skipped_{reason}": count for reason, count in catalogue.skipped.items()})
        run.log_metrics({f"converted_{what}": count for what, count in catalogue.converted.items()})
        run.log_text(catalogue.skipped_items.to_csv(index=False), "data/skipped_items.csv")
        log.info("catalogue %s: %d items\n%s", cfg.data.name, len(catalogue), split_table)

        trunk_cache = (TrunkCache(cfg.train.cache_dir, cfg.train.cache_max_gb, cfg.train.cache_dtype,
                                  cfg.eval.batch_size) if cfg.train.cache else None)
        training = train_classifier(classifier.model, catalogue.split("train"), catalogue.split("val"),
                                    cfg.train.epochs, cfg.train.batch_size, seed=cfg.seed,
                                    cache=trunk_cache, augment=cfg.train.augment)
        run.log_metrics(training.cache.metrics())
        run.set_tags({"trunk_cache": training.cache.reason})
        run.log_metrics({"train_seconds": training.seconds})
        run.log_history(training.history)

        test = catalogue.split("test")
        report = classification_report(test.labels, predict_in_batches(classifier.model, test.images, cfg.eval.batch_size))
        run.log_metrics(report.metrics())
        run.log_artifact(report.plot_confusion_matrix(workdir / "confusion_matrix.png"), "plots")

        shop = test  # the test split plays the shop's new items
        # The shop as the registry will need it: item table and the images the model saw.
        shop.items.to_csv(workdir / "shop_items.csv", index=False)
        np.savez_compressed(workdir / "shop_images.npz", item_ids=shop.items["item_id"].to_numpy(str),
                            images=shop.images)
        run.log_artifact(workdir / "shop_items.csv", "data")
        run.log_artifact(workdir / "shop_images.npz", "data")
        embeddings = embed_items(classifier, shop, cfg.eval.batch_size)
        indexes = build_shop_index(embeddings, cfg.index.metric, cfg.index.n_trees, cfg.index.search_k, cfg.seed)
        for index in indexes.values():
            index.save(workdir / "indexes")
        run.log_artifacts(workdir / "indexes", "indexes")
        # Annoy against exact search on the same vectors, as ann-benchmarks measures it.
        run.log_metrics(shop_index_metrics([
            measure_index(index, embeddings.of_category(category).vectors, cfg.index.quality_k,
                          cfg.index.quality_repeats, workdir / "indexes" / f"{category}.ann")
            for category, index in indexes.items()]))
        run.log_metrics({"embedding_dim": embeddings.dim})

        users = build(cfg.users)(shop=shop, seed=cfg.seed)
        # Who rated what: promote puts it in the registered model (recommend --user needs it).
        run.log_text(users.ratings.to_csv(index=False), "data/user_ratings.csv")
        splits, skipped_pairs = hold_out_favourites(users, cfg.eval.holdout_fraction, seed=cfg.seed)
        if not splits:
            log.warning("no user has >= 2 favourites in any category: precision@k is undefined (NaN); "
                        "raise users.items_per_user or lower users.favourite_threshold")
        run.log_metrics({"users": users.n_users, "favourites": len(users.favourites),
                         "eval_pairs_skipped": skipped_pairs, **users.metrics})

        def annoy_recommender(category: str, queries: list[str], k: int) -> list[str]:
            return [item for item, _ in indexes[category].recommend(queries, k)]

        shop_items = {c: index.item_ids.tolist() for c, index in indexes.items()}
        annoy_report = evaluate_recommendations(annoy_recommender, splits, cfg.eval.k)
        random_report = evaluate_recommendations(random_recommender(shop_items, cfg.seed), splits, cfg.eval.k)
        run.log_metrics(annoy_report.metrics())
        run.log_metrics(random_report.metrics(prefix="random_"))

        if cfg.tracking.log_model:
            run.log_keras_model(classifier.model)
        metrics = {"train_seconds": training.seconds, **report.metrics(), **annoy_report.metrics(),
                   **random_report.metrics(prefix="random_")}
        return RunSummary(run.run_id, settings.uri, metrics)


def swept_overrides(job_overrides: list[str], command_line: list[str]) -> str:
    """The job's overrides of the keys the command line sweeps (``freeze=2,4,8`` -> "freeze=4")."""
    swept = {arg.split("=", 1)[0].lstrip("+~") for arg in command_line
             if "=" in arg and ("," in arg.split("=", 1)[1] or arg.split("=", 1)[1].startswith(("range(", "choice(", "glob(")))}
    return " ".join(o for o in job_overrides if o.split("=", 1)[0].lstrip("+~") in swept)


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> float | None:
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun and cfg.run_name is None:
        # Name each job by its swept values: MLflow draws names from Python's `random`, which
        # the previous job seeded, so generated names would repeat across a sweep.
        cfg.run_name = swept_overrides(HydraConfig.get().overrides.task, sys.argv[1:]) or (
            f"job {HydraConfig.get().job.num}")
    try:
        summary = run_experiment(cfg)
    except Exception as error:
        if multirun:
            # The basic launcher stops a sweep at the first job that raises; this run is
            # already marked FAILED in MLflow, so report it and let the next job run.
            log.error("run failed (marked FAILED in MLflow): %s: %s", type(error).__name__, error)
            return None
        log.debug("run failed", exc_info=True)
        sys.exit(f"fashionbench.run failed: {type(error).__name__}: {error}")
    print(summary.text())
    return summary.objective


if __name__ == "__main__":
    main()
