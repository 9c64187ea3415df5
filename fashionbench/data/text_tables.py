"""Reading annotation text and CSV files as they come: odd bytes, bad rows, duplicates.

Files are decoded as UTF-8 (a byte-order mark is dropped); a line that is not valid UTF-8 is
decoded as Latin-1 instead (every byte is a Latin-1 character, so nothing is lost) and
counted as ``converted_text_latin1``. CSV rows with the wrong number of fields and exact
duplicate rows are skipped and listed; a missing required column is an error naming the
file and the column.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

from fashionbench.data.catalogue import CatalogueError
from fashionbench.data.skips import SkipLog


def read_text(path: Path, log: SkipLog) -> str:
    """The text of ``path``, UTF-8 with a per-line Latin-1 fallback (counted in ``log``)."""
    if not path.is_file():
        raise CatalogueError(f"{path}: file not found")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    # UTF-8 never uses the byte 0x0A inside a multi-byte character, so splitting on it is safe.
    lines = []
    for number, line in enumerate(raw.split(b"\n")):
        try:
            lines.append(line.decode("utf-8-sig" if number == 0 else "utf-8"))
        except UnicodeDecodeError:
            lines.append(line.decode("latin-1"))
            log.convert("text_latin1")
    return "\n".join(lines)


def read_csv_records(
    path: Path,
    required_columns: Iterable[str],
    log: SkipLog,
    overflow_column: str | None = None,
) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line, as dicts of stripped strings.

    A row with more fields than the header is joined back into ``overflow_column`` when that
    is the last column (free text with an unquoted comma, as in Kaggle's Fashion Product
    Images ``styles.csv``); any other row with the wrong field count is skipped as
    ``malformed_row``, an exact repeat of an earlier row as ``duplicate_row``.
    Raises CatalogueError if the file is missing, empty, or lacks a required column.
    """
    reader = csv.reader(io.StringIO(read_text(path, log), newline=""))
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise CatalogueError(f"{path}: the file is empty; expected a CSV header line") from None
    missing = [column for column in dict.fromkeys(required_columns) if column not in header]
    if missing:
        raise CatalogueError(f"{path}: missing required column(s) {missing}; the header has {header}")
    overflow_at = header.index(overflow_column) if overflow_column in header else None
    joins_overflow = overflow_at == len(header) - 1

    records, seen = [], set()
    for row in reader:
        where = f"{path.name}:{reader.line_num}"
        if not row or all(not field.strip() for field in row):
            continue  # a blank line is not a record
        if len(row) > len(header) and joins_overflow:
            row = [*row[: len(header) - 1], ",".join(row[len(header) - 1:])]
            log.convert("csv_row_rejoined")
        if len(row) != len(header):
            log.skip(where, "malformed_row", f"{len(row)} fields, the header has {len(header)}")
            continue
        key = tuple(row)
        if key in seen:
            log.skip(where, "duplicate_row", "an exact repeat of an earlier row")
            continue
        seen.add(key)
        record = {name: field.strip() for name, field in zip(header, row)}
        record["_where"] = where
        records.append(record)
    return records
