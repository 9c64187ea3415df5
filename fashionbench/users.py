"""Users of the shop: their ratings, favourites and held-out favourites.

Two ways to make them, both deterministic from ``seed``:
- ``simulate_users`` (users=taste): a user's taste is a random weight per attribute value
  (colour=red, pattern=dots, ...); its score for an item is the sum of the weights of the
  item's attribute values plus Gaussian noise, and scores become ratings by matching a
  rating histogram (optionally calibrated on the reviews CSV), so that ratings look like
  real reviews while similar-looking items get similar ratings.
- ``course_users`` (users=course): the course's own simulation from the reviews CSV, whose
  ratings do not depend on what the items look like.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fashionbench.data import CATEGORIES, Catalogue
from fashionbench.data.catalogue import ATTRIBUTE_PREFIX
from fashionbench.data.measured_attributes import measured_attributes
from fashionbench.reviews import Reviews, load_reviews

log = logging.getLogger(__name__)


class UsersConfigError(ValueError):
    """An invalid ``users.*`` option."""


@dataclass(frozen=True)
class SimulatedUsers:
    """Ratings of shop items: one row per (user_id, item_id) with the item's category."""

    ratings: pd.DataFrame  # user_id, item_id, category, rating
    favourite_threshold: float
    metrics: dict[str, float] = field(default_factory=dict)  # how the users were made, to log

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
    items_per_user: int | None = 100,
    rating_histogram: tuple[float, ...] = (1, 1, 1, 1, 1),
    noise: float = 0.3,
    favourite_threshold: int = 4,
    seed: int = 0,
    reviews: str | None = None,
    class_map: dict[str, str] | None = None,
    min_reviews_per_category: int = 20,
) -> SimulatedUsers:
    """Users with a taste over item attributes rate shop items; ratings follow a histogram.

    Without ``reviews``: each user rates ``items_per_user`` shop items (all, if the shop is
    smaller) spread over the categories as the shop is, and ``rating_histogram[r-1]`` is the
    relative frequency of rating r (scale 1..len). With ``reviews`` (the Women's E-Commerce
    Clothing Reviews CSV) the simulation is calibrated on it: the class mix sets how many
    items of each category a user rates, each category's rating histogram is the file's
    (the overall one for a category with fewer than ``min_reviews_per_category`` rows, which
    is reported), and ``items_per_user=None`` means review rows / ``n_users``. Ratings are
    matched per user and category: a user's q-quantile score gets the rating whose
    cumulative frequency first reaches q. A catalogue without ``attr_*`` columns gets
    attributes measured from its images (see ``measured_attributes``), reported as the
    metric ``users_attributes_measured``. Raises UsersConfigError for unusable options.
    """
    attribute_columns = [c for c in shop.items.columns if c.startswith(ATTRIBUTE_PREFIX)]
    attributes = shop.items[attribute_columns]
    metrics: dict[str, float] = {}
    if not attribute_columns:
        # No ground truth: a taste over colour, lightness and saturation read off the images.
        attributes = measured_attributes(shop.images)
        attribute_columns = list(attributes.columns)
        metrics["users_attributes_measured"] = 1.0
        log.info("the catalogue has no attributes: users' taste is over %s measured from pixels", attribute_columns)
    categories = [c for c in CATEGORIES if (shop.items["category"] == c).any()]
    if reviews is None:
        histograms = {c: np.asarray(rating_histogram, dtype=float) for c in categories}
        mix = shop.items["category"].value_counts(normalize=True).to_dict()
    else:
        calibration = load_reviews(reviews, class_map)
        histograms, mix, calibration_metrics = _calibrate(calibration, categories, min_reviews_per_category)
        metrics.update(calibration_metrics)
        rating_histogram = tuple(calibration.rating_histogram())
        if items_per_user is None:
            items_per_user = max(2, round(len(calibration.rows) / max(n_users, 1)))
    if items_per_user is None:
        raise UsersConfigError("users.items_per_user may be null only when users.reviews names a reviews file")
    _validate(n_users, items_per_user, rating_histogram, noise, favourite_threshold)
    metrics["users_items_per_user"] = float(items_per_user)

    # One-hot item attributes: taste weights are per attribute value.
    features = pd.get_dummies(attributes.astype(str)).to_numpy(dtype=np.float64)
    item_ids = shop.items["item_id"].to_numpy()
    members = {c: np.flatnonzero(shop.items["category"].to_numpy() == c) for c in categories}
    per_category = {c: min(len(members[c]), max(1, round(items_per_user * mix.get(c, 0.0)))) for c in categories}
    cumulative = {c: np.cumsum(histograms[c]) / histograms[c].sum() for c in categories}
    rng = np.random.default_rng(seed)
    frames = []
    for user in range(n_users):
        taste = rng.normal(0.0, 1.0, features.shape[1])
        for category in categories:
            rated = rng.choice(members[category], size=per_category[category], replace=False)
            scores = features[rated] @ taste / math.sqrt(len(attribute_columns))
            scores += rng.normal(0.0, noise, len(rated))
            quantiles = (np.argsort(np.argsort(scores)) + 0.5) / len(rated)
            frames.append(pd.DataFrame({
                "user_id": f"user-{user:04d}",
                "item_id": item_ids[rated],
                "category": category,
                "rating": 1 + np.searchsorted(cumulative[category], quantiles),
            }))
    return SimulatedUsers(pd.concat(frames, ignore_index=True), favourite_threshold, metrics)


def course_users(
    shop: Catalogue,
    reviews: str,
    n_users: int = 5,
    favourite_threshold: int = 4,
    class_map: dict[str, str] | None = None,
    seed: int = 0,
) -> SimulatedUsers:
    """The course's simulation: every review row of the four classes goes to one of
    ``n_users`` users (A, B, C, ...) at random, and every Clothing ID of a class stands for a
    random shop item of that category. A user's rating of an item is the mean of its rows.
    Ratings here do not depend on what items look like."""
    if not 1 <= n_users <= 26:
        raise UsersConfigError(f"users.n_users must be in 1..26 (users are named A..Z), got {n_users}")
    calibration = load_reviews(reviews, class_map)
    rows = calibration.rows
    rng = np.random.default_rng(seed)
    stand_in: dict[tuple[str, str], str] = {}
    for category, group in rows.groupby("category", sort=True):
        shop_items = shop.items.loc[shop.items["category"] == category, "item_id"].to_numpy()
        if len(shop_items) == 0:
            continue
        for clothing_id in sorted(group["clothing_id"].unique()):
            stand_in[(category, clothing_id)] = str(rng.choice(shop_items))
    names = np.array([chr(ord("A") + i) for i in range(n_users)])
    ratings = pd.DataFrame({
        "user_id": names[rng.integers(0, n_users, len(rows))],
        "item_id": [stand_in.get(key) for key in zip(rows["category"], rows["clothing_id"])],
        "category": rows["category"].to_numpy(),
        "rating": rows["rating"].to_numpy(dtype=float),
    }).dropna(subset=["item_id"])
    ratings = ratings.groupby(["user_id", "item_id", "category"], as_index=False)["rating"].mean()
    return SimulatedUsers(ratings, favourite_threshold, calibration.metrics())


def _calibrate(reviews: Reviews, categories: list[str], min_rows: int):
    """Per-category histograms and class mix from the reviews, with the fallbacks reported."""
    counts = reviews.class_counts()
    overall = reviews.rating_histogram().astype(float)
    metrics = reviews.metrics()
    histograms, thin = {}, []
    for category in categories:
        if counts[category] >= min_rows:
            histograms[category] = reviews.rating_histogram(category).astype(float)
        else:
            histograms[category] = overall
            thin.append(category)
            metrics[f"users_histogram_fallback_{category}"] = 1.0
    present = [counts[c] for c in categories if c not in thin]
    # A category the file (almost) lacks still gets rated, as often as an average category.
    stand_in = float(np.mean(present)) if present else 1.0
    weights = {c: (stand_in if c in thin else float(counts[c])) for c in categories}
    mix = {c: w / sum(weights.values()) for c, w in weights.items()}
    if thin:
        log.warning("reviews %s have fewer than %d rows for %s: using the overall rating histogram "
                    "and an average share of ratings for them", reviews.path.name, min_rows, thin)
    return histograms, mix, metrics


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
