"""Users' ratings as a run stores them, and the one rule that makes a rated item a favourite.

The users stage writes them (``users/simulation.SimulatedUsers``); a recommender bundle reads them
back to answer ``recommend --user`` (``serving/recommender.py``). Both ask ``favourites`` which of a
user's items are favourites, so the rule is written once.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

RATING_COLUMNS = ("user_id", "item_id", "category", "rating")


def favourites(ratings: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The rows of ``ratings`` that are favourites: rated at least ``threshold`` (``users.favourite_threshold``)."""
    return ratings[ratings["rating"] >= threshold]


def save_ratings(ratings: pd.DataFrame, path: Path) -> None:
    """Users' ratings: one row per (user_id, item_id) with the item's category and the rating."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ratings.to_csv(path, index=False)


def load_ratings(path: Path) -> pd.DataFrame:
    """The ratings ``save_ratings`` wrote, ids as text."""
    return pd.read_csv(path, dtype={"user_id": str, "item_id": str})
