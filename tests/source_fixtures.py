"""Tiny data sets in the exact published layouts, and image files real folders contain."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

# A distinct colour per shop category, so a test can tell which image landed where.
CATEGORY_COLOURS = {"Skirts": (200, 30, 30), "Dresses": (30, 160, 40), "Shorts": (30, 40, 200), "Blouses": (230, 200, 40)}


def save_photo(path: Path, colour=(120, 80, 60), size=(48, 40), seed: int = 0) -> Path:
    """A small noisy RGB JPEG (or PNG, by suffix) of roughly ``colour``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 10, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_hostile_image(path: Path, case: str) -> Path:
    """One of the image files real data sets hold: broken ones and unusual colour modes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if case == "truncated":
        buffer = io.BytesIO()
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    elif case == "zero_byte":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("id,label\nthis is a CSV saved as .jpg\n")
    elif case == "grayscale":
        Image.new("L", (40, 40), 100).save(path, "JPEG")
    elif case == "cmyk":
        Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(path, "JPEG")  # pure red in print colours
    elif case == "rgba":
        Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(path, "PNG")  # fully transparent
    elif case == "png16":
        Image.fromarray(np.full((40, 40), 32768, np.uint16)).save(path, "PNG")  # mid grey, 16 bits
    elif case == "big":
        save_photo(path, size=(120, 100))  # over a test's low max_pixels
    else:
        raise ValueError(case)
    return path


def make_deepfashion(root: Path, per_split: int = 2, with_attributes: bool = True) -> Path:
    """The Category and Attribute Prediction Benchmark layout with ``per_split`` images per
    mapped category and split, plus unmapped categories (Anorak, Tee) that must be left out."""
    names = [("Anorak", 1), ("Blouse", 1), ("Dress", 3), ("Shorts", 2), ("Skirt", 2), ("Tee", 1)]
    shop = {"Blouse": "Blouses", "Dress": "Dresses", "Shorts": "Shorts", "Skirt": "Skirts"}
    attributes = [("floral", 1), ("cotton", 2), ("a-line", 3), ("v-neck", 4), ("boho chic", 5), ("striped", 1)]
    images, partition, attribute_rows = [], [], []
    rng = np.random.default_rng(0)
    for label, (name, _) in enumerate(names, start=1):
        for split in ("train", "val", "test"):
            for number in range(per_split if name in shop else 1):
                image = f"img/{split}_{name}_{number}/img_{number:08d}.jpg"
                colour = CATEGORY_COLOURS.get(shop.get(name, ""), (90, 90, 90))
                save_photo(root / image, colour, seed=len(images))
                images.append(f"{image}  {label}")
                partition.append(f"{image}  {split}")
                values = rng.choice(["1", "-1"], size=len(attributes))
                attribute_rows.append(f"{image}  {' '.join(values)}")
    _write_listing(root / "Anno/list_category_cloth.txt", "category_name  category_type",
                   [f"{name:<20}{kind}" for name, kind in names])
    _write_listing(root / "Anno/list_category_img.txt", "image_name  category_label", images)
    _write_listing(root / "Eval/list_eval_partition.txt", "image_name  evaluation_status", partition)
    if with_attributes:
        _write_listing(root / "Anno/list_attr_cloth.txt", "attribute_name  attribute_type",
                       [f"{name:<30}{kind}" for name, kind in attributes])
        _write_listing(root / "Anno/list_attr_img.txt", "image_name  attribute_labels", attribute_rows)
    return root


def _write_listing(path: Path, header: str, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([str(len(lines)), header, *lines]) + "\n")


def make_product_images(root: Path, per_type: int = 4) -> Path:
    """Kaggle Fashion Product Images: styles.csv (with the real file's unquoted-comma rows)
    and images/<id>.jpg; men's items and other article types that must be left out."""
    header = "id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName"
    rows, number = [header], 1000
    for article, category in (("Skirts", "Skirts"), ("Dresses", "Dresses"), ("Shorts", "Shorts"), ("Tops", "Blouses")):
        for i in range(per_type):
            number += 1
            name = f"Nice {article} {i}" if i else f"Women Blue {article}, Pack of 1"  # unquoted comma
            rows.append(f"{number},Women,Apparel,Topwear,{article},Blue,Summer,2012,Casual,{name}")
            save_photo(root / f"images/{number}.jpg", CATEGORY_COLOURS[category], seed=number)
    rows.append("2001,Men,Apparel,Bottomwear,Shorts,Black,Fall,2011,Sports,Men Black Shorts")
    rows.append("2002,Women,Footwear,Shoes,Heels,Red,Winter,2016,Party,Red Heels")
    save_photo(root / "images/2001.jpg")
    (root / "styles.csv").write_text("\n".join(rows) + "\n")
    return root
