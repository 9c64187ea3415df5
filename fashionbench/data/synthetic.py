"""The embedded default data set: garment images the package draws itself.

Every item is a silhouette of its category (skirt, dress, shorts, blouse) with ground-truth
attributes (colour, pattern, length, sleeves, flare) that shape the picture, on a jittered
background with noise, so that classification is not trivial and items that share
attributes look alike. The same seed always draws the same catalogue.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from fashionbench.data import rows as stored_rows
from fashionbench.data.catalogue import (
    ATTRIBUTE_PREFIX,
    CATEGORIES,
    DEFAULT_IMAGE_SIZE,
    GALLERY_VIEW,
    PRODUCT_COLUMN,
    QUERY_VIEW,
    SPLITS,
    VIEW_COLUMN,
    Catalogue,
    CatalogueError,
    check_image_size,
    course_split_sizes,
)
from fashionbench.data.rows import RowsInMemory, RowsWriter
from fashionbench.options import Stage, option

COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (30, 30, 35),
    "navy": (25, 40, 110),
    "red": (190, 30, 40),
    "green": (40, 130, 60),
    "yellow": (230, 200, 50),
    "pink": (235, 140, 180),
    "beige": (200, 175, 135),
    "purple": (110, 50, 140),
}
PATTERNS = ("solid", "stripes", "dots", "checks")
LENGTHS = ("short", "medium", "long")
SLEEVES = ("none", "short", "long")  # skirts and shorts have "none"
FLARES = ("straight", "flared")

# Garment extents in units of the canvas side, per length attribute.
_LENGTH_UNITS = {
    "Skirts": {"short": 0.30, "medium": 0.48, "long": 0.70},
    "Dresses": {"short": 0.22, "medium": 0.36, "long": 0.50},
    "Shorts": {"short": 0.12, "medium": 0.22, "long": 0.34},
    "Blouses": {"short": 0.32, "medium": 0.44, "long": 0.58},
}
_RENDER_SCALE = 3  # draw larger, then downsample: anti-aliased edges
DRAW_CHUNK = 256  # garments drawn at a time by the threads, at most (and at most rows.CHUNK_BYTES of images)


@dataclass
class SyntheticSource:
    """Draws a catalogue with the course's per-category split sizes times ``scale``."""

    name: str = option("synthetic", decides=Stage.DATA)
    seed: int = option(0, decides=Stage.DATA, seed=True)
    image_size: int = option(DEFAULT_IMAGE_SIZE, decides=Stage.DATA)
    scale: float = option(0.1, decides=Stage.DATA)  # times the course's Train/Val/Test counts per category
    min_per_split: int = option(2, decides=Stage.DATA)  # at least this many items per category and split
    noise: float = option(8.0, decides=Stage.DATA)  # std of Gaussian pixel noise
    # Images of each garment: with 2 or more, each is drawn again with another pose, background
    # and lighting; in the shop the first view of a garment is a same-item query, the others its
    # gallery (evaluation.same_item). 1: one image per garment, no same-item retrieval.
    views: int = option(1, decides=Stage.DATA)

    def __post_init__(self) -> None:
        """CatalogueError naming the ``data.*`` option that is invalid."""
        check_image_size(self.image_size)
        if self.scale <= 0:
            raise CatalogueError(f"data.scale must be > 0, got {self.scale}")
        if self.min_per_split < 1:
            raise CatalogueError(f"data.min_per_split must be >= 1, got {self.min_per_split}")
        if self.noise < 0:
            raise CatalogueError(f"data.noise must be >= 0, got {self.noise}")
        if self.views < 1:
            raise CatalogueError(f"data.views must be >= 1, got {self.views}")

    def load(self, images: RowsInMemory | RowsWriter | None = None) -> Catalogue:
        """The drawn catalogue; each image goes into ``images`` in catalogue order (default: a list
        in memory; the catalogue store passes a ``RowsWriter``).

        Each garment draws from its own generator (seeded with ``[seed, number]``), so threads
        draw them (Pillow and numpy release the GIL while they draw) and the images are the same
        in any order; a chunk at a time, so memory does not grow with the catalogue."""
        sizes = course_split_sizes(self.scale, self.min_per_split)
        images = images or RowsInMemory((self.image_size, self.image_size, 3))
        garments = list(enumerate((category, split) for category in CATEGORIES
                                  for split, count in zip(SPLITS, sizes[category]) for _ in range(count)))
        rows = []
        workers = os.cpu_count() or 1
        # A chunk's images are all in memory until they are written: as many as the writer buffers.
        garment_bytes = self.image_size * self.image_size * 3 * self.views
        chunk = max(workers, min(DRAW_CHUNK, stored_rows.CHUNK_BYTES // garment_bytes))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(garments), chunk):
                for garment_rows, garment_images in pool.map(self._draw, garments[start:start + chunk]):
                    rows.extend(garment_rows)
                    for image in garment_images:
                        images.append(image)
        return Catalogue(pd.DataFrame(rows), images.finish())

    def _draw(self, garment: tuple[int, tuple[str, str]]) -> tuple[list[dict], list[np.ndarray]]:
        """Garment ``number`` of ``category`` in ``split``: its rows (one per view) and images."""
        number, (category, split) = garment
        rng = np.random.default_rng([self.seed, number])
        attributes = draw_attributes(category, rng)
        row = {"item_id": f"synthetic-{number:06d}", "category": category, "split": split,
               "source": "synthetic", **{ATTRIBUTE_PREFIX + k: v for k, v in attributes.items()}}
        if self.views == 1:  # the garment's one image, drawn as it always was
            return [row], [draw_garment(category, attributes, self.image_size, self.noise, rng)]
        rows, images = [], []
        for view in range(self.views):
            # Another pose and background (drawn from the generator's next values) and lighting.
            garment_image = draw_garment(category, attributes, self.image_size, self.noise, rng)
            lighting = rng.uniform(0.75, 1.15) if view else 1.0
            images.append(np.clip(garment_image.astype(np.float32) * lighting, 0, 255).astype(np.uint8))
            role = "" if split != "test" else QUERY_VIEW if view == 0 else GALLERY_VIEW
            rows.append({**row, "item_id": f"{row['item_id']}-v{view}", PRODUCT_COLUMN: row["item_id"],
                         VIEW_COLUMN: role})
        return rows, images


def draw_attributes(category: str, rng: np.random.Generator) -> dict[str, str]:
    """Ground-truth style attributes of one item of ``category``."""
    has_sleeves = category in ("Dresses", "Blouses")
    return {
        "colour": str(rng.choice(list(COLOURS))),
        "pattern": str(rng.choice(PATTERNS)),
        "length": str(rng.choice(LENGTHS)),
        "sleeves": str(rng.choice(SLEEVES)) if has_sleeves else "none",
        "flare": str(rng.choice(FLARES)),
    }


def draw_garment(
    category: str, attributes: dict[str, str], size: int, noise: float, rng: np.random.Generator
) -> np.ndarray:
    """One RGB uint8 image (size x size) of a garment with the given attributes."""
    side = size * _RENDER_SCALE
    mask = Image.new("L", (side, side), 0)
    pen = ImageDraw.Draw(mask)
    for polygon in _silhouette(category, attributes):
        pen.polygon([(x * side, y * side) for x, y in polygon], fill=255)
    # Pose jitter: a small rotation, zoom and shift of the whole garment.
    zoom = rng.uniform(0.85, 1.05)
    mask = mask.rotate(rng.uniform(-6, 6), resample=Image.Resampling.BILINEAR)
    mask = mask.resize((round(side * zoom),) * 2, Image.Resampling.BILINEAR)
    placed = Image.new("L", (side, side), 0)
    shift = rng.uniform(-0.06, 0.06, size=2) * side
    offset = (side - mask.width) // 2
    placed.paste(mask, (int(offset + shift[0]), int(offset + shift[1])))

    background = tuple(int(v) for v in rng.integers(200, 250, size=3))
    canvas = Image.new("RGB", (side, side), background)
    canvas.paste(_texture(attributes, side, rng), (0, 0), placed.filter(ImageFilter.GaussianBlur(1)))
    pixels = np.asarray(canvas.resize((size, size), Image.Resampling.LANCZOS), dtype=np.float32)
    pixels += rng.normal(0.0, noise, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _texture(attributes: dict[str, str], side: int, rng: np.random.Generator) -> Image.Image:
    """A canvas-sized fabric: the base colour with the item's pattern in a contrasting colour."""
    base = np.array(COLOURS[attributes["colour"]]) + rng.integers(-15, 16, size=3)
    base = tuple(int(v) for v in np.clip(base, 0, 255))
    accent = (245, 245, 240) if sum(base) < 400 else (25, 25, 30)
    fabric = Image.new("RGB", (side, side), base)
    pen = ImageDraw.Draw(fabric)
    period = max(4, side // int(rng.integers(7, 11)))
    pattern = attributes["pattern"]
    if pattern == "stripes":
        for y in range(0, side, period):
            pen.rectangle([0, y, side, y + period // 3], fill=accent)
    elif pattern == "dots":
        radius = max(1, period // 5)
        for y in range(period // 2, side, period):
            for x in range(period // 2, side, period):
                pen.ellipse([x - radius, y - radius, x + radius, y + radius], fill=accent)
    elif pattern == "checks":
        for i in range(0, side, period):
            pen.rectangle([i, 0, i + period // 4, side], fill=accent)
            pen.rectangle([0, i, side, i + period // 4], fill=accent)
    return fabric


def _silhouette(category: str, attributes: dict[str, str]) -> list[list[tuple[float, float]]]:
    """Polygons (unit-square coordinates, y down) whose union is the garment's outline."""
    length = _LENGTH_UNITS[category][attributes["length"]]
    flare = 0.14 if attributes["flare"] == "flared" else 0.03
    if category == "Skirts":
        top, half = 0.15, 0.16
        return [[(0.5 - half, top), (0.5 + half, top), (0.5 + half + flare, top + length),
                 (0.5 - half - flare, top + length)]]
    if category == "Shorts":
        top, half, crotch = 0.25, 0.2, 0.42
        hem = crotch + length
        legs = [[(0.5 - half, crotch), (0.49, crotch), (0.49 - 0.02, hem), (0.5 - half - flare / 2, hem)],
                [(0.51, crotch), (0.5 + half, crotch), (0.5 + half + flare / 2, hem), (0.51 + 0.02, hem)]]
        return [[(0.5 - half, top), (0.5 + half, top), (0.5 + half, crotch + 0.01),
                 (0.5 - half, crotch + 0.01)], *legs]
    if category == "Dresses":
        shoulder, waist, half = 0.10, 0.40, 0.13
        bodice = [(0.5 - half, shoulder), (0.45, shoulder), (0.5, shoulder + 0.06), (0.55, shoulder),
                  (0.5 + half, shoulder), (0.5 + half - 0.02, waist), (0.5 - half + 0.02, waist)]
        skirt = [(0.5 - half + 0.02, waist), (0.5 + half - 0.02, waist),
                 (0.5 + half + flare, waist + length), (0.5 - half - flare, waist + length)]
        return [bodice, skirt, *_sleeves(attributes["sleeves"], shoulder, half)]
    # Blouses: a wider torso, V neck, the hem at the length attribute.
    shoulder, half = 0.15, 0.2
    torso = [(0.5 - half, shoulder), (0.44, shoulder), (0.5, shoulder + 0.1), (0.56, shoulder),
             (0.5 + half, shoulder), (0.5 + half - 0.03 + flare / 3, shoulder + length),
             (0.5 - half + 0.03 - flare / 3, shoulder + length)]
    return [torso, *_sleeves(attributes["sleeves"], shoulder, half)]


def _sleeves(kind: str, shoulder: float, half: float) -> list[list[tuple[float, float]]]:
    if kind == "none":
        return []
    reach = 0.12 if kind == "short" else 0.42
    left = [(0.5 - half, shoulder), (0.5 - half, shoulder + 0.1),
            (0.5 - half - reach * 0.45, shoulder + reach), (0.5 - half - reach * 0.6, shoulder + reach - 0.07)]
    right = [(1 - x, y) for x, y in left]
    return [left, right]
