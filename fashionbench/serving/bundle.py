"""A recommender bundle: everything a recommender needs from a run, gathered in one folder.

``build_bundle`` turns a run's artifacts into the self-contained folder that ``promote`` registers
(inside an ``mlflow.pyfunc`` model, ``tracking.registry``) and ``recommend --run`` loads
(``serving.recommender.ShopRecommender``). ``BUNDLE_FILES`` lists what it holds.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fashionbench.artifacts import CONFIG, INDEXES, SHOP_IMAGES, SHOP_ITEMS, USER_RATINGS, ArtifactError
from fashionbench.data.checksums import check_file, verify, write_checksums

# The fine-tuned classifier, whole: its parts and backbone (``model.parts.save_classifier_files``),
# gathered and checked without TensorFlow; bundles registered before held one Keras file instead.
BUNDLE_CLASSIFIER = "classifier"
LEGACY_BUNDLE_CLASSIFIER = "classifier.keras"
BUNDLE_META = "recommender.json"  # embedding layer, image size, k, metric, the source run
BUNDLE_CONFIG = "config.yaml"  # the run's resolved config
BUNDLE_INDEXES = "indexes"  # the run's indexes
BUNDLE_SHOP_ITEMS = "shop_items.csv"
BUNDLE_SHOP_IMAGES = "shop_images.npz"
BUNDLE_USERS = "users.csv"  # the run's users' ratings
BUNDLE_CHECKSUMS = "checksums.json"  # each file but the classifier's: size, SHA-256 (older bundles lack it)
BUNDLE_FILES = (BUNDLE_CLASSIFIER, BUNDLE_META, BUNDLE_CONFIG, BUNDLE_INDEXES, BUNDLE_SHOP_ITEMS,
                BUNDLE_SHOP_IMAGES, BUNDLE_USERS)


class RunArtifacts(Protocol):
    """A tracked run's stored files, as ``build_bundle`` reads them (tracking provides one)."""

    run_id: str
    metrics: Mapping[str, float]

    def download(self, artifact_path: str, destination: Path) -> Path:
        """Copy one artifact file or folder into ``destination``; return its local path."""

    def save_model(self, directory: Path) -> None:
        """Write the run's logged classifier, whole and checked, into ``directory``
        (``model.parts.load_classifier_files`` reads it)."""

    def checksums(self) -> Mapping[str, Mapping]:
        """The size and hash the run recorded of each file it logged, by artifact path (``fashionbench.data.checksums``;
        empty for a run logged before them)."""


def build_bundle(run: RunArtifacts, directory: Path, experiment: str, selected_by: str) -> Path:
    """Gather what a recommender needs from ``run`` into ``directory`` (a bundle: see BUNDLE_FILES
    and ``fashionbench.serving.recommender``). Raises ArtifactError naming the artifact a run lacks."""
    scratch = directory / "_downloads"
    recorded = run.checksums()
    for artifact, name in ((CONFIG, BUNDLE_CONFIG), (SHOP_ITEMS, BUNDLE_SHOP_ITEMS), (SHOP_IMAGES, BUNDLE_SHOP_IMAGES),
                           (USER_RATINGS, BUNDLE_USERS), (INDEXES, BUNDLE_INDEXES)):
        try:
            local = run.download(artifact, scratch / name)
        except Exception as error:  # MlflowException or OSError, by store
            raise ArtifactError(f"run {run.run_id} lacks the artifact {artifact!r} a recommender needs "
                                f"({type(error).__name__}: {error})") from None
        # Each file as the run wrote it (a damaged one is refused here, never registered).
        if local.is_dir():
            verify(local, {path[len(artifact) + 1:]: value for path, value in recorded.items()
                           if path.startswith(artifact + "/")}, f"run {run.run_id}: its artifact {artifact}/")
        elif artifact in recorded:
            check_file(local, recorded[artifact], f"run {run.run_id}: its artifact {artifact}")
        local.rename(directory / name)
    try:
        config = OmegaConf.load(directory / BUNDLE_CONFIG)
        meta = {
            "source_run_id": run.run_id, "experiment": experiment,
            "embedding_layer": config.model.embedding_layer, "image_size": int(config.data.image_size),
            "k": int(config.eval.k), "index_metric": config.index.metric,
            # null: every rated item is a favourite (users=interactions without a threshold)
            "favourite_threshold": None if config.users.get("favourite_threshold") is None
            else float(config.users.favourite_threshold),
            "selected_by": selected_by, selected_by: run.metrics.get(selected_by),
        }
    except (yaml.YAMLError, OmegaConfBaseException, AttributeError, KeyError, TypeError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ArtifactError(f"run {run.run_id}: its {CONFIG} is not a run's resolved config "
                            f"({type(error).__name__}: {first_line})") from None
    run.save_model(directory / BUNDLE_CLASSIFIER)
    (directory / BUNDLE_META).write_text(json.dumps(meta, indent=2))
    shutil.rmtree(scratch)
    # Checked where the bundle is loaded; the classifier's files carry hashes of their own.
    write_checksums(directory, directory / BUNDLE_CHECKSUMS, exclude=(BUNDLE_CLASSIFIER,))
    return directory
