"""Tiny data sets in the exact published layouts, and image files real folders contain."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from fashionbench.data.synthetic import draw_garment

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


# H&M Personalized Fashion Recommendations (Kaggle, 2022): the published columns, in order.
HM_ARTICLE_COLUMNS = (
    "article_id,product_code,prod_name,product_type_no,product_type_name,product_group_name,graphical_appearance_no,"
    "graphical_appearance_name,colour_group_code,colour_group_name,perceived_colour_value_id,"
    "perceived_colour_value_name,perceived_colour_master_id,perceived_colour_master_name,department_no,"
    "department_name,index_code,index_name,index_group_no,index_group_name,section_no,section_name,"
    "garment_group_no,garment_group_name,detail_desc"
)
HM_CUSTOMER_COLUMNS = "customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code"
HM_TRANSACTION_COLUMNS = "t_dat,customer_id,article_id,price,sales_channel_id"
HM_TYPES = {"Skirts": "Skirt", "Dresses": "Dress", "Shorts": "Shorts", "Blouses": "Blouse"}
# colour_group_name -> (the synthetic garment colour drawn, perceived colour value)
HM_COLOURS = {"Black": ("black", "Dark"), "Red": ("red", "Bright")}
HM_CUT, HM_WINDOW_DAYS = "2020-09-16", 7


@dataclass
class HmTree:
    """A miniature H&M tree and what was planted in it, for exact counts."""

    root: Path
    planted: dict[str, int]


def make_hm(root: Path, per_category: int = 24, customers: int = 30, seed: int = 0) -> HmTree:
    """articles.csv, customers.csv, transactions_train.csv and images/<3 digits>/<10 digits>.jpg,
    with the quirks of the real files: 10-digit ids with a leading zero (and a few transactions
    whose ids lost it, as saved from integers), ISO dates, free text with commas, quotes and
    newlines, articles without an image, men's and unmapped articles, customers without
    transactions, exact duplicate transactions, and hostile rows (a bad date, an empty customer,
    an unknown article, a row with too many fields), and a truncated image.

    Customers like one colour: before the cut (2020-09-16) each buys, per category, one shop
    article of it and one article outside the shop; in the week from the cut, another shop article
    of it. The shop is the catalogue's test split, made by the harness with ``seed``: the tree is
    read once (``HmSource``) to know it."""
    from fashionbench.data.hm import HmSource

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    articles, code = [HM_ARTICLE_COLUMNS], 108774
    colours = list(HM_COLOURS)

    def article(category_type: str, colour: str, index_group: str, image_category: str | None) -> str:
        nonlocal code
        code += 1
        article_id = f"{code:07d}001"  # ten digits, the first a zero
        appearance = ("Solid", "Stripe")[code % 2]
        description = (f'"Fitted {category_type.lower()} in {colour.lower()}, with a ""{appearance}"" finish.'
                       + ("\nMachine wash." if code % 5 == 0 else "") + '"')
        articles.append(",".join([
            article_id, str(code), f"{category_type} {code}", "253", category_type, "Garment Full body",
            str(1010016 + code % 2), appearance, "9" if colour == "Black" else "42", colour,
            "4" if colour == "Black" else "3", HM_COLOURS.get(colour, ("", "Dusty Light"))[1], "5", colour,
            "1676", "Jersey Basic", "A", index_group, "1" if index_group == "Ladieswear" else "2", index_group,
            "16", "Womens Everyday Basics", "1002", "Jersey Basic", description]))
        if image_category is not None:
            garment = draw_garment(image_category, {"colour": HM_COLOURS[colour][0],
                                                    "pattern": "solid" if appearance == "Solid" else "stripes",
                                                    "length": "medium", "flare": "straight",
                                                    "sleeves": "short" if image_category in ("Dresses", "Blouses")
                                                    else "none"}, 48, 4.0, rng)
            path = root / "images" / article_id[:3] / f"{article_id}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(garment).save(path)
        return article_id

    for category, product_type in HM_TYPES.items():
        for number in range(per_category):
            article(product_type, colours[number % len(colours)], ("Ladieswear", "Divided")[number % 2], category)
    no_image = [article("Skirt", "Black", "Ladieswear", None), article("Dress", "Red", "Divided", None)]
    broken = article("Blouse", "Red", "Divided", "Blouses")
    write_hostile_image(root / "images" / broken[:3] / f"{broken}.jpg", "truncated")  # counted, never fatal
    mens = article("Shorts", "Black", "Menswear", "Shorts")
    unmapped = article("Trousers", "Red", "Ladieswear", "Shorts")
    (root / "articles.csv").write_text("\n".join(articles) + "\n")

    catalogue = HmSource(root=str(root), seed=seed, image_size=32).load()
    items = catalogue.items
    shop = items[items["split"] == "test"]
    elsewhere = items[items["split"] != "test"]
    colour_of = {row.item_id: row.attr_colour for row in items.itertuples()}

    customer_ids = [f"{number:064x}" for number in rng.integers(1, 2**62, size=customers + 7)]
    people = ["customer_id,FN,Active,club_member_status,fashion_news_frequency,age,postal_code"]
    for number, customer in enumerate(customer_ids):  # the last five buy nothing
        people.append(f"{customer},{'1.0' if number % 3 else ''},{'1.0' if number % 3 else ''},ACTIVE,"
                      f"{'Regularly' if number % 2 else 'NONE'},{'' if number % 7 == 0 else 20 + number},"
                      f"{number:064x}")
    (root / "customers.csv").write_text("\n".join(people) + "\n")

    rows, planted = [HM_TRANSACTION_COLUMNS], dict.fromkeys(
        ["queries", "held_out", "item_not_in_shop", "item_not_in_catalogue", "duplicate", "malformed_row",
         "bad_time", "missing_value", "after_window"], 0)

    def buy(day: str, customer: str, article_id: str) -> None:
        rows.append(f"2020-09-{day},{customer},{article_id},0.0{rng.integers(10000, 99999)},{rng.integers(1, 3)}")

    for number, customer in enumerate(customer_ids[:customers]):
        liked = colours[number % len(colours)]
        for category in HM_TYPES:
            mine = shop[(shop["category"] == category) & (shop["item_id"].map(colour_of) == liked)]["item_id"]
            choice = rng.permutation(mine.to_numpy())
            if len(choice) < 2:
                continue
            before = f"{rng.integers(1, 16):02d}"
            buy(before, customer, choice[0])
            planted["queries"] += 1
            buy(f"{rng.integers(16, 23):02d}", customer, choice[1])
            planted["held_out"] += 1
            other = elsewhere[elsewhere["category"] == category]["item_id"].to_numpy()
            buy(before, customer, rng.choice(other))
            planted["item_not_in_shop"] += 1
        buy("03", customer, mens)
        buy("04", customer, (*no_image, broken)[number % 3])
        planted["item_not_in_catalogue"] += 2
    only_before, only_after = customer_ids[customers:customers + 2]
    buy("07", only_before, shop[shop["category"] == "Dresses"]["item_id"].iloc[0])  # a pair without held-out items
    buy("18", only_after, shop[shop["category"] == "Dresses"]["item_id"].iloc[0])  # a pair without queries
    planted["without_held_out"] = planted["without_queries"] = 1
    query, held_out = rows[1], rows[2]  # the first customer's first query and held-out purchase
    rows += [query, held_out]  # the same purchases twice: duplicate rows
    day, customer, article_id, *rest = query.split(",")
    rows.append(",".join([day, customer, article_id.lstrip("0"), *rest]))  # the id lost its zero: a third copy
    planted["duplicate"] += 3
    rows.append(f"2020-13-45,{customer_ids[0]},{shop['item_id'].iloc[0]},0.01,1")
    planted["bad_time"] += 1
    rows.append(f"2020-09-05,,{shop['item_id'].iloc[0]},0.01,1")
    planted["missing_value"] += 1
    rows.append(f"2020-09-05,{customer_ids[1]},0999999999,0.01,1")  # no such article
    planted["item_not_in_catalogue"] += 1
    rows.append(f"2020-09-05,{customer_ids[1]},{shop['item_id'].iloc[0]},0.01,1,extra")
    planted["malformed_row"] += 1
    rows.append(f"2020-09-23,{customer_ids[2]},{shop['item_id'].iloc[1]},0.01,2")  # after the week
    planted["after_window"] += 1
    buy("02", customer_ids[0], unmapped)
    planted["item_not_in_catalogue"] += 1
    (root / "transactions_train.csv").write_text("\n".join(rows) + "\n")
    planted["rows"] = len(rows) - 1
    return HmTree(root, planted)


INSHOP_CATEGORIES = {"Dresses": "Dresses", "Skirts": "Skirts", "Shorts": "Shorts", "Blouses_Shirts": "Blouses"}


def make_inshop(root: Path, train_products: int = 6, test_products: int = 4) -> Path:
    """The In-shop Clothes Retrieval Benchmark layout: ``Eval/list_eval_partition.txt`` (count, the
    header ``image_name item_id evaluation_status``, then one image a line) and
    ``img/<GENDER>/<Category>/<item_id>/<nn>_<n>_<pose>.jpg``. Per mapped WOMEN category, training
    garments with two photos and test garments with one query and two gallery photos, each photo
    of a garment drawn again with another pose; WOMEN/Tees_Tanks (unmapped) and MEN/Shorts
    (filtered out); a line with too few fields and one with an unknown status (malformed)."""
    rng = np.random.default_rng(0)
    lines, product = [], 0
    poses = ("front", "side", "back", "full")

    def garment(gender: str, folder: str, category: str, statuses: list[str]) -> None:
        nonlocal product
        product += 1
        item = f"id_{product:08d}"
        attributes = {"colour": ("black", "red", "yellow", "green", "navy")[product % 5],
                      "pattern": ("solid", "stripes", "dots")[product % 3], "length": ("short", "long")[product % 2],
                      "flare": "straight", "sleeves": "short" if category in ("Dresses", "Blouses") else "none"}
        for view, status in enumerate(statuses):
            image = f"img/{gender}/{folder}/{item}/{view + 1:02d}_{view + 1}_{poses[view % 4]}.jpg"
            (root / image).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(draw_garment(category, attributes, 40, 4.0, rng)).save(root / image)
            lines.append(f"{image}  {item}  {status}")

    for folder, category in INSHOP_CATEGORIES.items():
        for _ in range(train_products):
            garment("WOMEN", folder, category, ["train", "train"])
        for _ in range(test_products):
            garment("WOMEN", folder, category, ["query", "gallery", "gallery"])
    garment("WOMEN", "Tees_Tanks", "Blouses", ["train", "query", "gallery"])
    garment("MEN", "Shorts", "Shorts", ["train", "query", "gallery"])
    lines.append("img/WOMEN/Dresses/id_09999999/01_1_front.jpg")  # too few fields
    lines.append("img/WOMEN/Dresses/id_09999998/01_1_front.jpg  id_09999998  val")  # not a status of this benchmark
    _write_listing(root / "Eval/list_eval_partition.txt", "image_name  item_id  evaluation_status", lines)
    return root
