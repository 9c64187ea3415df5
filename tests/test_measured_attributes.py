"""Attributes read off pixels stand in where a source publishes none."""

import numpy as np
import pandas as pd

from fashionbench.data import Catalogue
from fashionbench.data.measured_attributes import measured_attributes
from fashionbench.data.synthetic import SyntheticSource
from fashionbench.users.simulation import TasteUsers


def test_measured_colour_agrees_with_the_drawn_colour():
    catalogue = SyntheticSource(image_size=32, scale=0.02).load()
    measured = measured_attributes(catalogue.images)["attr_colour"]
    expected = {"green": "green", "navy": "blue", "purple": "purple", "red": "red"}
    drawn = catalogue.items["attr_colour"]
    for drawn_colour, family in expected.items():
        picked = measured[drawn == drawn_colour]
        assert (picked == family).mean() >= 0.7, (drawn_colour, picked.value_counts().to_dict())


def test_plain_backgrounds_and_solid_garments():
    image = np.full((40, 40, 3), 240, np.uint8)
    image[10:30, 12:28] = (20, 40, 120)  # a navy garment on white
    dark = np.full((40, 40, 3), 250, np.uint8)
    dark[8:32, 8:32] = (15, 15, 15)
    table = measured_attributes(np.stack([image, dark]))
    assert table.to_dict("list") == {"attr_colour": ["blue", "black"], "attr_lightness": ["medium", "dark"],
                                     "attr_saturation": ["vivid", "muted"]}


def test_taste_users_fall_back_to_measured_attributes(tiny_catalogue):
    shop = tiny_catalogue.split("test")
    plain = Catalogue(shop.items[["item_id", "category", "split", "source"]], shop.images)
    users = TasteUsers(n_users=3, items_per_user=10, seed=0).simulate(plain)
    assert users.metrics()["pipeline/users/attributes_measured"] == 1.0
    assert set(users.ratings["item_id"]) <= set(plain.items["item_id"])
    assert isinstance(users.ratings, pd.DataFrame) and len(users.ratings) > 0


def test_measured_attributes_are_reported_with_calibrated_users_too(tiny_catalogue, tmp_path):
    from tests.test_users import reviews_without_shorts

    shop = tiny_catalogue.split("test")
    plain = Catalogue(shop.items[["item_id", "category", "split", "source"]], shop.images)
    users = TasteUsers(n_users=3, items_per_user=None, reviews=str(reviews_without_shorts(tmp_path))).simulate(plain)
    assert users.metrics()["pipeline/users/attributes_measured"] == 1.0
    assert users.metrics()["pipeline/users/reviews_rows"] == 70
