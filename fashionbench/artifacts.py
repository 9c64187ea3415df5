"""The artifact contract's names: what a run stores and under which names. Names only.

Every artifact path, tag and metric name that more than one module uses is a constant here, with
one formatter and one parser of metric names (``MetricName``), so a rename is made in one place.
The files themselves are written and read by the package that owns what they hold: the shop and
the split table by ``data.artifact_files``, the users' ratings by ``users.ratings``, the indexes by
``index.store``, a recommender bundle by ``serving.bundle``.
"""

from __future__ import annotations

from dataclasses import dataclass


class ArtifactError(ValueError):
    """A stored artifact that cannot be used; the message names the file and what is wrong."""


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
SAME_ITEM = "eval/same_item.csv"  # one row per same-item query and recommender (fashionbench.evaluation.same_item)
CHECKSUMS = "checksums"  # <Stage>.json: each file a stage logged, its size and SHA-256 (fashionbench.data.checksums)
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
TAG_CALIBRATION = "calibration"  # on a calibration run (compare --calibrate): "<metric> of <recommender>"
TAG_CALIBRATED_CONFIGURATION = "calibration_configuration"  # ... the configuration it trained
TAG_CALIBRATED_RUNS = "calibration_runs"  # ... and the trainings it was measured from, comma-separated
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
SAME_ITEM_SECTION = "same_item/"  # same-item retrieval: same_item/recall_at_<k>/<recommender>
SAME_ITEM_COLUMN_PREFIX = "same_item_"  # its per-query columns: same_item_recall_at_<k>
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
EMBEDDING_DIM = MODEL_SECTION + "embedding_dim"  # the embedding layer's width
TRUNK_CACHE_USED = CACHE_SECTION + "trunk_cache_used"
EVAL_PAIRS = USERS_SECTION + "eval_pairs"


def metric_column(metric: str, k: int) -> str:
    """A metric at k: ``precision_at_5``, the per-pair table's column and a ladder metric's middle part."""
    return f"{metric}_at_{k}"


def random_counterpart(metric: str) -> str:
    """The random recommender's value of a headline metric: ``headline/random_precision_at_k``."""
    section, _, name = metric.rpartition("/")
    return f"{section}/{RANDOM_PREFIX}{name}" if section else f"{RANDOM_PREFIX}{name}"


def ladder_metric(column: str, recommender: str, category: str | None = None) -> str:
    """A ladder metric's name: ``ladder/precision_at_5/model``, ``ladder/precision_at_5/model/Dresses``."""
    return f"{LADDER_SECTION}{column}/{recommender}" + (f"/{category}" if category else "")


@dataclass(frozen=True)
class MetricName:
    """A recommendation metric's parts, as ``parse_metric_name`` reads them from a logged name or a
    per-pair column: ``ladder/ndcg_at_10/pixels/Dresses`` is ndcg at 10 of the pixels recommender in
    Dresses; ``headline/precision_at_k`` is the model's precision at ``eval.k`` (``k`` None)."""

    metric: str  # precision, recall, ndcg, hit, mrr, hits, coverage, ild
    k: int | None  # None: the run's headline k (eval.k)
    recommender: str | None = None  # None: not named (a per-pair column; headline: the model)
    category: str | None = None

    @property
    def column(self) -> str | None:
        """The per-pair column (``precision_at_5``); None for the headline, whose k is the run's."""
        return None if self.k is None else metric_column(self.metric, self.k)


def parse_metric_name(name: str) -> MetricName | None:
    """The parts of a recommendation metric's name (``ladder/<metric>_at_<k>/<recommender>[/<Category>]``,
    ``headline/<metric>_at_k``, ``headline/random_<metric>_at_k``, or a per-pair column
    ``<metric>_at_<k>``); None for any other name (``model/test_accuracy``)."""
    if name.startswith(HEADLINE_SECTION):
        leaf = name.removeprefix(HEADLINE_SECTION)
        recommender = "model"
        if leaf.startswith(RANDOM_PREFIX):
            leaf, recommender = leaf.removeprefix(RANDOM_PREFIX), "random"
        if leaf.startswith("normalised_") or not leaf.endswith("_at_k"):
            return None
        return MetricName(leaf.removesuffix("_at_k"), None, recommender)
    parts = name.removeprefix(LADDER_SECTION).split("/")
    if name.startswith(LADDER_SECTION) and len(parts) not in (2, 3):
        return None
    if not name.startswith(LADDER_SECTION) and len(parts) != 1:
        return None
    metric, _, k = parts[0].rpartition("_at_")
    if not metric or not k.isdigit():
        return None
    return MetricName(metric, int(k), *(parts[1:] + [None, None])[:2])


# A calibration run's measurements of training noise (analysis.calibration).
CALIBRATION_SECTION = "calibration/"

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


