"""The artifact contract: what a run stores, under which names, and how it is read back.

Every artifact path, tag and headline metric name that more than one module uses is a
constant here, and every file a later command reads (the shop, the users' ratings, the
indexes, the split table) has its writer and its reader side by side, so a rename or a
format change is made in one place. ``build_bundle`` turns a run's artifacts into the
self-contained recommender that ``promote`` registers and ``recommend --run`` loads.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from fashionbench.data import Catalogue
from fashionbench.data.rows import row_chunks

if TYPE_CHECKING:  # fashionbench.index measures itself under names defined here
    from fashionbench.index import CategoryIndex

# --- artifact paths inside a run ---------------------------------------------------------
CONFIG = "config.yaml"  # the resolved config
ERROR = "error.txt"  # the traceback of a FAILED run
SPLIT_TABLE = "data/split_table.csv"  # items per category (rows) and split (columns)
SKIPPED_ITEMS = "data/skipped_items.csv"  # what the data source could not use, and why
SHOP_ITEMS = "data/shop_items.csv"  # the shop as indexed: item table ...
SHOP_IMAGES = "data/shop_images.npz"  # ... and the images the model saw
USER_RATINGS = "data/user_ratings.csv"  # user_id, item_id, category, rating
INDEXES = "indexes"  # <Category>.json + the backend's files (CategoryIndex.save)
CONFUSION_MATRIX = "plots/confusion_matrix.png"
CLASSIFICATION_TABLE = "eval/classification.csv"  # precision, recall, f1, support per category
INDEX_QUALITY_TABLE = "eval/index_quality.csv"  # the index against exact search, per category
LADDER_PLOT = "plots/ladder.png"  # the run at a glance: precision@k per recommender and category
PAIRS = "eval/pairs.csv"  # one row per (user, category) pair and recommender (fashionbench.evaluation.pairs)
PAIR_SUMMARY = "eval/summary.csv"  # the pairs' means per recommender and category
MODEL = "model"  # the run's model: its own weights and architecture (fashionbench.model.parts)
BACKBONES = "backbones"  # in the experiment's backbone store run: <fingerprint>/ holds one backbone
REPORT = "report"  # where a report run keeps the report and its plot

# --- tags ----------------------------------------------------------------------------------
TAG_GIT_COMMIT = "git_commit"
TAG_DATA_FINGERPRINT = "data_fingerprint"
TAG_WEIGHTS_USED = "weights_used"
TAG_MODEL_URI = "model_uri"  # the logged model: runs:/<id>/model (before lean artifacts: models:/<id>)
TAG_BACKBONE = "backbone"  # the fingerprint of the backbone the run's model shares
TAG_BACKBONE_STORE_RUN = "backbone_store_run"  # ... and the run that stores it
TAG_BACKBONE_STORE = "backbone_store"  # "true" on an experiment's backbone store run
TAG_TRUNK_CACHE = "trunk_cache"
TAG_ERROR = "error"  # why a run FAILED or was KILLED, in one line
# diagnostic_failed/<what>: a dataset input or a plot that could not be logged, and why (the run went on)
TAG_DIAGNOSTIC_FAILED_PREFIX = "diagnostic_failed/"
TAG_HOST = "host"  # where the run's process runs ...
TAG_PID = "pid"  # ... its process id ...
TAG_PID_START = "pid_start"  # ... and when that process started: a later process can tell it is gone
TAG_GPU = "gpu"  # the GPU of the sweep's pool the job ran on (fashionbench.runtime.gpu_pool)
TAG_SWEEP_ID = "sweep_id"  # on every job of a sweep: its parent run's id
TAG_SWEEP = "sweep"  # "parent" on a sweep's parent run
SWEEP_PARENT = "parent"
TAG_OVERRIDES = "overrides"  # on a sweep's parent: the command line's overrides
# On a sweep's parent, one tag per earlier FINISHED run a resumed sweep skipped its job for:
# "sweep_reused/<run id>" = the job's name. The sweep's runs are its children and these.
TAG_SWEEP_REUSED_PREFIX = "sweep_reused/"
TAG_CONFIG_FINGERPRINT = "config_fingerprint"  # the resolved config less tracking and naming (fingerprint.py)
TAG_TRAINING_FINGERPRINT = "training_fingerprint"  # what decides the trained weights, data and code included
TAG_TRAINING_REUSED_FROM = "training_reused_from"  # the run whose trained weights this run reused
TAG_REPORT = "report"  # on a report's run
TAG_EVAL_FINGERPRINT = "eval_fingerprint"  # who is evaluated on what: equal for runs comparable pair by pair
TAG_ORACLE = "oracle_attributes"  # what the oracle recommender compared items by, or why it was skipped
TAG_CLASSIFIER_WARNING = "classifier_warning"  # set when the classifier does not beat the majority class
TAG_INDEX_BACKEND = "index_backend"  # annoy | exact | hnsw: which index the run's metrics describe

# --- metric names ----------------------------------------------------------------------------
# MLflow's chart view groups a run's metrics into sections by the key's part before its last "/"
# and orders the sections alphabetically; keys without "/" land in a last "Model metrics" pile.
# So every key has a section, and the section names are chosen to read in this order:
#   headline/                the answer: the model's precision@k beside the random floor, normalised
#   ladder/<metric>_at_<k>   one chart per recommender, random to oracle (fashionbench.evaluation.pairs)
#   model/...                the classifier: test scores, training times and curves
#   pipeline/<stage>         diagnostics apart: data counts, caches, users, index quality
HEADLINE_SECTION = "headline/"
LADDER_SECTION = "ladder/"
MODEL_SECTION = "model/"
TRAINING_SECTION = "model/training/"
DATA_SECTION = "pipeline/data/"
CACHE_SECTION = "pipeline/cache/"
USERS_SECTION = "pipeline/users/"
INDEX_SECTION = "pipeline/index/"  # the index against exact search (fashionbench.index.quality)
# The same names for every backend (the tag index_backend says which), the shop's totals:
INDEX_RECALL = INDEX_SECTION + "recall_at_k"  # recall@index.quality_k as ann-benchmarks counts it
INDEX_QPS = INDEX_SECTION + "qps"  # the index's queries per second, one query at a time
INDEX_EXACT_QPS = INDEX_SECTION + "exact_qps"  # the reference's (brute force, NumPy) on the same queries
INDEX_SPEEDUP = INDEX_SECTION + "speedup"  # INDEX_QPS / INDEX_EXACT_QPS: > 1 where the index pays
INDEX_BUILD_SECONDS = INDEX_SECTION + "build_seconds"
INDEX_BYTES = INDEX_SECTION + "bytes"  # on disk, as saved

HEADLINE_METRIC = HEADLINE_SECTION + "precision_at_k"  # what "best" means unless told otherwise
HEADLINE_RECALL = HEADLINE_SECTION + "recall_at_k"
NORMALISED_HEADLINE = HEADLINE_SECTION + "normalised_precision_at_k"  # (model - random) / (oracle - random)
RANDOM_PREFIX = "random_"  # the random recommender's headline: headline/random_precision_at_k
TEST_ACCURACY = MODEL_SECTION + "test_accuracy"
BALANCED_ACCURACY = MODEL_SECTION + "test_balanced_accuracy"
MAJORITY_RATE = MODEL_SECTION + "test_majority_rate"  # always predicting the test split's most frequent category
TEST_F1 = MODEL_SECTION + "test_f1/"  # + <Category>
TRAIN_SECONDS = TRAINING_SECTION + "train_seconds"  # training's wall time (with the trunk cache: activations + fit)
FIT_SECONDS = TRAINING_SECTION + "fit_seconds"  # model.fit alone
TRUNK_CACHE_USED = CACHE_SECTION + "trunk_cache_used"
EVAL_PAIRS = USERS_SECTION + "eval_pairs"


def random_counterpart(metric: str) -> str:
    """The random recommender's value of a headline metric: ``headline/random_precision_at_k``."""
    section, _, name = metric.rpartition("/")
    return f"{section}/{RANDOM_PREFIX}{name}" if section else f"{RANDOM_PREFIX}{name}"


def ladder_metric(column: str, recommender: str, category: str | None = None) -> str:
    """A ladder metric's name: ``ladder/precision_at_5/model``, ``ladder/precision_at_5/model/Dresses``."""
    return f"{LADDER_SECTION}{column}/{recommender}" + (f"/{category}" if category else "")

# On a sweep's parent: how its jobs ended (SWEEP_RUNS counts its own runs; skipped jobs reused
# an earlier FINISHED run and are counted apart).
SWEEP_SECTION = "sweep/"
SWEEP_RUNS = SWEEP_SECTION + "runs"
SWEEP_RUNS_FINISHED = SWEEP_SECTION + "runs_finished"
SWEEP_RUNS_FAILED = SWEEP_SECTION + "runs_failed"
SWEEP_RUNS_KILLED = SWEEP_SECTION + "runs_killed"
SWEEP_RUNS_UNFINISHED = SWEEP_SECTION + "runs_unfinished"
SWEEP_RUNS_SKIPPED = SWEEP_SECTION + "runs_skipped"
# Jobs the sweeper planned (Hydra's basic sweeper says so up front) that have neither a run nor an
# earlier run they skipped for: the sweep was cut short before it launched them.
SWEEP_JOBS_NOT_RUN = SWEEP_SECTION + "jobs_not_run"
TAG_SWEEP_JOBS = "sweep_jobs"  # on a sweep's parent: how many jobs it planned, where the sweeper tells


# --- a recommender bundle (what promote registers) ---------------------------------------
BUNDLE_CLASSIFIER = "classifier.keras"  # the fine-tuned Keras classifier
BUNDLE_META = "recommender.json"  # embedding layer, image size, k, metric, the source run
BUNDLE_CONFIG = "config.yaml"  # the run's resolved config
BUNDLE_INDEXES = "indexes"  # the run's indexes
BUNDLE_SHOP_ITEMS = "shop_items.csv"
BUNDLE_SHOP_IMAGES = "shop_images.npz"
BUNDLE_USERS = "users.csv"  # the run's users' ratings
BUNDLE_FILES = (BUNDLE_CLASSIFIER, BUNDLE_META, BUNDLE_CONFIG, BUNDLE_INDEXES, BUNDLE_SHOP_ITEMS,
                BUNDLE_SHOP_IMAGES, BUNDLE_USERS)


class ArtifactError(ValueError):
    """A stored artifact that cannot be used; the message names the file and what is wrong."""


def save_shop(shop: Catalogue, items_csv: Path, images_npz: Path) -> None:
    """The shop's item table (CSV) and images (compressed npz with the item ids beside them, as
    ``np.savez_compressed`` writes it, but a chunk of images at a time: the shop's images are
    rows on disk and are never all in memory here)."""
    items_csv.parent.mkdir(parents=True, exist_ok=True)
    images_npz.parent.mkdir(parents=True, exist_ok=True)
    shop.items.to_csv(items_csv, index=False)
    with zipfile.ZipFile(images_npz, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as npz:
        with npz.open("item_ids.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, shop.items["item_id"].to_numpy(str), allow_pickle=False)
        with npz.open("images.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": np.lib.format.dtype_to_descr(shop.images.dtype),
                                                          "fortran_order": False, "shape": tuple(shop.images.shape)})
            for block in row_chunks(shop.images):
                member.write(memoryview(block).cast("B"))


def load_shop(items_csv: Path, images_npz: Path) -> Catalogue:
    """The shop ``save_shop`` wrote. Raises ArtifactError when the two files do not describe the same items."""
    # Every column as written (str): attribute values like "none" must not become NaN.
    items = pd.read_csv(items_csv, dtype=str, keep_default_na=False)
    with np.load(images_npz) as stored:
        image_ids, images = stored["item_ids"].astype(str), stored["images"]
    if image_ids.tolist() != items["item_id"].tolist():
        raise ArtifactError(f"{images_npz} does not hold the images of the items in {items_csv} (ids differ)")
    return Catalogue(items, images)


def save_ratings(ratings: pd.DataFrame, path: Path) -> None:
    """Users' ratings: one row per (user_id, item_id) with the item's category and the rating."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ratings.to_csv(path, index=False)


def load_ratings(path: Path) -> pd.DataFrame:
    """The ratings ``save_ratings`` wrote, ids as text."""
    return pd.read_csv(path, dtype={"user_id": str, "item_id": str})


def save_split_table(table: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path)


def load_split_table(path: Path) -> pd.DataFrame:
    """Items per category (index) and split (columns train, val, test)."""
    return pd.read_csv(path, index_col=0)


def save_indexes(indexes: Mapping[str, CategoryIndex], directory: Path) -> None:
    for index in indexes.values():
        index.save(directory)


def load_indexes(directory: Path) -> dict[str, CategoryIndex]:
    """Every category's index saved in ``directory``, whatever its backend."""
    from fashionbench.index import load_index

    return {path.stem: load_index(directory, path.stem) for path in sorted(Path(directory).glob("*.json"))}


class RunArtifacts(Protocol):
    """A tracked run's stored files, as ``build_bundle`` reads them (tracking provides one)."""

    run_id: str
    metrics: Mapping[str, float]

    def download(self, artifact_path: str, destination: Path) -> Path:
        """Copy one artifact file or folder into ``destination``; return its local path."""

    def keras_model(self) -> Any:
        """The run's logged Keras model."""


def build_bundle(run: RunArtifacts, directory: Path, experiment: str, selected_by: str) -> Path:
    """Gather what a recommender needs from ``run`` into ``directory`` (a bundle: see BUNDLE_FILES
    and ``fashionbench.serving.recommender``). Raises ArtifactError naming the artifact a run lacks."""
    scratch = directory / "_downloads"
    for artifact, name in ((CONFIG, BUNDLE_CONFIG), (SHOP_ITEMS, BUNDLE_SHOP_ITEMS), (SHOP_IMAGES, BUNDLE_SHOP_IMAGES),
                           (USER_RATINGS, BUNDLE_USERS), (INDEXES, BUNDLE_INDEXES)):
        try:
            local = run.download(artifact, scratch / name)
        except Exception as error:  # MlflowException or OSError, by store
            raise ArtifactError(f"run {run.run_id} lacks the artifact {artifact!r} a recommender needs "
                                f"({type(error).__name__}: {error})") from None
        local.rename(directory / name)
    config = OmegaConf.load(directory / BUNDLE_CONFIG)
    run.keras_model().save(directory / BUNDLE_CLASSIFIER)
    meta = {
        "source_run_id": run.run_id, "experiment": experiment,
        "embedding_layer": config.model.embedding_layer, "image_size": int(config.data.image_size),
        "k": int(config.eval.k), "index_metric": config.index.metric,
        "favourite_threshold": float(config.users.favourite_threshold),
        "selected_by": selected_by, selected_by: run.metrics.get(selected_by),
    }
    (directory / BUNDLE_META).write_text(json.dumps(meta, indent=2))
    shutil.rmtree(scratch)
    return directory
