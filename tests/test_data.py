"""The synthetic catalogue: deterministic, split like the course, validated."""

import numpy as np
import pandas as pd
import pytest

from fashionbench.data import CATEGORIES, COURSE_SPLIT_SIZES, Catalogue, CatalogueError
from fashionbench.data.synthetic import SyntheticSource


def test_same_seed_same_catalogue_other_seed_other_images():
    first = SyntheticSource(seed=3, image_size=32, scale=0.005).load()
    again = SyntheticSource(seed=3, image_size=32, scale=0.005).load()
    other = SyntheticSource(seed=4, image_size=32, scale=0.005).load()
    assert first.fingerprint() == again.fingerprint()
    pd.testing.assert_frame_equal(first.items, again.items)
    assert first.fingerprint() != other.fingerprint()


def test_split_sizes_are_the_course_proportions_scaled():
    catalogue = SyntheticSource(image_size=32, scale=0.02, min_per_split=1).load()
    table = catalogue.split_table()
    for category, sizes in COURSE_SPLIT_SIZES.items():
        assert tuple(table.loc[category]) == tuple(max(1, round(n * 0.02)) for n in sizes)


def test_items_carry_images_categories_and_attributes(tiny_catalogue):
    assert tiny_catalogue.images.shape[1:] == (32, 32, 3)
    assert tiny_catalogue.images.dtype == np.uint8
    assert set(tiny_catalogue.items["category"]) == set(CATEGORIES)
    assert {"colour", "pattern", "length", "sleeves", "flare"} <= set(tiny_catalogue.attribute_names)
    # Images are drawn, not blank: each has a garment on a background.
    assert all(image.std() > 10 for image in tiny_catalogue.images)


def test_too_small_images_are_rejected_with_the_option_name():
    with pytest.raises(CatalogueError, match="data.image_size must be >= 32"):
        SyntheticSource(image_size=16).load()


def test_catalogue_rejects_unknown_categories():
    items = pd.DataFrame({"item_id": ["a"], "category": ["Hats"], "split": ["train"], "source": ["x"]})
    with pytest.raises(CatalogueError, match="Hats"):
        Catalogue(items, np.zeros((1, 32, 32, 3), np.uint8))
