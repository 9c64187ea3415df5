"""The real-data sources: DeepFashion, labelled CSVs (product images, clothing photos), folders."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from fashionbench.data import CATEGORIES, CatalogueError
from fashionbench.data.splitting import split_counts, stratified_course_split
from tests.conftest import SHARED_DATA, compose_config
from tests.source_fixtures import CATEGORY_COLOURS, make_deepfashion, make_product_images, save_photo

CLOTHING = SHARED_DATA / "clothing_dataset"
needs_clothing_photos = pytest.mark.skipif(
    not (CLOTHING / "images.csv").is_file(),
    reason=f"the shared clothing photos are not at {CLOTHING} (set FASHIONBENCH_SHARED to the shared/ folder)",
)


def load(config_name: str, root: Path, *overrides: str):
    """The catalogue a user gets with ``data=<config_name> data.root=<root>``."""
    cfg = compose_config([f"data={config_name}", f"data.root={root}", "data.image_size=32", *overrides])
    return OmegaConf.to_object(cfg.data).load()


def mean_colour(catalogue, category: str) -> np.ndarray:
    return catalogue.images[catalogue.labels == CATEGORIES.index(category)].reshape(-1, 3).mean(axis=0)


@pytest.fixture(scope="module")
def deepfashion_root(tmp_path_factory) -> Path:
    return make_deepfashion(tmp_path_factory.mktemp("deepfashion"))


def test_deepfashion_loads_mapped_categories_with_the_published_split(deepfashion_root):
    catalogue = load("deepfashion", deepfashion_root)
    assert catalogue.split_table().to_numpy().tolist() == [[2, 2, 2]] * 4
    # The split comes from list_eval_partition.txt (the fixture names folders after it).
    assert all(row.source.startswith(f"img/{row.split}_") for row in catalogue.items.itertuples())
    assert catalogue.skipped == {"unmapped_label": 6}  # Anorak and Tee, one per split each
    assert catalogue.skipped_items.empty  # deliberate exclusions are counted, not listed
    for category, colour in CATEGORY_COLOURS.items():
        assert np.abs(mean_colour(catalogue, category) - colour).max() < 20, category
    assert set(catalogue.attribute_names) == {"texture", "fabric", "shape", "part", "style"}
    assert set(catalogue.items["attr_texture"]) <= {"floral", "striped", "none"}
    assert set(catalogue.items["attr_style"]) <= {"boho chic", "none"}  # names with spaces survive


def test_deepfashion_mapping_is_configurable(deepfashion_root):
    catalogue = load("deepfashion", deepfashion_root, "+data.categories.Tee=Blouses")
    assert catalogue.split_table().loc["Blouses"].tolist() == [3, 3, 3]
    assert catalogue.skipped == {"unmapped_label": 3}


def test_deepfashion_without_attribute_files_has_no_attributes(tmp_path):
    root = make_deepfashion(tmp_path, per_split=1, with_attributes=False)
    assert load("deepfashion", root).attribute_names == []


def test_deepfashion_errors_name_the_file_or_option(tmp_path, deepfashion_root):
    with pytest.raises(CatalogueError, match=r"data.categories names \['Jumpsuit'\].*list_category_cloth.txt"):
        load("deepfashion", deepfashion_root, "+data.categories.Jumpsuit=Dresses")
    with pytest.raises(CatalogueError, match=r"data.categories maps to unknown categories \{'Skirt': 'Hats'\}"):
        load("deepfashion", deepfashion_root, "data.categories.Skirt=Hats")
    root = make_deepfashion(tmp_path / "noheader", per_split=1, with_attributes=False)
    listing = root / "Anno/list_category_img.txt"
    listing.write_text("\n".join(listing.read_text().splitlines()[2:]))
    with pytest.raises(CatalogueError, match=r"list_category_img.txt: expected line 1 = the number.*image_name  category_label"):
        load("deepfashion", root)
    half = make_deepfashion(tmp_path / "half", per_split=1, with_attributes=False)
    (half / "Anno/list_attr_cloth.txt").write_text("1\nattribute_name  attribute_type\nfloral 1\n")
    with pytest.raises(CatalogueError, match="list_attr_img.txt: file not found"):
        load("deepfashion", half)
    with pytest.raises(CatalogueError, match="data.root"):
        load("deepfashion", tmp_path / "nowhere")


def test_product_images_filters_maps_and_keeps_rows_with_unquoted_commas(tmp_path):
    catalogue = load("product_images", make_product_images(tmp_path))
    assert catalogue.items["category"].value_counts().to_dict() == dict.fromkeys(CATEGORIES, 4)
    # Each article type's first row has "..., Pack of 1" unquoted: rejoined, not dropped.
    assert catalogue.converted == {"csv_row_rejoined": 4}
    assert catalogue.skipped == {"filtered_out": 1, "unmapped_label": 1}  # a man's shorts, heels
    assert "2001" not in set(catalogue.items["item_id"])
    assert set(catalogue.attribute_names) == {"colour", "usage", "season"}
    assert set(catalogue.items["attr_colour"]) == {"Blue"}
    assert (catalogue.split_table() > 0).all().all()  # stratified: every category in every split


def test_csv_split_is_seeded_and_stratified_in_the_course_proportions():
    categories = np.repeat(CATEGORIES, [155, 357, 308, 444])
    first, again = stratified_course_split(categories, seed=0), stratified_course_split(categories, seed=0)
    assert (first == again).all()
    assert (first != stratified_course_split(categories, seed=1)).any()
    table = pd.crosstab(categories, first)[["train", "val", "test"]]
    assert table.loc["Skirts"].tolist() == [89, 37, 29]  # 493:209:160 of 155, largest remainder
    assert sum(split_counts(444, (2063, 694, 694))) == 444
    assert split_counts(3, (493, 209, 160)) == (1, 1, 1)


def test_folders_flat_and_the_course_split_layout(tmp_path):
    flat = tmp_path / "flat"
    for category in ("Skirts", "Dresses", "Shorts", "Blouses_Shirts", "Hats"):
        for number in range(4):
            save_photo(flat / category / f"{number}.jpg", CATEGORY_COLOURS.get(category, (200, 200, 200)))
    (flat / "Skirts" / "notes.txt").write_text("not an image")
    (flat / "Skirts" / ".DS_Store").write_bytes(b"\0")
    (flat / "Dresses" / "loop.jpg").symlink_to("loop.jpg")  # a link to itself: counted, never dropped unsaid
    (flat / "Dresses" / "gone.jpg").symlink_to(tmp_path / "deleted.jpg")
    catalogue = load("folders", flat)
    assert catalogue.items["category"].value_counts().to_dict() == dict.fromkeys(CATEGORIES, 4)
    assert catalogue.skipped == {"unmapped_label": 4, "other_file_type": 1, "not_a_file": 2}
    assert sorted(catalogue.skipped_items["item"]) == ["Dresses/gone.jpg", "Dresses/loop.jpg", "Skirts/notes.txt"]

    course = tmp_path / "course"
    for split, count in (("Train", 3), ("Val", 2), ("Test", 1)):
        for category in ("Skirts", "Dresses", "Shorts", "Blouses_Shirts"):
            for number in range(count):
                save_photo(course / split / category / f"{number}.png", CATEGORY_COLOURS.get(category, (230, 200, 40)))
    catalogue = load("folders", course)
    assert catalogue.split_table().to_numpy().tolist() == [[3, 2, 1]] * 4
    assert np.abs(mean_colour(catalogue, "Blouses") - CATEGORY_COLOURS["Blouses"]).max() < 20


def test_max_per_category_subsamples_with_the_seed(deepfashion_root):
    small = load("deepfashion", deepfashion_root, "data.max_per_category=3")
    assert small.items["category"].value_counts().to_dict() == dict.fromkeys(CATEGORIES, 3)
    assert small.split_table().to_numpy().tolist() == [[1, 1, 1]] * 4  # the published split keeps its shares
    again = load("deepfashion", deepfashion_root, "data.max_per_category=3")
    assert small.items["item_id"].tolist() == again.items["item_id"].tolist()


@needs_clothing_photos
def test_shared_clothing_photos_load_with_the_counts_of_images_csv():
    started = time.perf_counter()
    catalogue = load("clothing_photos", CLOTHING)
    seconds = time.perf_counter() - started
    labels = pd.read_csv(CLOTHING / "images.csv")["label"].value_counts()
    expected = {"Dresses": labels["Dress"], "Skirts": labels["Skirt"], "Shorts": labels["Shorts"],
                "Blouses": labels["Blouse"] + labels["Top"] + labels["Shirt"]}
    assert expected == {"Dresses": 357, "Skirts": 155, "Shorts": 308, "Blouses": 444}
    assert catalogue.items["category"].value_counts().to_dict() == expected
    assert catalogue.skipped == {}
    assert catalogue.images.shape == (1264, 32, 32, 3)
    assert (catalogue.split_table() > 0).all().all()
    print(f"clothing photos: {len(catalogue)} images in {seconds:.1f} s")


@needs_clothing_photos
def test_clothing_photos_config_finds_the_shared_folder_by_default(monkeypatch):
    monkeypatch.setenv("FASHIONBENCH_SHARED", str(SHARED_DATA.parent))
    cfg = compose_config(["data=clothing_photos", "data.max_per_category=5", "data.image_size=32",
                          "+data.filters.kids=[false]"])
    assert Path(cfg.data.root) == CLOTHING
    catalogue = OmegaConf.to_object(cfg.data).load()
    assert catalogue.items["category"].value_counts().to_dict() == dict.fromkeys(CATEGORIES, 5)
    assert catalogue.skipped["filtered_out"] > 0  # kids' clothes left out by the filter
