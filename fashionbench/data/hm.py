"""H&M Personalized Fashion Recommendations (Kaggle, 2022), read as published.

Layout under ``root``:

- ``articles.csv``: one row per article: ``article_id`` (10 digits with a leading zero, e.g.
  ``0108775015``; a copy saved from integers has lost it), ``product_type_name`` (Skirt, Dress,
  Shorts, Blouse, Top, Shirt, ...), ``index_group_name`` (Ladieswear, Divided, Menswear, Baby/
  Children, Sport), ``colour_group_name``, ``graphical_appearance_name``,
  ``perceived_colour_value_name`` and 18 more columns, ``detail_desc`` free text with commas and
  quotes;
- ``images/<first 3 digits>/<article_id as 10 digits>.jpg``: about 105k of the 105,542 articles
  have one; an article without one is counted (``skipped_missing_file``) and left out;
- ``transactions_train.csv`` (``t_dat``, ``customer_id``, ``article_id``, ``price``,
  ``sales_channel_id``; 31.8M rows) and ``customers.csv``: the users' side, read by
  ``users=interactions`` (configs/experiment/hm.yaml).

The shop is the women's articles (``filters``: ``index_group_name`` Ladieswear or Divided) of
the product types that ``categories`` maps to the four categories. The articles' colour,
graphical appearance and perceived colour become the items' attributes, the oracle's ground
truth. The competition publishes no image split: the harness makes a seeded one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fashionbench.data.image_csv import ImageCsvSource
from fashionbench.options import Stage, option

ID_DIGITS = 10  # article ids as the images and the transactions name them

DEFAULT_CATEGORIES = {"Skirt": "Skirts", "Dress": "Dresses", "Shorts": "Shorts", "Blouse": "Blouses",
                      "Top": "Blouses", "Shirt": "Blouses"}
DEFAULT_FILTERS = {"index_group_name": ["Ladieswear", "Divided"]}
DEFAULT_ATTRIBUTES = {"colour": "colour_group_name", "appearance": "graphical_appearance_name",
                      "perceived_colour": "perceived_colour_value_name"}


@dataclass(kw_only=True)
class HmSource(ImageCsvSource):
    """The H&M articles the filters keep and ``categories`` maps (``product_type_name`` -> category),
    item ids the 10-digit article ids; the path template may name ``{article_prefix}``, the id's
    first three digits."""

    name: str = option("hm", decides=Stage.DATA)
    categories: dict[str, str] = option(factory=lambda: dict(DEFAULT_CATEGORIES), decides=Stage.DATA)
    csv_file: str = option("articles.csv", decides=Stage.DATA)
    id_column: str = option("article_id", decides=Stage.DATA)
    label_column: str = option("product_type_name", decides=Stage.DATA)
    path_template: str = option("images/{article_prefix}/{article_id}.jpg", decides=Stage.DATA)
    filters: dict[str, Any] = option(factory=lambda: {k: list(v) for k, v in DEFAULT_FILTERS.items()},
                                     decides=Stage.DATA)
    attributes: dict[str, str] = option(factory=lambda: dict(DEFAULT_ATTRIBUTES), decides=Stage.DATA)

    derived_fields: ClassVar[tuple[str, ...]] = ("article_prefix",)

    def row_fields(self, row: dict[str, str]) -> dict[str, str]:
        article = row[self.id_column]
        padded = article.zfill(ID_DIGITS) if article.isdigit() else article
        return {**row, self.id_column: padded, "article_prefix": padded[:3]}
