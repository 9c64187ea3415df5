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


def per_pair_ratings(users: TasteUsers, shop) -> pd.DataFrame:
    """TasteUsers.simulate as it was first written (no reviews): a frame per (user, category) pair."""
    import math

    from fashionbench.data import CATEGORIES
    from fashionbench.data.measured_attributes import attribute_vectors, item_attributes

    attributes, _ = item_attributes(shop)
    features = attribute_vectors(attributes).astype(np.float64)
    categories = [c for c in CATEGORIES if (shop.items["category"] == c).any()]
    mix = shop.items["category"].value_counts(normalize=True).to_dict()
    members = {c: np.flatnonzero(shop.items["category"].to_numpy() == c) for c in categories}
    cumulative = np.cumsum(users.rating_histogram) / np.sum(users.rating_histogram)
    rng, frames = np.random.default_rng(users.seed), []
    for user in range(users.n_users):
        taste = rng.normal(0.0, 1.0, features.shape[1])
        for category in categories:
            size = min(len(members[category]), max(1, round(users.items_per_user * mix[category])))
            rated = rng.choice(members[category], size=size, replace=False)
            scores = features[rated] @ taste / math.sqrt(attributes.shape[1]) + rng.normal(0.0, users.noise, size)
            frames.append(pd.DataFrame({"user_id": f"user-{user:04d}", "item_id": shop.items["item_id"].to_numpy()[rated],
                                        "category": category,
                                        "rating": 1 + np.searchsorted(cumulative, (np.argsort(np.argsort(scores)) + 0.5) / size)}))
    return pd.concat(frames, ignore_index=True)


def per_pair_splits(users, fraction: float, seed: int) -> list[tuple]:
    """hold_out_favourites as it was first written: a groupby loop over the pairs."""
    rng, splits = np.random.default_rng(seed), []
    for (user_id, category), group in users.ratings.groupby(["user_id", "category"], sort=True):
        favourites = group.loc[group["rating"] >= users.favourite_threshold, "item_id"].tolist()
        if len(favourites) >= 2:
            shuffled = [favourites[i] for i in rng.permutation(len(favourites))]
            n_held = min(len(shuffled) - 1, max(1, round(fraction * len(shuffled))))
            splits.append((user_id, category, shuffled[n_held:], shuffled[:n_held]))
    return splits


@pytest.mark.parametrize("items_per_user, threshold", [(10, 4), (25, 3), (7, 5)])
def test_users_and_splits_are_the_draws_of_the_per_pair_loops(tiny_catalogue, items_per_user, threshold):
    # The vectorised stages must consume the random stream as the per-pair loops did: same ratings,
    # same favourites held out, bit for bit (a run's ratings and pairs are compared across versions).
    shop = shop_of(tiny_catalogue)
    config = TasteUsers(n_users=12, items_per_user=items_per_user, rating_histogram=[1, 2, 1, 3, 2],
                        favourite_threshold=threshold, seed=3)
    users = config.simulate(shop)
    pd.testing.assert_frame_equal(users.ratings, per_pair_ratings(config, shop), check_exact=True)
    for fraction in (0.2, 0.5, 0.9):
        held_out = hold_out_favourites(users, fraction, seed=5)
        assert [(s.user_id, s.category, s.queries, s.held_out) for s in held_out] == per_pair_splits(users, fraction, 5)
        assert held_out.skipped == users.ratings.groupby(["user_id", "category"]).ngroups - len(held_out)
