"""A run's indexes on disk: every category's index, whatever its backend, written and read back.

Each backend writes ``<category>.json`` (its kind, item ids and options) beside its own files; the
reader picks the backend by that kind (``index.registry``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from fashionbench.artifacts import ArtifactError
from fashionbench.index.base import CategoryIndex, IndexConfigError
from fashionbench.index.registry import DEFAULT_KIND, backend


def save_indexes(indexes: Mapping[str, CategoryIndex], directory: Path) -> None:
    for index in indexes.values():
        index.save(directory)


def load_index(directory: Path, category: str) -> CategoryIndex:
    """The index of ``category`` saved in ``directory`` by any backend, chosen by the kind its
    ``<category>.json`` names."""
    try:
        meta = json.loads((Path(directory) / f"{category}.json").read_text())
        return backend(meta.get("kind", DEFAULT_KIND)).index.load(Path(directory), meta)
    except IndexConfigError:  # a backend this environment lacks: the error names its package
        raise
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as error:  # missing, truncated
        raise ArtifactError(f"{directory}: the index of {category} ({category}.*) cannot be loaded "
                            f"({type(error).__name__}: {error})") from None


def load_indexes(directory: Path) -> dict[str, CategoryIndex]:
    """Every category's index saved in ``directory``, whatever its backend."""
    return {path.stem: load_index(directory, path.stem) for path in sorted(Path(directory).glob("*.json"))}
