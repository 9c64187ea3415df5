"""Simulated users: deterministic, taste-driven, held-out favourites split as documented."""

import numpy as np
import pandas as pd
import pytest

from fashionbench.users import UsersConfigError, hold_out_favourites, simulate_users


def shop_of(tiny_catalogue):
    return tiny_catalogue.split("test")


def test_same_seed_same_users_and_held_out_sets(tiny_catalogue):
    shop = shop_of(tiny_catalogue)
    first = simulate_users(shop, n_users=5, items_per_user=10, seed=1)
    again = simulate_users(shop, n_users=5, items_per_user=10, seed=1)
    pd.testing.assert_frame_equal(first.ratings, again.ratings)
    assert hold_out_favourites(first, 0.5, seed=2) == hold_out_favourites(again, 0.5, seed=2)
    other = simulate_users(shop, n_users=5, items_per_user=10, seed=2)
    assert not first.ratings.equals(other.ratings)


def test_ratings_follow_the_histogram(tiny_catalogue):
    shop = shop_of(tiny_catalogue)
    users = simulate_users(shop, n_users=40, items_per_user=len(shop), rating_histogram=(1, 1, 2, 0, 4), seed=0)
    share = users.ratings["rating"].value_counts(normalize=True).reindex(range(1, 6), fill_value=0)
    np.testing.assert_allclose(share.to_numpy(), [0.125, 0.125, 0.25, 0.0, 0.5], atol=1 / len(shop))  # quantiles of n items
    assert users.ratings.groupby("user_id").size().eq(len(shop)).all()


def test_ratings_depend_on_attributes_not_on_chance(tiny_catalogue):
    # Without noise, two items with identical attributes get the same rating from a user.
    shop = shop_of(tiny_catalogue)
    users = simulate_users(shop, n_users=10, items_per_user=len(shop), noise=0.0, seed=0)
    attributes = shop.items.set_index("item_id").filter(like="attr_")
    merged = users.ratings.join(attributes, on="item_id")
    spread = merged.groupby(["user_id", *attributes.columns])["rating"].nunique()
    assert spread.max() <= 2  # ties at a histogram boundary may split one group in two
    assert (spread == 1).mean() > 0.9


def test_held_out_favourites_split_each_users_favourites(tiny_catalogue):
    users = simulate_users(shop_of(tiny_catalogue), n_users=8, items_per_user=20, seed=0)
    splits, skipped = hold_out_favourites(users, fraction=0.5, seed=0)
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
     ({"rating_histogram": (1,)}, "users.rating_histogram"), ({"favourite_threshold": 6}, "users.favourite_threshold"),
     ({"noise": -1}, "users.noise")],
)
def test_invalid_user_options_name_the_option(tiny_catalogue, options, message):
    with pytest.raises(UsersConfigError, match=message):
        simulate_users(shop_of(tiny_catalogue), **options)
