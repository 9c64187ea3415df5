"""The Women's E-Commerce Clothing Reviews CSV (Kaggle, nicapotato): loading and calibration.

Columns as published: ``,Clothing ID,Age,Title,Review Text,Rating,Recommended IND,Positive
Feedback Count,Division Name,Department Name,Class Name``. Only Clothing ID, Rating and Class
Name are used. Rows that cannot be used are counted by reason and skipped; a missing column
is an error naming the file and the column.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fashionbench.data import CATEGORIES

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("Clothing ID", "Rating", "Class Name")
RATING_SCALE = (1, 2, 3, 4, 5)
# Class Name -> shop category; the four classes the shop sells under their own names.
DEFAULT_CLASS_MAP = {"Skirts": "Skirts", "Dresses": "Dresses", "Shorts": "Shorts", "Blouses": "Blouses"}


class ReviewsError(ValueError):
    """The reviews file cannot be used at all (missing, unreadable, a required column absent)."""


@dataclass(frozen=True)
class Reviews:
    """Usable review rows (clothing_id, rating, category) and the count of rows skipped by reason."""

    rows: pd.DataFrame
    skipped: Mapping[str, int]
    path: Path

    def rating_histogram(self, category: str | None = None) -> np.ndarray:
        """Counts of ratings 1..5, of one category or of all rows."""
        rows = self.rows if category is None else self.rows[self.rows["category"] == category]
        ratings = rows["rating"]
        return ratings.value_counts().reindex(RATING_SCALE, fill_value=0).to_numpy()

    def metrics(self) -> dict[str, float]:
        """What the file gave: ``reviews_rows``, ``reviews_<Category>`` and ``reviews_skipped_<reason>``
        (the users stage logs them under ``pipeline/users/``)."""
        return {"reviews_rows": float(len(self.rows)),
                **{f"reviews_{c}": float(n) for c, n in self.class_counts().items()},
                **{f"reviews_skipped_{r}": float(n) for r, n in self.skipped.items()}}

    def class_counts(self) -> dict[str, int]:
        """Review rows per shop category (0 for a category the file lacks)."""
        counts = self.rows["category"].value_counts()
        return {category: int(counts.get(category, 0)) for category in CATEGORIES}


def check_class_map(class_map: Mapping[str, str]) -> None:
    """ReviewsError naming ``users.class_map`` unless every target is a shop category."""
    unknown = sorted(set(class_map.values()) - set(CATEGORIES))
    if unknown:
        raise ReviewsError(f"users.class_map maps to unknown categories {unknown}; expected {list(CATEGORIES)}")


def check_reviews_file(path: str | Path) -> None:
    """ReviewsError naming ``users.reviews`` unless ``path`` is a file."""
    if not Path(path).is_file():
        raise ReviewsError(f"reviews file {path} does not exist (set users.reviews to the CSV's path)")


def load_reviews(path: str | Path, class_map: Mapping[str, str] | None = None) -> Reviews:
    """Read the reviews CSV; keep rows whose Class Name maps to a shop category.

    Skipped rows are counted under: ``invalid_rating`` (not an integer 1..5),
    ``missing_clothing_id``, ``empty_class``, ``unmapped_class`` (another class, e.g. Knits),
    ``duplicate`` (an exact repeat of an earlier row). Bytes that are not UTF-8 are replaced
    (counted as ``rows_with_invalid_utf8``) rather than aborting the load.
    """
    path = Path(path)
    class_map = dict(DEFAULT_CLASS_MAP if class_map is None else class_map)
    check_class_map(class_map)
    check_reviews_file(path)
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    skipped: dict[str, int] = {}
    if "\ufffd" in text and b"\xef\xbf\xbd" not in raw:
        skipped["rows_with_invalid_utf8"] = sum("\ufffd" in line for line in text.splitlines())
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.ParserError as error:
        raise ReviewsError(f"reviews file {path} is not a readable CSV: {error}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ReviewsError(
            f"reviews file {path} lacks the column(s) {missing}; expected the Women's E-Commerce "
            f"Clothing Reviews header with {list(REQUIRED_COLUMNS)}"
        )

    duplicate = table.duplicated()
    rating = pd.to_numeric(table["Rating"].str.strip(), errors="coerce")
    clothing_id = table["Clothing ID"].str.strip()
    class_name = table["Class Name"].str.strip()
    reasons = pd.Series("", index=table.index)
    # The first reason that applies, in this order, is the one counted.
    for reason, bad in (
        ("duplicate", duplicate),
        ("missing_clothing_id", clothing_id == ""),
        ("invalid_rating", ~rating.isin(RATING_SCALE)),
        ("empty_class", class_name == ""),
        ("unmapped_class", ~class_name.isin(class_map.keys())),
    ):
        reasons[(reasons == "") & bad] = reason
    for reason, count in reasons[reasons != ""].value_counts().items():
        skipped[str(reason)] = int(count)
    keep = reasons == ""
    rows = pd.DataFrame({
        "clothing_id": clothing_id[keep].to_numpy(),
        "rating": rating[keep].astype(int).to_numpy(),
        "category": class_name[keep].map(class_map).to_numpy(),
    })
    log.info("reviews %s: %d usable rows, skipped %s", path.name, len(rows), skipped)
    return Reviews(rows, skipped, path)
