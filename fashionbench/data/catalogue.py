"""The catalogue: every item of a data source with its image, category, split and attributes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fashionbench.data.rows import StoredRows, select_rows, update_digest
from fashionbench.data.skips import empty_skipped_items

CATEGORIES: tuple[str, ...] = ("Skirts", "Dresses", "Shorts", "Blouses")
SPLITS: tuple[str, ...] = ("train", "val", "test")

# Train/Val/Test items per category in the course this harness reproduces.
COURSE_SPLIT_SIZES: dict[str, tuple[int, int, int]] = {
    "Skirts": (493, 209, 160),
    "Dresses": (1829, 638, 545),
    "Shorts": (847, 373, 267),
    "Blouses": (2063, 694, 694),
}

ATTRIBUTE_PREFIX = "attr_"
DEFAULT_IMAGE_SIZE = 64  # pixels per side, for every source
MIN_IMAGE_SIZE = 32  # ResNet50's smallest input
REQUIRED_COLUMNS = ("item_id", "category", "split", "source")
# Optional: several images of one garment. ``product_id`` names the garment an image shows, and
# in the shop (the test split) ``view`` says which images are the same-item retrieval's queries
# and which its gallery (``evaluation.same_item``); "" elsewhere.
PRODUCT_COLUMN, VIEW_COLUMN = "product_id", "view"
QUERY_VIEW, GALLERY_VIEW = "query", "gallery"


class CatalogueError(ValueError):
    """A data source produced (or was configured for) a catalogue the harness cannot use."""


@dataclass(frozen=True)
class Catalogue:
    """Items of a shop's data source, row i of ``items`` described by ``images[i]``.

    ``items`` has the columns ``item_id`` (unique str), ``category`` (one of
    CATEGORIES), ``split`` (one of SPLITS), ``source`` (file path or generator name)
    and any number of ground-truth attribute columns named ``attr_<name>``.
    ``images`` is uint8 RGB, shape (n, height, width, 3): an array in memory, or ``StoredRows``
    of the catalogue store's file, read a batch at a time by every stage. ``skipped`` counts items the
    source could not use, by reason; ``skipped_items`` lists the problem ones (columns
    ``item``, ``reason``, ``detail``; items a filter or an unmapped label left out are only
    counted). ``converted`` counts items used after a conversion (colour mode, encoding).
    """

    items: pd.DataFrame
    images: np.ndarray | StoredRows
    skipped: Mapping[str, int] = field(default_factory=dict)
    skipped_items: pd.DataFrame = field(default_factory=empty_skipped_items)
    converted: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in REQUIRED_COLUMNS if c not in self.items.columns]
        if missing:
            raise CatalogueError(f"catalogue items lack the column(s) {missing}")
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise CatalogueError(
                f"catalogue images must be uint8 of shape (n, h, w, 3), got "
                f"{self.images.dtype} {self.images.shape}"
            )
        if len(self.items) != len(self.images):
            raise CatalogueError(
                f"catalogue has {len(self.items)} items but {len(self.images)} images"
            )
        unknown = sorted(set(self.items["category"]) - set(CATEGORIES))
        if unknown:
            raise CatalogueError(f"unknown categories {unknown}; expected {list(CATEGORIES)}")
        bad_splits = sorted(set(self.items["split"]) - set(SPLITS))
        if bad_splits:
            raise CatalogueError(f"unknown splits {bad_splits}; expected {list(SPLITS)}")
        if self.items["item_id"].duplicated().any():
            dupes = self.items.loc[self.items["item_id"].duplicated(), "item_id"].head(5).tolist()
            raise CatalogueError(f"duplicate item ids, e.g. {dupes}")

    def __len__(self) -> int:
        return len(self.items)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    @property
    def attribute_names(self) -> list[str]:
        return [c[len(ATTRIBUTE_PREFIX):] for c in self.items.columns if c.startswith(ATTRIBUTE_PREFIX)]

    @property
    def labels(self) -> np.ndarray:
        """Category index of every item (position in CATEGORIES)."""
        return self.items["category"].map(CATEGORIES.index).to_numpy(dtype=np.int64)

    def subset(self, mask: np.ndarray | pd.Series) -> Catalogue:
        mask = np.asarray(mask, dtype=bool)
        return Catalogue(self.items[mask].reset_index(drop=True), select_rows(self.images, mask), self.skipped,
                         self.skipped_items, self.converted)

    def split(self, name: str) -> Catalogue:
        """The items of one split ("train", "val" or "test")."""
        if name not in SPLITS:
            raise CatalogueError(f"unknown split {name!r}; expected one of {list(SPLITS)}")
        return self.subset(self.items["split"] == name)

    def split_table(self) -> pd.DataFrame:
        """Items per category (rows, CATEGORIES order) and split (columns)."""
        table = pd.crosstab(self.items["category"], self.items["split"])
        return table.reindex(index=list(CATEGORIES), columns=list(SPLITS), fill_value=0)

    def fingerprint(self) -> str:
        """A short hash of the items table and every image byte: same data, same fingerprint.
        Computed once per catalogue (hashing every image costs about a second per GB)."""
        if "_fingerprint" not in self.__dict__:  # frozen dataclass: memoise in __dict__
            digest = hashlib.sha256()
            digest.update(self.items.to_csv(index=False).encode())
            update_digest(digest, self.images)
            self.__dict__["_fingerprint"] = digest.hexdigest()[:16]
        return self.__dict__["_fingerprint"]


def check_image_size(image_size: int) -> None:
    """CatalogueError naming ``data.image_size`` unless ResNet50 can take images of that size."""
    if image_size < MIN_IMAGE_SIZE:
        raise CatalogueError(
            f"data.image_size must be >= {MIN_IMAGE_SIZE} (ResNet50's smallest input), got {image_size}")


def course_split_sizes(scale: float, min_per_split: int = 1) -> dict[str, tuple[int, int, int]]:
    """The course's Train/Val/Test counts per category, scaled, each at least ``min_per_split``."""
    if scale <= 0:
        raise CatalogueError(f"data.scale must be > 0, got {scale}")
    return {
        category: tuple(max(min_per_split, round(n * scale)) for n in sizes)
        for category, sizes in COURSE_SPLIT_SIZES.items()
    }
