"""Simulated users: a taste over item attributes, ratings, favourites and held-out favourites.

A user's taste is a random weight per attribute value (colour=red, pattern=dots, ...). Its
score for an item is the sum of the weights of the item's attribute values plus Gaussian
noise; scores become ratings by matching a target rating histogram (by default the one
observed in the Women's E-Commerce Clothing Reviews), so ratings look like real reviews
while similar-looking items get similar ratings. Everything is deterministic from ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fashionbench.data import Catalogue
from fashionbench.data.catalogue import ATTRIBUTE_PREFIX

# Ratings 1..5 in the first 1,000 rows of the Women's E-Commerce Clothing Reviews (Kaggle).
REVIEWS_RATING_HISTOGRAM = (27, 72, 127, 228, 546)


class UsersConfigError(ValueError):
    """An invalid ``users.*`` option."""


@dataclass(frozen=True)
class SimulatedUsers:
    """Ratings of shop items: one row per (user_id, item_id) with the item's category."""

    ratings: pd.DataFrame  # user_id, item_id, category, rating
    favourite_threshold: int

    @property
    def favourites(self) -> pd.DataFrame:
        return self.ratings[self.ratings["rating"] >= self.favourite_threshold]

    @property
    def n_users(self) -> int:
        return int(self.ratings["user_id"].nunique())


@dataclass(frozen=True)
class HeldOutFavourites:
    """One user's favourites in one category, split into queries and held-out targets."""

    user_id: str
    category: str
    queries: list[str]
    held_out: list[str]


def simulate_users(
    shop: Catalogue,
    n_users: int = 50,
    items_per_user: int = 60,
    rating_histogram: tuple[float, ...] = (1, 1, 1, 1, 1),
    noise: float = 0.3,
    favourite_threshold: int = 4,
    seed: int = 0,
) -> SimulatedUsers:
    """Each of ``n_users`` rates ``items_per_user`` random shop items (all if the shop is smaller).

    ``rating_histogram[r-1]`` is the relative frequency of rating r; the scale is
    1..len(rating_histogram). Raises UsersConfigError for unusable options.
    """
    _validate(n_users, items_per_user, rating_histogram, noise, favourite_threshold)
    attribute_columns = [c for c in shop.items.columns if c.startswith(ATTRIBUTE_PREFIX)]
    if not attribute_columns:
        raise UsersConfigError(
            "simulated users need items with ground-truth attributes (attr_* columns); "
            "this catalogue has none"
        )
    # One-hot item attributes: taste weights are per attribute value.
    features = pd.get_dummies(shop.items[attribute_columns].astype(str)).to_numpy(dtype=np.float64)
    rng = np.random.default_rng(seed)
    per_user = min(items_per_user, len(shop))
    cumulative = np.cumsum(rating_histogram) / np.sum(rating_histogram)
    item_ids = shop.items["item_id"].to_numpy()
    categories = shop.items["category"].to_numpy()
    frames = []
    for user in range(n_users):
        taste = rng.normal(0.0, 1.0, features.shape[1])
        rated = rng.choice(len(shop), size=per_user, replace=False)
        scores = features[rated] @ taste / math.sqrt(len(attribute_columns))
        scores += rng.normal(0.0, noise, per_user)
        # Histogram matching: the q-quantile of this user's scores gets the rating whose
        # cumulative frequency first reaches q.
        quantiles = (np.argsort(np.argsort(scores)) + 0.5) / per_user
        frames.append(pd.DataFrame({
            "user_id": f"user-{user:04d}",
            "item_id": item_ids[rated],
            "category": categories[rated],
            "rating": 1 + np.searchsorted(cumulative, quantiles),
        }))
    ratings = pd.concat(frames, ignore_index=True)
    return SimulatedUsers(ratings, favourite_threshold)


def hold_out_favourites(
    users: SimulatedUsers, fraction: float = 0.5, seed: int = 0
) -> tuple[list[HeldOutFavourites], int]:
    """Per user and category, hide ``fraction`` of the favourites (at least one, leaving one query).

    Returns the splits and how many (user, category) pairs were skipped for having fewer
    than two favourites (nothing to query with, or nothing to find).
    """
    if not 0.0 < fraction < 1.0:
        raise UsersConfigError(f"eval.holdout_fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    splits, skipped = [], 0
    for (user_id, category), group in users.ratings.groupby(["user_id", "category"], sort=True):
        favourites = group.loc[group["rating"] >= users.favourite_threshold, "item_id"].tolist()
        if len(favourites) < 2:
            skipped += 1
            continue
        shuffled = [favourites[i] for i in rng.permutation(len(favourites))]
        n_held = min(len(shuffled) - 1, max(1, round(fraction * len(shuffled))))
        splits.append(HeldOutFavourites(user_id, category, shuffled[n_held:], shuffled[:n_held]))
    return splits, skipped


def _validate(n_users, items_per_user, rating_histogram, noise, favourite_threshold) -> None:
    if n_users < 1:
        raise UsersConfigError(f"users.n_users must be >= 1, got {n_users}")
    if items_per_user < 2:
        raise UsersConfigError(f"users.items_per_user must be >= 2, got {items_per_user}")
    if len(rating_histogram) < 2 or min(rating_histogram) < 0 or sum(rating_histogram) <= 0:
        raise UsersConfigError(
            f"users.rating_histogram must list >= 2 non-negative frequencies (ratings 1..n), "
            f"got {list(rating_histogram)}"
        )
    if noise < 0:
        raise UsersConfigError(f"users.noise must be >= 0, got {noise}")
    if not 1 <= favourite_threshold <= len(rating_histogram):
        raise UsersConfigError(
            f"users.favourite_threshold must be a rating in 1..{len(rating_histogram)}, got {favourite_threshold}"
        )
