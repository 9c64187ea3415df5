"""The data stage's files in a run: the shop as indexed (items and images) and the split table.

Written by the stages that log them (``index.shop.ShopIndex``, ``data.catalogue_store.CatalogueLoad``)
and read back by ``serving`` (a recommender bundle) and ``report`` (the course's split table), so
the format lives here, once.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from fashionbench.artifacts import ArtifactError
from fashionbench.data.catalogue import Catalogue
from fashionbench.data.rows import row_chunks


def save_shop(shop: Catalogue, items_csv: Path, images_npz: Path) -> None:
    """The shop's item table (CSV) and images (an npz with the item ids beside them, as ``np.savez``
    writes it, but a chunk of images at a time: the shop's images are rows on disk and are never
    all in memory here). Stored, not deflated: photos hardly compress (the synthetic shop's to 85 %)
    and deflating a 224 px shop took longer than the rest of its logging. ``np.load`` reads both,
    so the compressed files of earlier runs load as before."""
    items_csv.parent.mkdir(parents=True, exist_ok=True)
    images_npz.parent.mkdir(parents=True, exist_ok=True)
    shop.items.to_csv(items_csv, index=False)
    with zipfile.ZipFile(images_npz, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as npz:
        with npz.open("item_ids.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, shop.items["item_id"].to_numpy(str), allow_pickle=False)
        with npz.open("images.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {"descr": np.lib.format.dtype_to_descr(shop.images.dtype),
                                                          "fortran_order": False, "shape": tuple(shop.images.shape)})
            for block in row_chunks(shop.images):
                member.write(memoryview(block).cast("B"))


def load_shop(items_csv: Path, images_npz: Path) -> Catalogue:
    """The shop ``save_shop`` wrote. Raises ArtifactError when the two files do not describe the same items."""
    # Every column as written (str): attribute values like "none" must not become NaN.
    try:
        items = pd.read_csv(items_csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise ArtifactError(f"{items_csv} is unreadable ({type(error).__name__}: {error})") from None
    try:
        with np.load(images_npz) as stored:
            image_ids, images = stored["item_ids"].astype(str), stored["images"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise ArtifactError(f"{images_npz} is unreadable ({type(error).__name__}: {error})") from None
    if "item_id" not in items.columns:
        raise ArtifactError(f"{items_csv} has no item_id column")
    if image_ids.tolist() != items["item_id"].tolist():
        raise ArtifactError(f"{images_npz} does not hold the images of the items in {items_csv} (ids differ)")
    return Catalogue(items, images)


def save_split_table(table: pd.DataFrame, path: Path) -> None:
    """Items per category (rows) and split (columns train, val, test)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path)


def load_split_table(path: Path) -> pd.DataFrame:
    """The table ``save_split_table`` wrote."""
    return pd.read_csv(path, index_col=0)
