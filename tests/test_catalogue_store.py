"""The catalogue store: a second load of the same source and files is read back, not decoded."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from fashionbench.config import experiment_config
from fashionbench.data.catalogue_store import load_catalogue
from tests.conftest import compose_config
from tests.source_fixtures import CATEGORY_COLOURS, make_product_images, save_photo, write_hostile_image


def source(config_name: str, *overrides: str):
    """The data source a user gets with ``data=<config_name>`` and these overrides."""
    return OmegaConf.to_object(compose_config([f"data={config_name}", "data.image_size=32", *overrides]).data)


def make_folders(root: Path) -> Path:
    for category in ("Skirts", "Dresses", "Shorts", "Blouses"):
        for number in range(3):
            save_photo(root / category / f"{number}.jpg", CATEGORY_COLOURS[category], seed=number)
    return root


def test_config_stores_catalogues_in_the_session_store_by_default():
    store = experiment_config(compose_config()).data_store
    assert store.enabled is True
    assert store.directory == Path(os.environ["FASHIONBENCH_DATA_STORE"])


def test_second_load_is_a_hit_with_the_same_catalogue_skips_and_conversions(tmp_path):
    root = make_product_images(tmp_path / "products")
    write_hostile_image(root / "images/1001.jpg", "grayscale")  # used after a conversion
    write_hostile_image(root / "images/1002.jpg", "truncated")  # skipped and listed
    products = source("product_images", f"data.root={root}")
    fresh = products.load()
    assert fresh.converted and fresh.skipped_items["item"].tolist()  # the fixture exercises both

    first = load_catalogue(products, tmp_path / "store")
    second = load_catalogue(products, tmp_path / "store")

    assert (first.hit, second.hit) == (False, True)
    metrics = second.metrics()
    assert (metrics["pipeline/data/catalogue_store_hit"], metrics["pipeline/data/load_seconds"]) == (1.0, second.seconds)
    # What the run logs about the data: items per split, skipped and converted items by reason.
    assert metrics["pipeline/data/items_train"] + metrics["pipeline/data/items_val"] + metrics["pipeline/data/items_test"] == len(fresh)
    assert metrics["pipeline/data/skipped_truncated"] == 1.0 and metrics["pipeline/data/converted_image_mode_L"] == 1.0
    for loaded in (first.catalogue, second.catalogue):
        assert loaded.fingerprint() == fresh.fingerprint()
        assert dict(loaded.skipped) == dict(fresh.skipped)
        assert dict(loaded.converted) == dict(fresh.converted)
        pd.testing.assert_frame_equal(loaded.items, fresh.items)
        pd.testing.assert_frame_equal(loaded.skipped_items, fresh.skipped_items)


def test_changing_a_source_option_misses(tmp_path):
    store = tmp_path / "store"
    tiny = ("data.scale=0.01", "data.min_per_split=1")
    assert not load_catalogue(source("synthetic", *tiny), store).hit
    assert load_catalogue(source("synthetic", *tiny), store).hit
    noisier = load_catalogue(source("synthetic", *tiny, "data.noise=20"), store)
    other_seed = load_catalogue(source("synthetic", *tiny, "seed=1"), store)
    assert not noisier.hit and not other_seed.hit
    assert len({noisier.key, other_seed.key, load_catalogue(source("synthetic", *tiny), store).key}) == 3


def test_touching_replacing_or_adding_an_image_misses(tmp_path):
    root = make_folders(tmp_path / "photos")
    store = tmp_path / "store"
    folders = source("folders", f"data.root={root}")
    before = load_catalogue(folders, store)
    assert load_catalogue(folders, store).hit

    photo = root / "Skirts" / "0.jpg"
    stat = photo.stat()
    os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # touched, same bytes
    touched = load_catalogue(folders, store)
    assert not touched.hit and touched.catalogue.fingerprint() == before.catalogue.fingerprint()

    save_photo(photo, CATEGORY_COLOURS["Dresses"], seed=7)  # replaced by another photo
    replaced = load_catalogue(folders, store)
    assert not replaced.hit and replaced.catalogue.fingerprint() != before.catalogue.fingerprint()

    save_photo(root / "Shorts" / "new.jpg", CATEGORY_COLOURS["Shorts"])
    added = load_catalogue(folders, store)
    assert not added.hit and len(added.catalogue) == len(before.catalogue) + 1


def test_a_truncated_entry_is_ignored_and_rewritten(tmp_path, caplog):
    store = tmp_path / "store"
    synthetic = source("synthetic", "data.scale=0.01", "data.min_per_split=1")
    stored = load_catalogue(synthetic, store)
    images = store / stored.key / "images.npy"
    images.write_bytes(images.read_bytes()[: images.stat().st_size // 2])

    with caplog.at_level(logging.WARNING, logger="fashionbench.data"):
        reloaded = load_catalogue(synthetic, store)
    assert not reloaded.hit
    assert f"ignoring unreadable entry {store / stored.key}" in caplog.text
    assert reloaded.catalogue.fingerprint() == stored.catalogue.fingerprint()
    assert load_catalogue(synthetic, store).hit  # rewritten whole


def test_an_entry_whose_data_changed_is_not_returned(tmp_path, caplog):
    store = tmp_path / "store"
    synthetic = source("synthetic", "data.scale=0.01", "data.min_per_split=1")
    stored = load_catalogue(synthetic, store)
    images = store / stored.key / "images.npy"
    damaged = bytearray(images.read_bytes())
    damaged[-1] ^= 0xFF  # one pixel, same file size: only the fingerprint can tell
    images.write_bytes(bytes(damaged))

    with caplog.at_level(logging.WARNING, logger="fashionbench.data"):
        reloaded = load_catalogue(synthetic, store)
    assert not reloaded.hit and "fingerprint" in caplog.text
    assert reloaded.catalogue.fingerprint() == stored.catalogue.fingerprint()


def test_a_disabled_store_never_writes(tmp_path):
    store = tmp_path / "store"
    synthetic = source("synthetic", "data.scale=0.01", "data.min_per_split=1")
    loads = [load_catalogue(synthetic, store, enabled=False) for _ in range(2)]
    assert [loaded.hit for loaded in loads] == [False, False]
    assert not store.exists()
    assert loads[0].catalogue.fingerprint() == loads[1].catalogue.fingerprint()


def test_an_unwritable_store_still_returns_the_catalogue(tmp_path, caplog):
    blocked = tmp_path / "a file, not a folder"
    blocked.write_text("")
    with caplog.at_level(logging.WARNING, logger="fashionbench.data"):
        loaded = load_catalogue(source("synthetic", "data.scale=0.01", "data.min_per_split=1"), blocked / "store")
    assert not loaded.hit and len(loaded.catalogue) > 0
    assert "could not write" in caplog.text
