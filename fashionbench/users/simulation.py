"""Users of the shop: their ratings, favourites and held-out favourites.

Two ways to make them, each a config schema with a ``simulate(shop)`` method, both
deterministic from their ``seed`` (``users.seed``, which defaults to the top-level seed):
- ``TasteUsers`` (users=taste): a user's taste is a random weight per attribute value
  (colour=red, pattern=dots, ...); its score for an item is the sum of the weights of the
  item's attribute values plus Gaussian noise, and scores become ratings by matching a
  rating histogram (optionally calibrated on the reviews CSV), so that ratings look like
  real reviews while similar-looking items get similar ratings.
- ``CourseUsers`` (users=course): the course's own simulation from the reviews CSV, whose
  ratings do not depend on what the items look like.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fashionbench.artifacts import EVAL_PAIRS, USER_RATINGS, USERS_SECTION
from fashionbench.data import CATEGORIES, Catalogue
from fashionbench.data.measured_attributes import attribute_vectors, item_attributes
from fashionbench.options import ConfigError, Stage, option
from fashionbench.runtime.paths import absolute_path
from fashionbench.stage import StageResult
from fashionbench.users.ratings import favourites, save_ratings
from fashionbench.users.reviews import (
    DEFAULT_CLASS_MAP,
    RATING_SCALE,
    Reviews,
    check_class_map,
    check_reviews_file,
    load_reviews,
)

log = logging.getLogger(__name__)


class UsersConfigError(ConfigError):
    """An invalid ``users.*`` option."""


@dataclass(frozen=True)
class SimulatedUsers(StageResult):
    """Ratings of shop items: one row per (user_id, item_id) with the item's category."""

    ratings: pd.DataFrame  # user_id, item_id, category, rating
    favourite_threshold: float
    simulation: dict[str, float] = field(default_factory=dict)  # how the users were made, as logged

    stage = "users"

    def summary(self) -> str:
        return f"{self.n_users} users, {len(self.ratings)} ratings, {len(self.favourites)} favourites"

    def metrics(self) -> dict[str, float]:
        return {USERS_SECTION + "users": float(self.n_users), USERS_SECTION + "favourites": float(len(self.favourites)),
                **{USERS_SECTION + name: value for name, value in self.simulation.items()}}

    def write_artifacts(self, directory: Path) -> None:
        # Who rated what: promote puts it in the registered model (recommend --user needs it).
        save_ratings(self.ratings, directory / USER_RATINGS)

    @property
    def favourites(self) -> pd.DataFrame:
        return favourites(self.ratings, self.favourite_threshold)

    @property
    def known_favourites(self) -> pd.DataFrame:
        """The favourites a popularity count may use: all of them for simulated users (who have no
        time); an interaction log's before its cut (``users.interactions``)."""
        return self.favourites

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


@dataclass
class TasteUsers:
    """``users=taste``: users with a taste over item attributes rate shop items; ratings follow a histogram.

    Without ``reviews``: each user rates ``items_per_user`` shop items (all, if the shop is
    smaller) spread over the categories as the shop is, and ``rating_histogram[r-1]`` is the
    relative frequency of rating r (scale 1..len). With ``reviews`` (the Women's E-Commerce
    Clothing Reviews CSV) the simulation is calibrated on it: the class mix (Class Name mapped by
    ``class_map``) sets how many items of each category a user rates, each category's rating
    histogram is the file's (the overall one for a category with fewer than
    ``min_reviews_per_category`` rows, which is reported), and ``items_per_user=None`` means
    review rows / ``n_users``. Ratings are matched per user and category: a user's q-quantile
    score gets the rating whose cumulative frequency first reaches q. A catalogue without
    ``attr_*`` columns gets attributes measured from its images (see ``measured_attributes``),
    reported as the metric ``pipeline/users/attributes_measured``. ``rate_all=True`` is the
    full-information protocol: every user rates every shop item.
    """

    # 200 users: the paired standard error of a difference in precision@5 between two configurations
    # is about 0.004 (experiments/power/users_needed.py); 50 gave 0.008.
    n_users: int = option(200, decides=Stage.USERS)
    # shop items each user rates (null: reviews rows / n_users)
    items_per_user: int | None = option(100, decides=Stage.USERS)
    # ratings 1..5
    rating_histogram: list[float] = option(factory=lambda: [1.0, 1.0, 1.0, 1.0, 1.0], decides=Stage.USERS)
    noise: float = option(0.3, decides=Stage.USERS)  # std of the noise added to a user's taste score
    favourite_threshold: int = option(4, decides=Stage.USERS)  # ratings >= this are favourites
    reviews: str | None = option(None, decides=Stage.USERS)  # path of the Women's E-Commerce Clothing Reviews CSV
    # Class Name -> category
    class_map: dict[str, str] = option(factory=lambda: dict(DEFAULT_CLASS_MAP), decides=Stage.USERS)
    # fewer rows: the category uses the overall histogram (reported)
    min_reviews_per_category: int = option(20, decides=Stage.USERS)
    # The full-information protocol: every user rates every shop item of every category
    # (items_per_user and the reviews' class mix are then not used).
    rate_all: bool = option(False, decides=Stage.USERS)
    # who rates what, their tastes, and which favourites are held out
    seed: int = option(0, decides=Stage.USERS, seed=True)

    def __post_init__(self) -> None:
        """UsersConfigError (or ReviewsError) naming the ``users.*`` option that is unusable."""
        if self.items_per_user is None and self.reviews is None:
            raise UsersConfigError("users.items_per_user may be null only when users.reviews names a reviews file")
        scale = len(RATING_SCALE) if self.reviews is not None else len(self.rating_histogram)
        _validate(self.n_users, self.items_per_user, self.rating_histogram, self.noise, self.favourite_threshold,
                  scale)
        if self.reviews is not None:
            self.reviews = str(absolute_path(self.reviews))  # relative to where the command was launched
            check_reviews_file(self.reviews)
            check_class_map(self.class_map)

    def simulate(self, shop: Catalogue, catalogue: Catalogue | None = None) -> SimulatedUsers:
        """The users' ratings of ``shop``'s items; the same seed and shop give the same ratings
        (``catalogue``, the shop's whole catalogue, is not needed)."""
        attributes, measured = item_attributes(shop)
        simulation: dict[str, float] = {}
        if measured:
            # No ground truth: a taste over colour, lightness and saturation read off the images.
            simulation["attributes_measured"] = 1.0
            log.info("the catalogue has no attributes: users' taste is over %s measured from pixels",
                     list(attributes.columns))
        categories = [c for c in CATEGORIES if (shop.items["category"] == c).any()]
        items_per_user = self.items_per_user
        if self.reviews is None:
            histograms = {c: np.asarray(self.rating_histogram, dtype=float) for c in categories}
            mix = shop.items["category"].value_counts(normalize=True).to_dict()
        else:
            calibration = load_reviews(self.reviews, self.class_map)
            histograms, mix, calibration_metrics = _calibrate(calibration, categories, self.min_reviews_per_category)
            simulation.update(calibration_metrics)
            if items_per_user is None:
                items_per_user = max(2, round(len(calibration.rows) / max(self.n_users, 1)))
        if self.rate_all:
            items_per_user = len(shop)
        simulation["items_per_user"] = float(items_per_user)

        # One-hot item attributes: taste weights are per attribute value.
        features = attribute_vectors(attributes).astype(np.float64)
        item_ids = shop.items["item_id"].to_numpy()
        members = {c: np.flatnonzero(shop.items["category"].to_numpy() == c) for c in categories}
        per_category = {c: len(members[c]) if self.rate_all else
                        min(len(members[c]), max(1, round(items_per_user * mix.get(c, 0.0)))) for c in categories}
        cumulative = {c: np.cumsum(histograms[c]) / histograms[c].sum() for c in categories}
        rng = np.random.default_rng(self.seed)
        rated_positions, ratings = [], []  # per (user, category), users outer, as the draws are made
        for _ in range(self.n_users):
            taste = rng.normal(0.0, 1.0, features.shape[1])
            for category in categories:
                rated = rng.choice(members[category], size=per_category[category], replace=False)
                scores = features[rated] @ taste / math.sqrt(attributes.shape[1])
                scores += rng.normal(0.0, self.noise, len(rated))
                quantiles = (np.argsort(np.argsort(scores)) + 0.5) / len(rated)
                rated_positions.append(rated)
                ratings.append(1 + np.searchsorted(cumulative[category], quantiles))
        # One frame at the end (a frame per pair took most of the time): a user's rows, then the next
        # user's; within a user, a category's rows in ``categories`` order.
        pair_sizes = [per_category[c] for c in categories] * self.n_users
        user_ids = np.array([f"user-{user:04d}" for user in range(self.n_users)], dtype=object)
        ratings_table = pd.DataFrame({
            "user_id": np.repeat(user_ids, sum(per_category.values())),
            "item_id": item_ids[np.concatenate(rated_positions)],
            "category": np.repeat(np.array(categories * self.n_users, dtype=object), pair_sizes),
            "rating": np.concatenate(ratings),
        })
        return SimulatedUsers(ratings_table, self.favourite_threshold, simulation)

    def hold_out(self, users: SimulatedUsers, fraction: float) -> HeldOutSplits:
        """Each (user, category) pair's favourites split at random (``hold_out_favourites``)."""
        return hold_out_favourites(users, fraction, seed=self.seed)


@dataclass
class CourseUsers:
    """``users=course``: the course's simulation. Every review row of the four classes goes to
    one of ``n_users`` users (A, B, C, ...) at random, and every Clothing ID of a class stands
    for a random shop item of that category. A user's rating of an item is the mean of its
    rows. Ratings here do not depend on what items look like."""

    reviews: str = option(decides=Stage.USERS)  # path of the Women's E-Commerce Clothing Reviews CSV
    n_users: int = option(5, decides=Stage.USERS)
    favourite_threshold: int = option(4, decides=Stage.USERS)
    class_map: dict[str, str] = option(factory=lambda: dict(DEFAULT_CLASS_MAP), decides=Stage.USERS)
    seed: int = option(0, decides=Stage.USERS, seed=True)

    def __post_init__(self) -> None:
        if not 1 <= self.n_users <= 26:
            raise UsersConfigError(f"users.n_users must be in 1..26 (users are named A..Z), got {self.n_users}")
        if not 1 <= self.favourite_threshold <= len(RATING_SCALE):
            raise UsersConfigError(f"users.favourite_threshold must be a rating in 1..{len(RATING_SCALE)}, "
                                   f"got {self.favourite_threshold}")
        self.reviews = str(absolute_path(self.reviews))  # relative to where the command was launched
        check_reviews_file(self.reviews)
        check_class_map(self.class_map)

    def simulate(self, shop: Catalogue, catalogue: Catalogue | None = None) -> SimulatedUsers:
        calibration = load_reviews(self.reviews, self.class_map)
        rows = calibration.rows
        rng = np.random.default_rng(self.seed)
        stand_in: dict[tuple[str, str], str] = {}
        for category, group in rows.groupby("category", sort=True):
            shop_items = shop.items.loc[shop.items["category"] == category, "item_id"].to_numpy()
            if len(shop_items) == 0:
                continue
            for clothing_id in sorted(group["clothing_id"].unique()):
                stand_in[(category, clothing_id)] = str(rng.choice(shop_items))
        names = np.array([chr(ord("A") + i) for i in range(self.n_users)])
        ratings = pd.DataFrame({
            "user_id": names[rng.integers(0, self.n_users, len(rows))],
            "item_id": [stand_in.get(key) for key in zip(rows["category"], rows["clothing_id"])],
            "category": rows["category"].to_numpy(),
            "rating": rows["rating"].to_numpy(dtype=float),
        }).dropna(subset=["item_id"])
        ratings = ratings.groupby(["user_id", "item_id", "category"], as_index=False)["rating"].mean()
        return SimulatedUsers(ratings, self.favourite_threshold, calibration.metrics())

    def hold_out(self, users: SimulatedUsers, fraction: float) -> HeldOutSplits:
        """Each (user, category) pair's favourites split at random (``hold_out_favourites``)."""
        return hold_out_favourites(users, fraction, seed=self.seed)


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
            metrics[f"histogram_fallback_{category}"] = 1.0
    present = [counts[c] for c in categories if c not in thin]
    # A category the file (almost) lacks still gets rated, as often as an average category.
    stand_in = float(np.mean(present)) if present else 1.0
    weights = {c: (stand_in if c in thin else float(counts[c])) for c in categories}
    mix = {c: w / sum(weights.values()) for c, w in weights.items()}
    if thin:
        log.warning("reviews %s have fewer than %d rows for %s: using the overall rating histogram "
                    "and an average share of ratings for them", reviews.path.name, min_rows, thin)
    return histograms, mix, metrics


@dataclass(frozen=True)
class HeldOutSplits(StageResult):
    """Every evaluable (user, category) pair split into queries and held-out favourites, and how
    many pairs could not be evaluated (fewer than two favourites: nothing to query with, or
    nothing to find)."""

    splits: list[HeldOutFavourites]
    skipped: int
    skipped_by_reason: dict[str, int] = field(default_factory=dict)  # logged as EVAL_PAIRS + _<reason>

    def __len__(self) -> int:
        return len(self.splits)

    def __iter__(self):
        return iter(self.splits)

    stage = "hold out"

    def summary(self) -> str:
        if self.skipped_by_reason:
            reasons = ", ".join(f"{count} {reason.replace('_', ' ')}"
                                for reason, count in self.skipped_by_reason.items())
            return f"{len(self.splits)} (user, category) pairs to evaluate; skipped: {reasons}"
        return f"{len(self.splits)} (user, category) pairs to evaluate, {self.skipped} with < 2 favourites skipped"

    def metrics(self) -> dict[str, float]:
        return {EVAL_PAIRS + "_skipped": float(self.skipped),
                **{f"{EVAL_PAIRS}_{reason}": float(count) for reason, count in self.skipped_by_reason.items()}}


def hold_out_favourites(users: SimulatedUsers, fraction: float, *, seed: int) -> HeldOutSplits:
    """Per user and category, hide ``fraction`` of the favourites (at least one, leaving one query).

    Pairs are visited in (user, category) order and shuffled with ``seed``, so the same users,
    fraction and seed give the same splits.
    """
    if not 0.0 < fraction < 1.0:
        raise UsersConfigError(f"eval.holdout_fraction must be in (0, 1), got {fraction}")
    ratings = users.ratings
    # Pairs numbered in groupby's sorted (user, category) order; a pair's favourites stay in the
    # order of its rows. Only the shuffles loop over pairs (a frame per pair took most of the time).
    pair_of_row = ratings.groupby(["user_id", "category"], sort=True).ngroup().to_numpy()
    n_pairs = int(pair_of_row.max()) + 1 if len(pair_of_row) else 0
    first_row = np.unique(pair_of_row, return_index=True)[1]
    user_ids, categories = ratings["user_id"].to_numpy()[first_row], ratings["category"].to_numpy()[first_row]
    favourite_rows = np.flatnonzero((ratings["rating"] >= users.favourite_threshold).to_numpy())
    favourite_rows = favourite_rows[np.argsort(pair_of_row[favourite_rows], kind="stable")]
    per_pair = np.bincount(pair_of_row[favourite_rows], minlength=n_pairs)
    favourite_items = np.split(ratings["item_id"].to_numpy()[favourite_rows], np.cumsum(per_pair)[:-1])
    rng = np.random.default_rng(seed)
    splits, skipped = [], 0
    for pair in range(n_pairs):
        favourites = favourite_items[pair].tolist()
        if len(favourites) < 2:
            skipped += 1
            continue
        shuffled = [favourites[i] for i in rng.permutation(len(favourites))]
        n_held = min(len(shuffled) - 1, max(1, round(fraction * len(shuffled))))
        splits.append(HeldOutFavourites(user_ids[pair], categories[pair], shuffled[n_held:], shuffled[:n_held]))
    if not splits:
        log.warning("no user has >= 2 favourites in any category: precision@k is undefined (NaN); "
                    "raise users.items_per_user or lower users.favourite_threshold")
    return HeldOutSplits(splits, skipped)


def _validate(n_users, items_per_user, rating_histogram, noise, favourite_threshold, scale) -> None:
    if n_users < 1:
        raise UsersConfigError(f"users.n_users must be >= 1, got {n_users}")
    if items_per_user is not None and items_per_user < 2:
        raise UsersConfigError(f"users.items_per_user must be >= 2, got {items_per_user}")
    if len(rating_histogram) < 2 or min(rating_histogram) < 0 or sum(rating_histogram) <= 0:
        raise UsersConfigError(
            f"users.rating_histogram must list >= 2 non-negative frequencies (ratings 1..n), "
            f"got {list(rating_histogram)}"
        )
    if noise < 0:
        raise UsersConfigError(f"users.noise must be >= 0, got {noise}")
    if not 1 <= favourite_threshold <= scale:
        raise UsersConfigError(f"users.favourite_threshold must be a rating in 1..{scale}, got {favourite_threshold}")
