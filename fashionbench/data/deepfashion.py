"""DeepFashion's Category and Attribute Prediction Benchmark, read as published.

Layout under ``root`` (Liu et al., "DeepFashion", CVPR 2016; the benchmark's README):

- ``Anno/list_category_cloth.txt``: line 1 the number of categories, line 2 the header
  ``category_name  category_type``, then ``<name> <type>`` (1 upper, 2 lower, 3 full body);
  a category's label is its 1-based position in this list.
- ``Anno/list_category_img.txt``: count, header ``image_name  category_label``, then
  ``img/<folder>/<file>.jpg <label>``.
- ``Eval/list_eval_partition.txt``: count, header ``image_name  evaluation_status``, then
  ``img/... train|val|test``. The published split is kept.
- optional ``Anno/list_attr_cloth.txt`` (count, header ``attribute_name  attribute_type``,
  then ``<name, may contain spaces> <type>``, types 1 texture, 2 fabric, 3 shape, 4 part,
  5 style) and ``Anno/list_attr_img.txt`` (count, header ``image_name  attribute_labels``,
  then the image and one 1 / -1 (0 in some releases) per attribute). Each item then gets
  ``attr_<type>``: the first of its attributes of that type marked 1, or ``none``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fashionbench.data.catalogue import SPLITS, Catalogue, CatalogueError
from fashionbench.data.labelled_images import (
    LabelledImage,
    PhotoSourceOptions,
    load_labelled_images,
    validate_category_mapping,
)
from fashionbench.data.rows import RowsInMemory, RowsWriter
from fashionbench.data.skips import SkipLog
from fashionbench.data.text_tables import read_text
from fashionbench.options import Stage, option

log = logging.getLogger("fashionbench.data")

CATEGORY_LIST = "Anno/list_category_cloth.txt"
CATEGORY_IMAGES = "Anno/list_category_img.txt"
PARTITION = "Eval/list_eval_partition.txt"
ATTRIBUTE_LIST = "Anno/list_attr_cloth.txt"
ATTRIBUTE_IMAGES = "Anno/list_attr_img.txt"
ATTRIBUTE_TYPES = {1: "texture", 2: "fabric", 3: "shape", 4: "part", 5: "style"}
DEFAULT_CATEGORIES = {"Blouse": "Blouses", "Dress": "Dresses", "Shorts": "Shorts", "Skirt": "Skirts"}


@dataclass(kw_only=True)
class DeepFashionSource(PhotoSourceOptions):
    """The images of the DeepFashion categories that ``categories`` maps to shop categories."""

    categories: dict[str, str] = option(factory=lambda: dict(DEFAULT_CATEGORIES), decides=Stage.DATA)

    def load(self, images: RowsInMemory | RowsWriter | None = None) -> Catalogue:
        """Raises CatalogueError for an invalid option, a missing or malformed list file, an empty category."""
        root = self.validated_root()
        mapping = validate_category_mapping(dict(self.categories), "data.categories")
        skips = SkipLog()

        listing = read_listing(root / CATEGORY_LIST, ("category_name", "category_type"), skips)
        names = [tokens[0] for _, tokens in listing]
        unknown = sorted(set(mapping) - set(names))
        if unknown:
            raise CatalogueError(
                f"data.categories names {unknown}, not in {root / CATEGORY_LIST} (it lists {names})"
            )
        partition = {}
        for where, (image, status) in read_listing(root / PARTITION, ("image_name", "evaluation_status"), skips):
            if status in SPLITS:
                partition[image] = status
            else:
                skips.skip(where, "malformed_row", f"evaluation_status {status!r}, expected one of {list(SPLITS)}")

        labelled: list[tuple[str, str]] = []
        for where, (image, label) in read_listing(root / CATEGORY_IMAGES, ("image_name", "category_label"), skips):
            if not label.isdigit() or not 1 <= int(label) <= len(names):
                skips.skip(where, "malformed_row", f"category_label {label!r}, expected 1..{len(names)}")
                continue
            category = mapping.get(names[int(label) - 1])
            if category is None:
                skips.skip(image, "unmapped_label")
                continue
            if image not in partition:
                skips.skip(image, "no_split", f"not in {PARTITION}")
                continue
            labelled.append((image, category))

        attributes = self._attributes(root, {image for image, _ in labelled}, skips)
        records = [
            LabelledImage(image, image, category, partition[image], attributes.get(image, {}))
            for image, category in labelled
        ]
        return load_labelled_images(
            records, source=self.name, root=root, image_size=self.image_size, seed=self.seed, skips=skips,
            max_per_category=self.max_per_category, max_pixels=self.max_pixels, images=images,
        )

    def _attributes(self, root: Path, images: set[str], skips: SkipLog) -> dict[str, dict[str, str]]:
        """``attr_<type>`` values of the given images, or {} when the attribute files are absent."""
        present = [(root / name).is_file() for name in (ATTRIBUTE_LIST, ATTRIBUTE_IMAGES)]
        if not any(present):
            return {}
        if not all(present):
            missing = ATTRIBUTE_LIST if not present[0] else ATTRIBUTE_IMAGES
            raise CatalogueError(f"{root / missing}: file not found (the other attribute file is there)")
        kinds = []
        for where, tokens in read_listing(root / ATTRIBUTE_LIST, ("attribute_name", "attribute_type"), skips):
            name, kind = tokens
            if not kind.isdigit() or int(kind) not in ATTRIBUTE_TYPES:
                raise CatalogueError(f"{where}: attribute_type {kind!r}, expected one of {list(ATTRIBUTE_TYPES)}")
            kinds.append((name, ATTRIBUTE_TYPES[int(kind)]))
        found: dict[str, dict[str, str]] = {}
        for where, tokens in read_listing(root / ATTRIBUTE_IMAGES, ("image_name", "attribute_labels"), skips,
                                      min_fields=1, split_all=True):
            image, values = tokens[0], tokens[1:]
            if image not in images:
                continue
            if len(values) != len(kinds) or any(value not in ("1", "-1", "0") for value in values):
                log.debug("%s: %d attribute values, expected %d of 1/-1/0", where, len(values), len(kinds))
                continue
            item = {kind: "none" for kind in ATTRIBUTE_TYPES.values()}
            for (name, kind), value in zip(kinds, values):
                if value == "1" and item[kind] == "none":
                    item[kind] = name
            found[image] = item
        # Items without a valid attribute line keep their image, with attributes "unknown".
        missing = len(images - set(found))
        if missing:
            skips.convert("attributes_unknown", missing)
        return {image: found.get(image, {kind: "unknown" for kind in ATTRIBUTE_TYPES.values()}) for image in images}


def read_listing(
    path: Path,
    header: tuple[str, str],
    skips: SkipLog,
    min_fields: int = 2,
    split_all: bool = False,
) -> Iterator[tuple[str, list[str]]]:
    """(``file:line``, fields) of each entry of a DeepFashion list file (count, header, entries).

    Entries are two fields split at the last whitespace (attribute names contain spaces),
    or every whitespace-separated field (``split_all``). Lines with fewer fields
    are skipped as ``malformed_row``. Raises CatalogueError if the file is missing or its
    first two lines are not a count and ``header``.
    """
    lines = read_text(path, skips).splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit() or lines[1].split() != list(header):
        raise CatalogueError(
            f"{path}: expected line 1 = the number of entries and line 2 = the header "
            f"{'  '.join(header)!r} (DeepFashion's list-file layout)"
        )
    declared, entries = int(lines[0].strip()), 0
    for number, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        entries += 1
        where = f"{path.name}:{number}"
        fields = line.split() if split_all else line.strip().rsplit(maxsplit=1)
        if len(fields) < min_fields:
            skips.skip(where, "malformed_row", f"{len(fields)} field(s): {line.strip()[:80]!r}")
            continue
        yield where, fields
    if entries != declared:
        log.warning("%s: line 1 declares %d entries, the file has %d", path, declared, entries)
