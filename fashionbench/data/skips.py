"""What a data source could not use (skipped) or used only after fixing it (converted).

Every source records into one ``SkipLog`` while it reads annotation files and decodes
images; the catalogue carries the counts (logged as ``skipped_<reason>`` and
``converted_<what>`` metrics) and the list of problem items (logged as an artifact), so
nothing is dropped silently and nothing floods the log item by item.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

SKIPPED_ITEM_COLUMNS = ("item", "reason", "detail")

# Reasons for leaving an item out that the config chose (a filter, an unmapped label): they
# are counted, but not listed item by item (a DeepFashion run would list ~270,000 of them).
DELIBERATE_REASONS = frozenset({"filtered_out", "unmapped_label"})


def empty_skipped_items() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=str) for column in SKIPPED_ITEM_COLUMNS})


class SkipLog:
    """Counts of skipped items by reason, the problem items themselves, and conversion counts."""

    def __init__(self) -> None:
        self.skipped: Counter[str] = Counter()
        self.converted: Counter[str] = Counter()
        self._items: list[tuple[str, str, str]] = []

    def skip(self, item: str, reason: str, detail: str = "", count: int = 1) -> None:
        """Count ``count`` items skipped for ``reason``; list ``item`` unless the reason is deliberate."""
        self.skipped[reason] += count
        if reason not in DELIBERATE_REASONS:
            self._items.append((str(item), reason, detail))

    def convert(self, what: str, count: int = 1) -> None:
        """Count an item that was used after a conversion (a colour mode, a text encoding)."""
        self.converted[what] += count

    def skipped_items(self) -> pd.DataFrame:
        """One row per listed skipped item: ``item`` (id or path), ``reason``, ``detail``."""
        if not self._items:
            return empty_skipped_items()
        return pd.DataFrame(self._items, columns=list(SKIPPED_ITEM_COLUMNS))

    def summary(self) -> str:
        """One line for the log: skipped and converted counts."""
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items())) or "none"
        converted = ", ".join(f"{k} {v}" for k, v in sorted(self.converted.items())) or "none"
        return f"skipped: {skipped}; converted: {converted}"
