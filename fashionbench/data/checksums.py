"""The SHA-256 of every file a run logs, so that what is read back later (a recommender bundle, the
registered model) is known to be what was written.

A run logs, beside each stage's files, ``checksums/<Stage>.json``: each file's path in the run's
artifacts, its size and hash (``TrackedRun.record``). ``promote`` checks the files a bundle takes
against them (runs logged before checksums have none: their files are taken as they are), and a
bundle carries its own ``checksums.json``, checked where it is loaded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from fashionbench.artifacts import ArtifactError


def file_hash(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()  # through one small buffer


def checksums(directory: Path, exclude: tuple[str, ...] = ()) -> dict[str, dict]:
    """Every file under ``directory`` (but those under the ``exclude`` folders): its path relative
    to it (``/``-separated), size and hash."""
    files = sorted(path for path in directory.rglob("*") if path.is_file())
    return {path.relative_to(directory).as_posix(): {"bytes": path.stat().st_size, "sha256": file_hash(path)}
            for path in files if path.relative_to(directory).parts[0] not in exclude}


def check_file(path: Path, expected: Mapping, name: str) -> None:
    """ArtifactError naming ``name`` when ``path`` is missing or its size or hash is not ``expected``'s."""
    if not path.is_file():
        raise ArtifactError(f"{name} is missing (its checksum was recorded when it was written)")
    if path.stat().st_size != expected.get("bytes") or file_hash(path) != expected.get("sha256"):
        raise ArtifactError(f"{name} is damaged (its bytes differ from those recorded when it was written)")


def verify(directory: Path, recorded: Mapping[str, Mapping], what: str) -> None:
    """Check the files under ``directory`` that ``recorded`` lists (paths relative to it) against
    their size and hash; ArtifactError naming ``what`` and the first file that is missing or differs."""
    for name, expected in sorted(recorded.items()):
        check_file(directory / name, expected, f"{what}{name}")


def read_checksums(path: Path, what: str) -> dict[str, dict]:
    """A checksums file written by ``write_checksums``; ArtifactError naming it when it is not one."""
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ArtifactError(f"{what}: {path.name} is unreadable ({type(error).__name__}: {error})") from None
    if not isinstance(recorded, dict) or not all(isinstance(value, dict) for value in recorded.values()):
        raise ArtifactError(f"{what}: {path.name} is not a checksums file (path -> bytes and sha256 expected)")
    return recorded


def write_checksums(directory: Path, path: Path, exclude: tuple[str, ...] = ()) -> None:
    path.write_text(json.dumps(checksums(directory, exclude), indent=1))
