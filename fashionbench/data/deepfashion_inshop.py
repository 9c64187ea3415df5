"""DeepFashion's In-shop Clothes Retrieval Benchmark, read as published: several photos of each
garment, and a same-item retrieval protocol on them.

Layout under ``root`` (Liu et al., "DeepFashion", CVPR 2016; the benchmark's README):

- ``Eval/list_eval_partition.txt``: line 1 the number of images, line 2 the header
  ``image_name item_id evaluation_status``, then ``img/<GENDER>/<Category>/<item_id>/<n>_<pose>.jpg
  <item_id> train|query|gallery`` (52,712 images of 7,982 garments: 25,882 train, 14,218 query,
  12,612 gallery);
- ``img/``: the photos (``img_folder`` names another, e.g. ``img_highres``).

An image's category is its path's second folder (``WOMEN/Dresses``): ``genders`` keeps WOMEN's
by default and ``categories`` maps Dresses, Skirts, Shorts and Blouses_Shirts to the shop's four.
Each image is an item, and ``product_id`` names its garment. The query and gallery images are the
shop (the test split), marked ``view`` query or gallery: the published protocol ranks the whole
gallery for each query, and Recall@k is the share of queries with an image of the same garment in
the top k (``evaluation.same_item``). The train images are split by garment, seeded, into the
classifier's train and validation splits in the course's proportions, so that no garment is in
both. The benchmark publishes no attributes for its images: the oracle's are measured from the
pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashionbench.data.catalogue import (
    CATEGORIES,
    COURSE_SPLIT_SIZES,
    GALLERY_VIEW,
    QUERY_VIEW,
    Catalogue,
    CatalogueError,
)
from fashionbench.data.deepfashion import read_listing
from fashionbench.data.labelled_images import (
    LabelledImage,
    PhotoSourceOptions,
    load_labelled_images,
    validate_category_mapping,
)
from fashionbench.data.rows import RowsInMemory, RowsWriter
from fashionbench.data.skips import SkipLog
from fashionbench.options import Stage, option

PARTITION = "Eval/list_eval_partition.txt"
STATUSES = ("train", QUERY_VIEW, GALLERY_VIEW)
DEFAULT_CATEGORIES = {"Dresses": "Dresses", "Skirts": "Skirts", "Shorts": "Shorts", "Blouses_Shirts": "Blouses"}


@dataclass(kw_only=True)
class DeepFashionInShopSource(PhotoSourceOptions):
    """The In-shop images of the ``genders`` and the categories that ``categories`` maps."""

    name: str = option("deepfashion_inshop", decides=Stage.DATA)
    categories: dict[str, str] = option(factory=lambda: dict(DEFAULT_CATEGORIES), decides=Stage.DATA)
    genders: list[str] = option(factory=lambda: ["WOMEN"], decides=Stage.DATA)
    img_folder: str = option("img", decides=Stage.DATA)  # the photos' folder as the partition names it

    def load(self, images: RowsInMemory | RowsWriter | None = None) -> Catalogue:
        """Raises CatalogueError for a missing or malformed partition file, an empty category."""
        root = self.validated_root()
        mapping = validate_category_mapping(dict(self.categories), "data.categories")
        genders = set(self.genders)
        skips = SkipLog()
        entries = []
        for where, fields in read_listing(root / PARTITION, ("image_name", "item_id", "evaluation_status"), skips,
                                          min_fields=3, split_all=True):
            image, product, status = fields[:3]
            parts = Path(image).parts
            if status not in STATUSES:
                skips.skip(where, "malformed_row", f"evaluation_status {status!r}, expected one of {list(STATUSES)}")
                continue
            if len(parts) < 4 or parts[0] != self.img_folder:
                skips.skip(where, "malformed_row", f"image_name {image!r}, expected "
                                                  f"{self.img_folder}/<GENDER>/<Category>/<item_id>/<file>")
                continue
            if parts[1] not in genders:
                skips.skip(image, "filtered_out")
                continue
            if parts[2] not in mapping:
                skips.skip(image, "unmapped_label")
                continue
            entries.append((image, product, status, mapping[parts[2]]))
        if not entries:
            raise CatalogueError(f"{root / PARTITION}: no image of data.genders={sorted(genders)} in "
                                 f"data.categories={sorted(mapping)} (skipped: {dict(skips.skipped) or 'none'})")
        validation = self._validation_products(entries)
        records = [LabelledImage(image, image, category,
                                 "test" if status != "train" else "val" if product in validation else "train",
                                 product=product, view="" if status == "train" else status)
                   for image, product, status, category in entries]
        return load_labelled_images(
            records, source=self.name, root=root, image_size=self.image_size, seed=self.seed, skips=skips,
            max_per_category=self.max_per_category, max_pixels=self.max_pixels, images=images,
        )

    def _validation_products(self, entries: list[tuple[str, str, str, str]]) -> set[str]:
        """The training garments held out for validation: per category, a seeded share of them as
        the course's validation split is of its training and validation splits."""
        chosen: set[str] = set()
        for number, category in enumerate(CATEGORIES):
            products = sorted({p for _, p, status, c in entries if status == "train" and c == category})
            if len(products) < 2:
                continue
            train, val, _ = COURSE_SPLIT_SIZES[category]
            count = max(1, round(len(products) * val / (train + val)))
            rng = np.random.default_rng([self.seed, number, 2])
            chosen.update(rng.choice(products, size=count, replace=False).tolist())
        return chosen
