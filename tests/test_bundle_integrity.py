"""What promote takes from a run, and what a registered bundle serves, is what was written: a run
records each logged file's size and hash, promote refuses a damaged one (naming it) and registers
nothing, and a bundle checks its own files where it is loaded."""

import contextlib
import json
import shutil
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from fashionbench.analysis.promotion import PromotionError, promote
from fashionbench.analysis.study import DamagedPairsError, load_run_pairs
from fashionbench.artifacts import CHECKSUMS
from fashionbench.data.checksums import file_hash
from fashionbench.serving.bundle import BUNDLE_CHECKSUMS, BUNDLE_INDEXES, BUNDLE_SHOP_IMAGES
from fashionbench.serving.recommender import BundleError, ShopRecommender
from fashionbench.tracking.store import experiment_runs
from tests.tracked_store import MODEL_NAME

pytestmark = pytest.mark.slow


def artifacts_of(store, run_id: str) -> Path:
    return Path(MlflowClient(store.uri).get_run(run_id).info.artifact_uri.removeprefix("file://"))


@contextlib.contextmanager
def damaged(path: Path, damage):
    """``path`` damaged by ``damage`` for the block, then restored: the store is the session's."""
    original = path.read_bytes()
    try:
        damage(path)
        yield
    finally:
        path.write_bytes(original)


def flip_middle(path: Path) -> None:
    """The same size, other bytes: only a hash tells."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_run_records_the_size_and_hash_of_every_file_it_logs(tracked_store):
    root = artifacts_of(tracked_store, tracked_store.real_run_id)
    recorded = {}
    for path in (root / CHECKSUMS).glob("*.json"):
        recorded.update(json.loads(path.read_text()))
    for name in ("data/shop_images.npz", "data/shop_items.csv", "data/user_ratings.csv", "eval/pairs.csv"):
        assert recorded[name] == {"bytes": (root / name).stat().st_size, "sha256": file_hash(root / name)}
    assert any(name.startswith("indexes/") and name.endswith(".ann") for name in recorded)


@pytest.mark.parametrize("artifact, damage", [
    ("indexes/Dresses.ann", flip_middle),  # loads, and would answer wrongly
    ("indexes/Blouses.ann", truncate),
    ("data/shop_images.npz", truncate),
    ("data/shop_images.npz", flip_middle),
], ids=["index-bytes", "index-truncated", "images-truncated", "images-bytes"])
def test_promote_refuses_a_damaged_file_naming_it_and_registers_nothing(tracked_store, artifact, damage):
    path = artifacts_of(tracked_store, tracked_store.real_run_id) / artifact
    name = f"{MODEL_NAME}-damaged"
    with damaged(path, damage), pytest.raises(PromotionError) as refused:
        promote(tracked_store.settings, model_name=name)
    message = str(refused.value)
    assert f"run {tracked_store.real_run_id}: its artifact {artifact} is damaged" in message
    assert "\n" not in message
    assert not MlflowClient(tracked_store.uri).search_model_versions(f"name = '{name}'")


def test_a_run_logged_before_checksums_gets_a_clean_refusal_for_a_broken_index(tracked_store):
    root = artifacts_of(tracked_store, tracked_store.real_run_id)
    kept = root.parent / "kept-checksums"
    shutil.move(root / CHECKSUMS, kept)  # as runs logged them before
    try:
        with damaged(root / "indexes/Blouses.ann", truncate), pytest.raises(PromotionError) as refused:
            promote(tracked_store.settings, model_name=f"{MODEL_NAME}-old-run")
        assert "the index of Blouses (Blouses.*) cannot be loaded" in str(refused.value)
    finally:
        shutil.move(kept, root / CHECKSUMS)


def test_a_registered_bundle_checks_its_files_where_it_loads(tracked_store, champion, tmp_path):
    client = MlflowClient(tracking_uri=tracked_store.uri, registry_uri=tracked_store.uri)
    source = client.get_model_version_download_uri(MODEL_NAME, champion.version)
    local = Path(mlflow.artifacts.download_artifacts(source, dst_path=str(tmp_path), tracking_uri=tracked_store.uri))
    (checksums,) = local.rglob(BUNDLE_CHECKSUMS)
    bundle = checksums.parent
    assert ShopRecommender(bundle).k >= 1
    (index,) = [path for path in (bundle / BUNDLE_INDEXES).glob("Dresses.*") if path.suffix != ".json"]
    for path, damage in ((index, flip_middle), (bundle / BUNDLE_SHOP_IMAGES, flip_middle)):
        with damaged(path, damage), pytest.raises(BundleError, match=f"{path.relative_to(bundle).as_posix()} is "
                                                                     "damaged"):
            ShopRecommender(bundle)
    checksums.unlink()  # a bundle registered before checksums loads as it did
    assert ShopRecommender(bundle).k >= 1


@pytest.mark.parametrize("text", ["model: [unclosed", "a: 1", "- a list"], ids=["not-yaml", "other-keys", "a-list"])
def test_promote_refuses_a_run_whose_config_is_not_one_naming_it(tracked_store, text):
    root = artifacts_of(tracked_store, tracked_store.real_run_id)
    kept = root.parent / "kept-config-checksum"
    shutil.move(root / CHECKSUMS / "Config.json", kept)  # as runs logged it before its checksum
    try:
        with damaged(root / "config.yaml", lambda path: path.write_text(text)), \
                pytest.raises(PromotionError) as refused:
            promote(tracked_store.settings, model_name=f"{MODEL_NAME}-bad-config")
    finally:
        shutil.move(kept, root / CHECKSUMS / "Config.json")
    assert f"run {tracked_store.real_run_id}: its config.yaml is not a run's resolved config" in str(refused.value)


def test_promote_refuses_a_run_whose_config_was_edited(tracked_store):
    """Another image size in config.yaml would serve the model on images it never saw."""
    path = artifacts_of(tracked_store, tracked_store.real_run_id) / "config.yaml"
    text = path.read_text()
    assert "image_size: 32" in text
    edited = text.replace("image_size: 32", "image_size: 64", 1)
    with damaged(path, lambda path: path.write_text(edited)), pytest.raises(PromotionError) as refused:
        promote(tracked_store.settings, model_name=f"{MODEL_NAME}-edited-config")
    assert f"run {tracked_store.real_run_id}: its artifact config.yaml is damaged" in str(refused.value)


def test_per_pair_results_that_are_not_what_the_run_wrote_are_never_compared(tracked_store, tmp_path):
    """A value changed in eval/pairs.csv (still a valid table, the same size) is caught by the run's
    checksum before compare, report or promote's verdict reads it."""
    run = next(r for r in experiment_runs(tracked_store.settings) if r.run_id == tracked_store.real_run_id)
    path = artifacts_of(tracked_store, run.run_id) / "eval" / "pairs.csv"
    text = path.read_text()
    digit = next(i for i, c in enumerate(text) if c == "0" and text[i - 1] == "," and text[i + 1] == ".")
    edited = text[:digit] + "1" + text[digit + 1:]  # a metric 0.x made 1.x: same size
    with damaged(path, lambda path: path.write_text(edited)), pytest.raises(DamagedPairsError) as refused:
        load_run_pairs(tracked_store.settings, [run], tmp_path)
    assert f"run {run.run_id} ({run.run_name}): eval/pairs.csv is damaged" in str(refused.value)
    assert len(load_run_pairs(tracked_store.settings, [run], tmp_path / "again")) == 1  # restored: read
