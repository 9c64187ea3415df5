"""From labelled image paths to a catalogue: the part every file-based source shares.

A source (DeepFashion annotations, a labelled CSV, a folder tree) reads its own layout into
``LabelledImage`` records; ``load_labelled_images`` resolves each path inside the root,
decodes the images (in threads: Pillow releases the GIL while decoding), splits the items
when the source publishes no split, and fails if a category ends up empty.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fashionbench.data.catalogue import (
    ATTRIBUTE_PREFIX,
    CATEGORIES,
    DEFAULT_IMAGE_SIZE,
    PRODUCT_COLUMN,
    SPLITS,
    VIEW_COLUMN,
    Catalogue,
    CatalogueError,
    check_image_size,
)
from fashionbench.data.images import DEFAULT_MAX_PIXELS, UnusableImage, decode_image, resolve_inside
from fashionbench.data.rows import RowsInMemory, RowsWriter
from fashionbench.data.skips import SkipLog
from fashionbench.data.splitting import stratified_course_split
from fashionbench.options import Stage, option
from fashionbench.runtime.paths import absolute_path

log = logging.getLogger("fashionbench.data")

# Images decoded (in threads) before they are handed on: at 224 px about 150 MB in memory.
DECODE_CHUNK = 1024


@dataclass(frozen=True)
class LabelledImage:
    """One item as a source's annotations describe it; ``path`` is relative to the root."""

    item_id: str
    path: str
    category: str
    split: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    product: str | None = None  # the garment the image shows, when a source has several images of one
    view: str = ""  # in the shop: the same-item retrieval's "query" or "gallery" (catalogue.VIEW_COLUMN)


@dataclass(kw_only=True)
class PhotoSourceOptions:
    """Options every photo source shares: where the data set is, its seeded split and
    subsample, and how images are decoded. Checked when the source is made (before any file
    is read): CatalogueError names the ``data.*`` option that is invalid."""

    name: str = option(decides=Stage.DATA)
    root: str = option(decides=Stage.DATA)
    seed: int = option(0, decides=Stage.DATA, seed=True)
    image_size: int = option(DEFAULT_IMAGE_SIZE, decides=Stage.DATA)
    max_per_category: int | None = option(None, decides=Stage.DATA)
    max_pixels: int = option(DEFAULT_MAX_PIXELS, decides=Stage.DATA)  # larger images are skipped as decompression_bomb

    def __post_init__(self) -> None:
        check_image_size(self.image_size)
        if self.max_pixels < 1:
            raise CatalogueError(f"data.max_pixels must be >= 1, got {self.max_pixels}")
        if self.max_per_category is not None and self.max_per_category < 1:
            raise CatalogueError(f"data.max_per_category must be >= 1 or null, got {self.max_per_category}")
        if hasattr(self, "categories"):
            validate_category_mapping(self.categories, "data.categories")
        self.validated_root()

    def validated_root(self) -> Path:
        """The root as a Path; CatalogueError when it is not set or not a folder."""
        if self.root is None or str(self.root) in ("", "???"):
            raise CatalogueError(f"data.root must name the {self.name} data folder")
        path = absolute_path(self.root)  # relative to where the command was launched, in every job
        if not path.is_dir():
            raise CatalogueError(f"data.root={str(self.root)!r}: no such folder (the {self.name} data set's root)")
        return path


def validate_category_mapping(mapping: Mapping[str, str], option: str) -> dict[str, str]:
    """``mapping`` (source label -> shop category) checked: every target is one of CATEGORIES."""
    wrong = {label: target for label, target in mapping.items() if target not in CATEGORIES}
    if wrong:
        raise CatalogueError(f"{option} maps to unknown categories {wrong}; expected one of {list(CATEGORIES)}")
    return {str(label): str(target) for label, target in mapping.items()}


def load_labelled_images(
    records: Sequence[LabelledImage],
    *,
    source: str,
    root: Path,
    image_size: int,
    seed: int,
    skips: SkipLog,
    max_per_category: int | None = None,
    max_pixels: int,
    images: RowsInMemory | RowsWriter | None = None,
) -> Catalogue:
    """The catalogue of the records whose image is usable, skipped ones counted in ``skips``.

    Images are decoded a chunk at a time (in threads) and each usable one goes into ``images``
    (default: a list in memory; the catalogue store passes a ``RowsWriter``), so a data set is
    never held in memory whole unless the caller asks for that.

    Records without a split get a seeded stratified split in the course's proportions.
    Raises CatalogueError if a category or a split ends up empty, naming it and the skip counts.
    """
    records = _drop_duplicate_ids(records, skips)
    listed = Counter(record.category for record in records)
    records = _subsample(records, max_per_category, seed)

    started = time.perf_counter()
    paths: list[Path | None] = []
    lost_by_category: dict[str, Counter[str]] = {category: Counter() for category in CATEGORIES}
    for record in records:
        try:
            paths.append(resolve_inside(root, record.path))
        except UnusableImage as unusable:
            paths.append(None)
            skips.skip(record.item_id, unusable.reason, unusable.detail)
            lost_by_category[record.category][unusable.reason] += 1

    def decode(path: Path | None) -> tuple[np.ndarray, str] | UnusableImage | None:
        if path is None:
            return None
        try:
            return decode_image(path, image_size, max_pixels)
        except UnusableImage as unusable:
            return unusable

    images = images or RowsInMemory((image_size, image_size, 3))
    kept = []
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for start in range(0, len(records), DECODE_CHUNK):
            chunk = slice(start, start + DECODE_CHUNK)
            for record, result in zip(records[chunk], pool.map(decode, paths[chunk], chunksize=16)):
                if result is None:
                    continue
                if isinstance(result, UnusableImage):
                    skips.skip(record.item_id, result.reason, result.detail)
                    lost_by_category[record.category][result.reason] += 1
                    continue
                pixels, mode = result
                if mode != "RGB":
                    skips.convert("image_mode_" + re.sub(r"[^A-Za-z0-9]+", "_", mode).strip("_"))
                kept.append(record)
                images.append(pixels)
    seconds = time.perf_counter() - started

    counts = Counter(record.category for record in kept)
    for category in CATEGORIES:
        if counts[category] == 0:
            lost = dict(lost_by_category[category]) or "none"
            raise CatalogueError(
                f"data source {source} ({root}): category {category} has no usable items "
                f"({listed[category]} listed after mapping; skipped in {category}: {lost}; "
                f"skipped overall: {dict(skips.skipped) or 'none'})"
            )
    items = pd.DataFrame(
        {
            "item_id": [record.item_id for record in kept],
            "category": [record.category for record in kept],
            "split": [record.split for record in kept],
            "source": [record.path for record in kept],
        }
    )
    if any(record.product is not None for record in kept):
        items[PRODUCT_COLUMN] = [record.product or record.item_id for record in kept]
        items[VIEW_COLUMN] = [record.view for record in kept]
    attribute_names = list(dict.fromkeys(name for record in kept for name in record.attributes))
    for name in attribute_names:
        items[ATTRIBUTE_PREFIX + name] = [record.attributes.get(name, "unknown") for record in kept]
    unsplit = items["split"].isna().to_numpy()
    if unsplit.any():
        items.loc[unsplit, "split"] = stratified_course_split(items.loc[unsplit, "category"].to_numpy(), seed)
    for split in SPLITS:
        if not (items["split"] == split).any():
            raise CatalogueError(
                f"data source {source} ({root}): the {split} split has no usable items "
                f"(skipped: {dict(skips.skipped) or 'none'})"
            )

    level = logging.WARNING if len(skips.skipped_items()) else logging.INFO
    log.log(level, "%s: %d images decoded from %s in %.1f s; %s", source, len(kept), root, seconds, skips.summary())
    return Catalogue(items, images.finish(), dict(skips.skipped), skips.skipped_items(), dict(skips.converted))


def _drop_duplicate_ids(records: Sequence[LabelledImage], skips: SkipLog) -> list[LabelledImage]:
    seen: set[str] = set()
    unique = []
    for record in records:
        if record.item_id in seen:
            skips.skip(record.item_id, "duplicate_id", f"item id listed again (path {record.path})")
            continue
        seen.add(record.item_id)
        unique.append(record)
    return unique


def _subsample(records: list[LabelledImage], max_per_category: int | None, seed: int) -> list[LabelledImage]:
    """At most ``max_per_category`` records per category, a seeded choice, in the original order.

    With a published split, each split keeps its share of the category (largest remainder),
    so that a small subsample still has items in every split the source has.
    """
    if max_per_category is None:
        return records
    chosen: set[int] = set()
    for number, category in enumerate(CATEGORIES):
        members = [i for i, record in enumerate(records) if record.category == category]
        if len(members) <= max_per_category:
            chosen.update(members)
            continue
        rng = np.random.default_rng([seed, number, 1])
        groups: dict[str | None, list[int]] = {}
        for i in members:
            groups.setdefault(records[i].split, []).append(i)
        shares = np.array([len(group) for group in groups.values()], dtype=np.float64)
        quotas = np.floor(shares / shares.sum() * max_per_category).astype(int)
        remainders = shares / shares.sum() * max_per_category - quotas
        for position in np.argsort(-remainders, kind="stable")[: max_per_category - quotas.sum()]:
            quotas[position] += 1
        for quota, group in zip(quotas, groups.values()):
            chosen.update(rng.choice(group, size=int(quota), replace=False).tolist())
    return [record for i, record in enumerate(records) if i in chosen]
