"""A catalogue from a folder tree: ``root/<Category>/*.jpg``, optionally split in folders.

Two layouts: ``root/<category folder>/<image>`` (the harness makes a seeded stratified
split) or ``root/<split>/<category folder>/<image>`` with split folders ``train``, ``val``
(or ``validation``) and ``test`` in any capitalisation, as the course's
``Train/Val/Test/<class>/``. Category folders are mapped to shop categories by
``categories`` (the course named one ``Blouses_Shirts``); files in unmapped folders are
counted as ``unmapped_label``, files with other extensions as ``other_file_type``. Hidden
files (``.DS_Store``) are ignored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fashionbench.data.catalogue import Catalogue, CatalogueError
from fashionbench.data.labelled_images import (
    LabelledImage,
    PhotoSourceOptions,
    load_labelled_images,
    validate_category_mapping,
)
from fashionbench.data.rows import RowsInMemory, RowsWriter
from fashionbench.data.skips import SkipLog
from fashionbench.options import Stage, option

log = logging.getLogger("fashionbench.data")

SPLIT_FOLDERS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
DEFAULT_CATEGORIES = {
    "Skirts": "Skirts", "Dresses": "Dresses", "Shorts": "Shorts", "Blouses": "Blouses", "Blouses_Shirts": "Blouses",
}


@dataclass(kw_only=True)
class FolderSource(PhotoSourceOptions):
    """The images in the category folders that ``categories`` maps to shop categories."""

    categories: dict[str, str] = option(factory=lambda: dict(DEFAULT_CATEGORIES), decides=Stage.DATA)
    extensions: list[str] = option(factory=lambda: [".jpg", ".jpeg", ".png"], decides=Stage.DATA)

    def load(self, images: RowsInMemory | RowsWriter | None = None) -> Catalogue:
        """Raises CatalogueError for an invalid option, a root without category folders, an empty category."""
        root = self.validated_root()
        mapping = validate_category_mapping(dict(self.categories), "data.categories")
        extensions = {str(e).lower() if str(e).startswith(".") else "." + str(e).lower() for e in self.extensions}
        skips = SkipLog()

        folders = _visible_folders(root)
        split_folders = [folder for folder in folders if folder.name.lower() in SPLIT_FOLDERS]
        if split_folders:
            for other in (folder for folder in folders if folder not in split_folders):
                count = sum(1 for path in other.rglob("*") if path.is_file() and not path.name.startswith("."))
                skips.skip(other.name, "outside_split_folders", f"{count} file(s) beside the split folders")
                log.warning("%s: %s is not a split folder (train/val/test); its %d file(s) are left out",
                            self.name, other, count)
            groups = [(SPLIT_FOLDERS[split.name.lower()], folder)
                      for split in split_folders for folder in _visible_folders(split)]
        else:
            groups = [(None, folder) for folder in folders]
        if not groups:
            raise CatalogueError(
                f"data.root={root}: no category folders; expected <root>/<Category>/*.jpg or "
                f"<root>/<train|val|test>/<Category>/*.jpg"
            )

        records = []
        for split, folder in groups:
            entries = sorted(path for path in folder.iterdir() if not path.name.startswith(".") and not path.is_dir())
            category = mapping.get(folder.name)
            if category is None:
                skips.skip(folder.name, "unmapped_label", count=len(entries))
                continue
            for path in entries:
                relative = path.relative_to(root).as_posix()
                if not path.is_file():  # a dangling or looping link, a socket or pipe: counted, not dropped
                    skips.skip(relative, "not_a_file", "a dangling or looping link, or not a regular file")
                    continue
                if path.suffix.lower() not in extensions:
                    skips.skip(relative, "other_file_type", f"extension not in {sorted(extensions)}")
                    continue
                records.append(LabelledImage(relative, relative, category, split))
        return load_labelled_images(
            records, source=self.name, root=root, image_size=self.image_size, seed=self.seed, skips=skips,
            max_per_category=self.max_per_category, max_pixels=self.max_pixels, images=images,
        )


def _visible_folders(parent: Path) -> list[Path]:
    return sorted(path for path in parent.iterdir() if path.is_dir() and not path.name.startswith("."))
