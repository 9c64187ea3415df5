"""Simulated users: deterministic, taste-driven, held-out favourites split as documented."""

import numpy as np
import pandas as pd
import pytest

from fashionbench.data.synthetic import SyntheticSource
from fashionbench.users.simulation import TasteUsers, UsersConfigError, hold_out_favourites


def shop_of(tiny_catalogue):
    return tiny_catalogue.split("test")


def test_same_seed_same_users_and_held_out_sets(tiny_catalogue):
    shop = shop_of(tiny_catalogue)
    first = TasteUsers(n_users=5, items_per_user=10, seed=1).simulate(shop)
    again = TasteUsers(n_users=5, items_per_user=10, seed=1).simulate(shop)
    pd.testing.assert_frame_equal(first.ratings, again.ratings)
    assert hold_out_favourites(first, 0.5, seed=2) == hold_out_favourites(again, 0.5, seed=2)
    other = TasteUsers(n_users=5, items_per_user=10, seed=2).simulate(shop)
    assert not first.ratings.equals(other.ratings)


def test_ratings_follow_the_histogram_in_every_category():
    shop = SyntheticSource(image_size=32, scale=0.1).load().split("test")
    users = TasteUsers(n_users=40, items_per_user=len(shop), rating_histogram=[1, 1, 2, 0, 4]).simulate(shop)
    assert users.ratings.groupby("user_id").size().eq(len(shop)).all()
    for category, ratings in users.ratings.groupby("category"):
        share = ratings["rating"].value_counts(normalize=True).reindex(range(1, 6), fill_value=0)
        n_items = (shop.items.category == category).sum()  # quantiles of n items: 1/n resolution
        np.testing.assert_allclose(share.to_numpy(), [0.125, 0.125, 0.25, 0.0, 0.5], atol=1 / n_items)


def test_ratings_depend_on_attributes_not_on_chance(tiny_catalogue):
    # Without noise, two items with identical attributes get the same rating from a user.
    shop = shop_of(tiny_catalogue)
    users = TasteUsers(n_users=10, items_per_user=len(shop), noise=0.0, seed=0).simulate(shop)
    attributes = shop.items.set_index("item_id").filter(like="attr_")
    merged = users.ratings.join(attributes, on="item_id")
    spread = merged.groupby(["user_id", *attributes.columns])["rating"].nunique()
    assert spread.max() <= 2  # ties at a histogram boundary may split one group in two
    assert (spread == 1).mean() > 0.9


def test_held_out_favourites_split_each_users_favourites(tiny_catalogue):
    users = TasteUsers(n_users=8, items_per_user=20, seed=0).simulate(shop_of(tiny_catalogue))
    held_out = hold_out_favourites(users, fraction=0.5, seed=0)
    splits, skipped = held_out.splits, held_out.skipped
    favourites = users.favourites
    for split in splits:
        expected = set(favourites[(favourites.user_id == split.user_id) & (favourites.category == split.category)].item_id)
        assert set(split.queries) | set(split.held_out) == expected
        assert not set(split.queries) & set(split.held_out)
        assert split.queries and split.held_out
    pairs = favourites.groupby(["user_id", "category"]).size()
    assert skipped == users.ratings.groupby(["user_id", "category"]).ngroups - (pairs >= 2).sum()


@pytest.mark.parametrize(
    "options, message",
    [({"n_users": 0}, "users.n_users"), ({"items_per_user": 1}, "users.items_per_user"),
     ({"rating_histogram": [1]}, "users.rating_histogram"), ({"favourite_threshold": 6}, "users.favourite_threshold"),
     ({"noise": -1}, "users.noise")],
)
def test_invalid_user_options_name_the_option(tiny_catalogue, options, message):
    with pytest.raises(UsersConfigError, match=message):
        TasteUsers(**options).simulate(shop_of(tiny_catalogue))


def reviews_without_shorts(tmp_path, n_dresses=40, n_skirts=30):
    header = ",Clothing ID,Age,Title,Review Text,Rating,Recommended IND,Positive Feedback Count,Division Name,Department Name,Class Name\n"
    lines = [f"{i},{100 + i % 7},30,,ok,{5 if i % 4 else 1},1,0,General,Dresses,Dresses" for i in range(n_dresses)]
    lines += [f"{n_dresses + i},{200 + i % 5},30,,ok,{2 + i % 2},1,0,General,Bottoms,Skirts" for i in range(n_skirts)]
    path = tmp_path / "reviews.csv"
    path.write_text(header + "\n".join(lines) + "\n")
    return path


def test_taste_users_calibrated_on_reviews_follow_each_class(tiny_catalogue, tmp_path):
    shop = shop_of(tiny_catalogue)
    users = TasteUsers(n_users=30, items_per_user=None, reviews=str(reviews_without_shorts(tmp_path)),
                       min_reviews_per_category=10, seed=0).simulate(shop)
    # Skirts were rated only 2 or 3 in the file; Dresses 5 (3 in 4) or 1.
    skirts = users.ratings[users.ratings.category == "Skirts"].rating
    assert set(skirts) <= {2, 3}
    dresses = users.ratings[users.ratings.category == "Dresses"].rating
    assert set(dresses) <= {1, 5} and (dresses == 5).mean() > 0.6
    # Shorts and Blouses are absent: reported, rated with the overall histogram.
    assert users.metrics()["pipeline/users/histogram_fallback_Shorts"] == 1.0
    assert users.metrics()["pipeline/users/histogram_fallback_Blouses"] == 1.0
    assert "pipeline/users/histogram_fallback_Dresses" not in users.metrics()
    assert set(users.ratings.category) == set(shop.items.category)
    assert users.metrics()["pipeline/users/items_per_user"] == round(70 / 30)


def test_course_users_deal_review_rows_to_named_users(tiny_catalogue, tmp_path):
    from fashionbench.users.simulation import CourseUsers

    shop = shop_of(tiny_catalogue)
    path = str(reviews_without_shorts(tmp_path))
    users = CourseUsers(path, n_users=5, seed=0).simulate(shop)
    assert set(users.ratings.user_id) <= set("ABCDE")
    assert set(users.ratings.category) == {"Dresses", "Skirts"}
    assert set(users.ratings.item_id) <= set(shop.items.item_id)
    assert users.ratings.equals(CourseUsers(path, n_users=5, seed=0).simulate(shop).ratings)
    assert users.metrics()["pipeline/users/reviews_rows"] == 70
