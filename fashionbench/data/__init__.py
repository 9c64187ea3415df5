"""Data sources and the catalogue they produce."""

from fashionbench.data.catalogue import (
    CATEGORIES,
    COURSE_SPLIT_SIZES,
    SPLITS,
    Catalogue,
    CatalogueError,
)

__all__ = ["CATEGORIES", "COURSE_SPLIT_SIZES", "SPLITS", "Catalogue", "CatalogueError"]
