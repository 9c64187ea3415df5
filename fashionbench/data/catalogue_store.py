"""An on-disk store of loaded catalogues: decode (or draw) a data source's images once.

A source's ``load()`` decodes and resizes every photo (or draws every synthetic garment) on
each run. ``load_catalogue`` keeps the resulting ``Catalogue`` under a key that changes
whenever ``load()`` could return something else:

- the source's class and every dataclass field (root, image size, category mapping, seed...);
- for a source with a ``root`` folder, the resolved root and (relative path, size, mtime_ns)
  of every file under it (symlinked folders followed), and the size and mtime of any other
  absolute file path a field names (e.g. a ``csv_file`` outside the root) -- so a replaced,
  touched, added or removed image or annotation file is a miss;
- the source code of ``fashionbench.data`` (a change in decoding is a miss) and the store
  format, NumPy and pandas versions.

An entry is a folder ``<store>/<key>/`` holding ``images.npy`` (uint8, one row per item, written
as the source decodes them and read a batch at a time through ``StoredRows``: a run holds no
catalogue in memory, not even the first), ``tables.pkl`` (items and
skipped_items as pickled data frames, which keep dtypes exactly) and ``manifest.json``
(counts and the catalogue's fingerprint). Entries are written to a temporary folder and
renamed into place, so readers see a whole entry or none; an entry that cannot be read or
whose data no longer matches its fingerprint is logged, ignored and rewritten.

The store is local and written by this package: like the trunk cache, it is trusted (the
tables are pickles). Delete the folder to empty it; nothing evicts entries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from fashionbench.artifacts import DATA_SECTION, SKIPPED_ITEMS, SPLIT_TABLE, TAG_DATA_FINGERPRINT
from fashionbench.data.artifact_files import save_split_table
from fashionbench.data.catalogue import Catalogue
from fashionbench.data.rows import RowsInMemory, RowsWriter, StoredRows
from fashionbench.options import Stage, option
from fashionbench.runtime.paths import absolute_path
from fashionbench.stage import Dataset, StageResult

log = logging.getLogger("fashionbench.data")

# Bump when the entry layout changes: old entries are then simply never looked up again.
STORE_FORMAT = 1
_DATA_PACKAGE = Path(__file__).resolve().parent


@dataclass
class DataStoreConfig:
    """The catalogue store (fashionbench.data.catalogue_store): decode or draw a data source once.

    Top level, not in data/: it applies to every source, and a source's options are its own."""

    enabled: bool = option(True, decides=Stage.PLACEMENT)
    # null: $FASHIONBENCH_DATA_STORE, else .cache/catalogues (as train.cache_dir)
    dir: str | None = option(None, decides=Stage.PLACEMENT)

    @property
    def directory(self) -> Path:
        return absolute_path(self.dir or os.environ.get("FASHIONBENCH_DATA_STORE") or ".cache/catalogues")



class CatalogueSource(Protocol):
    image_size: int

    def load(self, images: RowsInMemory | RowsWriter | None = None) -> Catalogue: ...


@dataclass(frozen=True)
class CatalogueLoad(StageResult):
    """A loaded catalogue, whether it came from the store, and the seconds loading took."""

    catalogue: Catalogue
    hit: bool
    seconds: float
    key: str | None  # None when the store is off
    name: str = "catalogue"  # the data source's name (data.name)
    location: str = ""  # where its files are (data.root), or the generator's name

    stage = "data"

    def summary(self) -> str:
        table = self.catalogue.split_table()
        skipped = sum(self.catalogue.skipped.values())
        return (f"{len(self.catalogue)} items (train/val/test {'/'.join(str(int(table[s].sum())) for s in table)}), "
                + ("read from the catalogue store" if self.hit else "loaded" + (" and stored" if self.key else ""))
                + (f"; {skipped} skipped (data/skipped_items.csv)" if skipped else ""))

    def metrics(self) -> dict[str, float]:
        """How loading went, items per split, and items skipped or converted, by reason."""
        catalogue = self.catalogue
        split_table = catalogue.split_table()
        return {DATA_SECTION + "catalogue_store_hit": float(self.hit), DATA_SECTION + "load_seconds": self.seconds,
                **{f"{DATA_SECTION}items_{split}": float(split_table[split].sum()) for split in split_table.columns},
                **{f"{DATA_SECTION}skipped_{reason}": float(count) for reason, count in catalogue.skipped.items()},
                **{f"{DATA_SECTION}converted_{what}": float(count) for what, count in catalogue.converted.items()}}

    def tags(self) -> dict[str, str]:
        return {TAG_DATA_FINGERPRINT: self.catalogue.fingerprint()}

    def datasets(self) -> list[Dataset]:
        """The items of each split (id, category, source, attributes), digested with the
        catalogue's fingerprint: the shop is the test split."""
        fingerprint = self.catalogue.fingerprint()
        items = self.catalogue.items
        return [Dataset(items[items["split"] == split].reset_index(drop=True), f"{self.name}-{split}",
                        f"{fingerprint[:8]}-{split}", self.location or self.name, context)
                for split, context in (("train", "training"), ("val", "validation"), ("test", "testing"))]

    def write_artifacts(self, directory: Path) -> None:
        save_split_table(self.catalogue.split_table(), directory / SPLIT_TABLE)
        self.catalogue.skipped_items.to_csv(directory / SKIPPED_ITEMS, index=False)


def load_catalogue(source: CatalogueSource, store_dir: str | Path, enabled: bool = True) -> CatalogueLoad:
    """``source.load()``'s catalogue, from ``store_dir`` when an entry for this source and its
    input files exists there, otherwise loaded and stored. Either way its images are rows on
    disk, read a batch at a time: a source's images go into the entry's file as they are decoded.
    With ``enabled=False`` nothing is read from or written to the store: the images go into a
    nameless temporary file (in the system's temporary folder) that is gone when the run ends.
    Raises what ``source.load()`` raises; a store that cannot be written is logged and the
    catalogue loaded without it."""
    start = time.perf_counter()
    if not enabled:
        catalogue = _load_unstored(source)
        _log_split_table(source, catalogue)
        return CatalogueLoad(catalogue, False, time.perf_counter() - start, None, *_described(source))
    key = catalogue_key(source)
    entry = Path(store_dir) / key
    if entry.exists():
        try:
            catalogue = read_entry(entry)
        except Exception as error:  # any damage to an entry means "not stored"; it is rewritten
            log.warning("catalogue store: ignoring unreadable entry %s (%s: %s); loading the source again",
                        entry, type(error).__name__, error)
        else:
            seconds = time.perf_counter() - start
            log.info("catalogue store: %s read from %s in %.2f s", type(source).__name__, entry, seconds)
            _log_split_table(source, catalogue)
            return CatalogueLoad(catalogue, True, seconds, key, *_described(source))
    try:
        catalogue = store_source(source, entry)
    except OSError as error:
        log.warning("catalogue store: could not write %s (%s); continuing without storing", entry, error)
        catalogue, key = _load_unstored(source), None
    seconds = time.perf_counter() - start
    log.info("catalogue store: %s loaded in %.2f s%s", type(source).__name__, seconds,
             f" and stored in {entry}" if key else "")
    _log_split_table(source, catalogue)
    return CatalogueLoad(catalogue, False, seconds, key, *_described(source))


def _row_shape(source: CatalogueSource) -> tuple[int, int, int]:
    return (int(source.image_size), int(source.image_size), 3)


def _load_unstored(source: CatalogueSource) -> Catalogue:
    """The source loaded into a nameless temporary file (in memory if none can be made)."""
    try:
        images = RowsWriter.anonymous(None, _row_shape(source))
    except OSError as error:
        log.warning("catalogue store: no temporary file for the images (%s); holding them in memory", error)
        return source.load(RowsInMemory(_row_shape(source)))
    try:
        return source.load(images)
    finally:
        images.close()


def _described(source: CatalogueSource) -> tuple[str, str]:
    """(name, location) of a source: data.name, and data.root or the generator's class."""
    name = str(getattr(source, "name", type(source).__name__))
    root = getattr(source, "root", None)
    return name, str(Path(root).resolve()) if root else f"{type(source).__module__}.{type(source).__qualname__}"


def _log_split_table(source: CatalogueSource, catalogue: Catalogue) -> None:
    log.info("catalogue %s: %d items\n%s", getattr(source, "name", type(source).__name__), len(catalogue),
             catalogue.split_table())


def catalogue_key(source: CatalogueSource) -> str:
    """A hex key that changes whenever ``source.load()`` could return a different catalogue
    (see the module docstring). Raises TypeError for a source that is not a dataclass: its
    options could not be listed, so it could not be keyed soundly."""
    if not dataclasses.is_dataclass(source):
        raise TypeError(f"{type(source).__name__} is not a dataclass; the catalogue store keys sources by their fields")
    options = {f.name: _plain(getattr(source, f.name)) for f in dataclasses.fields(source)}
    digest = hashlib.sha256()
    header = {"format": STORE_FORMAT, "numpy": np.__version__, "pandas": pd.__version__,
              "source": f"{type(source).__module__}.{type(source).__qualname__}", "options": options}
    digest.update(json.dumps(header, sort_keys=True, default=repr).encode())
    for path in sorted(_DATA_PACKAGE.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    root = options.get("root")
    if isinstance(root, str) and os.path.isdir(root):
        digest.update(b"root\0" + os.path.realpath(root).encode())
        for line in _file_listing(Path(root)):
            digest.update(line)
    for name, value in sorted(options.items()):
        if name != "root" and isinstance(value, str) and os.path.isabs(value) and os.path.isfile(value):
            stat = os.stat(value)
            digest.update(f"{name}\0{os.path.realpath(value)}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:24]


def _file_listing(root: Path):
    """``relative path, size, mtime_ns`` of every file under ``root``, in a stable order;
    symlinked folders are followed (a data set may link its images elsewhere), each real
    folder once."""
    seen: set[str] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders.sort()
        relative = os.path.relpath(folder, root)
        for name in sorted(files):
            try:
                stat = os.stat(os.path.join(folder, name))
            except OSError:  # a dangling link: the source will count it as missing
                yield f"{relative}/{name}\0missing\n".encode()
                continue
            yield f"{relative}/{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode()


def _plain(value: Any) -> Any:
    """A JSON-able copy of a config value (Hydra passes DictConfig/ListConfig for mappings and lists)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def store_source(source: CatalogueSource, entry: Path) -> Catalogue:
    """Load ``source`` into a new entry ``entry`` and return the stored catalogue. The images are
    written to the entry's file as they are decoded, in a staging folder renamed into place at
    the end: a whole entry appears or none. An existing entry (a damaged one being replaced) is
    removed first; if another process stores the same key meanwhile, its entry is kept. Raises
    OSError if the store cannot be written, and what ``source.load()`` raises."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    images = None
    try:
        images = RowsWriter(staging / "images.npy", _row_shape(source))
        catalogue = source.load(images)
        pd.to_pickle({"items": catalogue.items, "skipped_items": catalogue.skipped_items}, staging / "tables.pkl")
        manifest = {"format": STORE_FORMAT, "fingerprint": catalogue.fingerprint(),
                    "skipped": dict(catalogue.skipped), "converted": dict(catalogue.converted)}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
        del catalogue  # its rows are read from the entry from now on
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.rename(staging, entry)
        except OSError:
            if not (entry / "manifest.json").exists():
                raise
            # Another process stored this key first: same key, same catalogue; keep theirs.
    finally:
        if images is not None:
            images.close()
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return read_entry(entry)


def read_entry(entry: Path) -> Catalogue:
    """The catalogue stored as ``entry``, its images read from disk when a stage needs them.
    Raises (OSError, ValueError, pickle and Catalogue errors...) if any file is missing or
    damaged, or the data no longer has the fingerprint recorded when it was stored."""
    manifest = json.loads((entry / "manifest.json").read_text())
    if manifest.get("format") != STORE_FORMAT:
        raise ValueError(f"store format {manifest.get('format')!r}, expected {STORE_FORMAT}")
    images = StoredRows(entry / "images.npy")
    tables = pd.read_pickle(entry / "tables.pkl")
    catalogue = Catalogue(tables["items"], images, dict(manifest["skipped"]), tables["skipped_items"],
                          dict(manifest["converted"]))
    if catalogue.fingerprint() != manifest["fingerprint"]:
        raise ValueError(f"data fingerprint {catalogue.fingerprint()} differs from the stored "
                         f"{manifest['fingerprint']}")
    return catalogue
