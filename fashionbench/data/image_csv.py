"""A catalogue from a CSV of image ids/paths and labels (one source, many CSV layouts).

Column names, the path template, the label -> category mapping, row filters and attribute
columns all come from config, so Kaggle's Fashion Product Images ``styles.csv`` and the
clothing dataset's ``images.csv`` are two config files of this one source
(configs/data/product_images.yaml, configs/data/clothing_photos.yaml). The CSV publishes no
split: the harness makes a seeded stratified one in the course's proportions.
"""

from __future__ import annotations

import logging
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from fashionbench.data.catalogue import Catalogue, CatalogueError
from fashionbench.data.labelled_images import (
    LabelledImage,
    PhotoSourceOptions,
    load_labelled_images,
    validate_category_mapping,
)
from fashionbench.data.rows import RowsInMemory, RowsWriter
from fashionbench.data.skips import SkipLog
from fashionbench.data.text_tables import read_csv_records
from fashionbench.options import Stage, option

log = logging.getLogger("fashionbench.data")


@dataclass(kw_only=True)
class ImageCsvSource(PhotoSourceOptions):
    """Items = rows of ``root/csv_file`` that pass ``filters`` and whose label is mapped.

    ``path_template`` names each row's image relative to ``root`` with ``{column}`` fields
    (e.g. ``images/{id}.jpg``); ``categories`` maps labels (``label_column``) to the shop's
    categories; ``filters`` keeps rows whose column value is one of the listed values
    (compared as text, case-insensitively, so ``kids: [false]`` matches ``False``);
    ``attributes`` maps attribute names to columns (items get ``attr_<name>``).
    """

    # What a CSV layout must say (each data set's config file, e.g. configs/data/clothing_photos.yaml):
    categories: dict[str, str] = option(decides=Stage.DATA)
    csv_file: str = option(decides=Stage.DATA)
    id_column: str = option(decides=Stage.DATA)
    label_column: str = option(decides=Stage.DATA)
    path_template: str = option(decides=Stage.DATA)
    filters: dict[str, Any] = option(factory=dict, decides=Stage.DATA)
    attributes: dict[str, str] = option(factory=dict, decides=Stage.DATA)
    overflow_column: str | None = option(None, decides=Stage.DATA)

    # Fields a layout computes from each row (``row_fields``) that its path template may name.
    derived_fields: ClassVar[tuple[str, ...]] = ()

    def row_fields(self, row: dict[str, str]) -> dict[str, str]:
        """The row's values as the id and the path template read them; a layout whose ids or
        paths need more than the CSV's text (H&M's zero-padded ids) overrides this."""
        return row

    def load(self, images: RowsInMemory | RowsWriter | None = None) -> Catalogue:
        """Raises CatalogueError for an invalid option, a missing file or column, an empty category."""
        root = self.validated_root()
        mapping = validate_category_mapping(dict(self.categories), "data.categories")
        filters = {str(column): _allowed_values(column, values) for column, values in dict(self.filters).items()}
        attributes = {str(name): str(column) for name, column in dict(self.attributes).items()}
        template_columns = [c for c in _template_columns(self.path_template) if c not in self.derived_fields]
        csv_path = Path(self.csv_file) if Path(self.csv_file).is_absolute() else root / self.csv_file

        skips = SkipLog()
        required = [self.id_column, self.label_column, *template_columns, *filters, *attributes.values()]
        rows = read_csv_records(csv_path, required, skips, overflow_column=self.overflow_column)
        unmapped: Counter[str] = Counter()
        records = []
        for row in rows:
            row = self.row_fields(row)
            if any(row[column].casefold() not in allowed for column, allowed in filters.items()):
                skips.skip(row["_where"], "filtered_out")
                continue
            label = row[self.label_column]
            if not row[self.id_column]:
                skips.skip(row["_where"], "malformed_row", f"empty {self.id_column}")
                continue
            if label not in mapping:
                unmapped[label] += 1
                skips.skip(row["_where"], "unmapped_label")
                continue
            records.append(
                LabelledImage(
                    item_id=row[self.id_column],
                    path=self.path_template.format(**row),
                    category=mapping[label],
                    attributes={name: row[column] or "unknown" for name, column in attributes.items()},
                )
            )
        if unmapped:
            log.info("%s: labels not mapped to a category (left out): %s", self.name,
                     dict(unmapped.most_common(12)))
        return load_labelled_images(
            records, source=self.name, root=root, image_size=self.image_size, seed=self.seed, skips=skips,
            max_per_category=self.max_per_category, max_pixels=self.max_pixels, images=images,
        )


def _template_columns(template: str) -> list[str]:
    """The ``{column}`` fields of a path template; CatalogueError if it has none or is malformed."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise CatalogueError(f"data.path_template={template!r} is malformed: {error}") from None
    if not fields or any(not name or not name.isidentifier() for name in fields):
        raise CatalogueError(
            f"data.path_template={template!r} must name columns as {{column}} fields, e.g. 'images/{{id}}.jpg'"
        )
    return fields


def _allowed_values(column: Any, values: Any) -> set[str]:
    if isinstance(values, (str, int, float, bool)):
        values = [values]
    try:
        return {str(value).casefold() for value in values}
    except TypeError:
        raise CatalogueError(f"data.filters.{column} must be a value or a list of values, got {values!r}") from None
