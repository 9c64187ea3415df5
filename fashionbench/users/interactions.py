"""``users=interactions``: real behaviour as users. A user-item log (purchases, clicks, ratings)
read in chunks, joined to the shop, and split by time as the H&M competition and sequential
recommenders split it.

- The log is a CSV (optionally compressed) or a Parquet file with a user, an item and a time
  column, and optionally a rating and a price column; the columns' names are options. It is read
  ``chunk_mb`` MB at a time and only the rows of the shop's items are kept, so memory is
  bounded by what the shop needs, not by the log (31.8M rows for H&M).
- Every row that is not used is counted once, by the first of these reasons that applies, logged
  as ``users/log_<reason>``: a row with the wrong number of fields (``malformed_row``), a missing
  user, item or time (``missing_value``), a time that does not parse (``bad_time``), an item the
  catalogue does not have (``item_not_in_catalogue``: another category, a filtered-out or
  image-less article), an item of the catalogue's training or validation split
  (``item_not_in_shop``: only the shop can be recommended), a rating under
  ``favourite_threshold`` (``below_threshold``) or one that is empty or not a number
  (``bad_rating``), a row after the held-out window
  (``after_window``) and a repeat of a (user, item, time) row (``duplicate``); in a log that is
  not all UTF-8, a row whose user, item or time has bytes that are not (``invalid_utf8``).
- A user's favourites in a category are their interactions there (with ``favourite_threshold``:
  those rated at least that).
- The split is by time. With ``cut`` (an ISO date or time), a pair's queries are its items
  before the cut and its held-out items those in ``[cut, cut + window_days)`` that are not
  already queries (a repurchase cannot be recommended: queries are never candidates). Without a
  cut, each pair's ``holdout_last`` most recent items are held out and the earlier ones are its
  queries. Pairs with no queries or no held-out items are counted and skipped.
- Popularity (the ladder's ``popularity``) counts interactions before the cut only
  (``known_favourites``): what a shop knew when it recommended.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from fashionbench.data import Catalogue
from fashionbench.options import Stage, option
from fashionbench.runtime.paths import absolute_path
from fashionbench.users.simulation import HeldOutFavourites, HeldOutSplits, SimulatedUsers, UsersConfigError

log = logging.getLogger(__name__)

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz", ".csv.zst")
QUERY, HELD_OUT = "query", "held_out"  # a kept row's period


@dataclass
class InteractionUsers:
    """``users=interactions``: the users of a real interaction log (see the module docstring)."""

    log: str = option(decides=Stage.USERS)  # the log: a CSV or Parquet file
    user_column: str = option("user_id", decides=Stage.USERS)
    item_column: str = option("item_id", decides=Stage.USERS)
    time_column: str = option("timestamp", decides=Stage.USERS)
    rating_column: str | None = option(None, decides=Stage.USERS)
    price_column: str | None = option(None, decides=Stage.USERS)
    # null: the time column holds dates or times as text (ISO 8601); "s", "ms", ...: numbers since 1970
    time_unit: str | None = option(None, decides=Stage.USERS)
    # Item ids zero-padded to this many digits before they are joined (H&M's article ids: 10;
    # a log read with integer ids loses the leading zero).
    item_id_width: int | None = option(None, decides=Stage.USERS)
    cut: str | None = option(None, decides=Stage.USERS)  # ISO date or time: queries before it, held out from it
    window_days: float | None = option(None, decides=Stage.USERS)  # held out: within this many days of the cut
    holdout_last: int = option(1, decides=Stage.USERS)  # without a cut: each pair's most recent items held out
    favourite_threshold: float | None = option(None, decides=Stage.USERS)  # null: every interaction
    max_users: int | None = option(None, decides=Stage.USERS)  # a seeded sample of the evaluable users
    chunk_mb: int = option(4, decides=Stage.PLACEMENT)  # the log is read this much at a time: memory, not results
    seed: int = option(0, decides=Stage.USERS, seed=True)

    def __post_init__(self) -> None:
        """UsersConfigError naming the ``users.*`` option, the file or the column that is unusable."""
        path = absolute_path(self.log)  # relative to where the command was launched
        if not path.is_file():
            raise UsersConfigError(f"users.log={self.log!r}: no such file (a CSV or Parquet interaction log)")
        if not path.name.lower().endswith(CSV_SUFFIXES + PARQUET_SUFFIXES):
            raise UsersConfigError(f"users.log={self.log!r}: expected a CSV ({', '.join(CSV_SUFFIXES)}) or "
                                   f"Parquet ({', '.join(PARQUET_SUFFIXES)}) file")
        self.log = str(path)
        header = log_columns(path)
        for name, column in self._columns().items():
            if column not in header:
                raise UsersConfigError(f"{path}: no column {column!r} (users.{name}_column); its columns are {header}")
        if self.cut is not None:
            _timestamp(self.cut, "users.cut")
        if self.window_days is not None and self.window_days <= 0:
            raise UsersConfigError(f"users.window_days must be > 0 or null, got {self.window_days}")
        if self.window_days is not None and self.cut is None:
            raise UsersConfigError("users.window_days needs users.cut (the window starts at the cut)")
        if self.holdout_last < 1:
            raise UsersConfigError(f"users.holdout_last must be >= 1, got {self.holdout_last}")
        if self.max_users is not None and self.max_users < 1:
            raise UsersConfigError(f"users.max_users must be >= 1 or null, got {self.max_users}")
        if self.item_id_width is not None and self.item_id_width < 1:
            raise UsersConfigError(f"users.item_id_width must be >= 1 or null, got {self.item_id_width}")
        if self.chunk_mb < 1:
            raise UsersConfigError(f"users.chunk_mb must be >= 1, got {self.chunk_mb}")
        if self.favourite_threshold is not None and self.rating_column is None:
            raise UsersConfigError("users.favourite_threshold needs users.rating_column (the ratings it thresholds)")

    def _columns(self) -> dict[str, str]:
        """Role -> the log's column, for the columns this config reads."""
        optional = {"rating": self.rating_column, "price": self.price_column}
        return {"user": self.user_column, "item": self.item_column, "time": self.time_column,
                **{role: column for role, column in optional.items() if column is not None}}

    def simulate(self, shop: Catalogue, catalogue: Catalogue | None = None) -> UserInteractions:
        """The log's interactions with ``shop``'s items, each row marked a query or held out;
        ``catalogue`` (the shop's whole catalogue) tells apart the rows of its other items.
        Raises UsersConfigError when the cut is outside the log or no row can be used."""
        path = Path(self.log)
        category_of = dict(zip(shop.items["item_id"], shop.items["category"]))
        # Indexes keep their hash tables: each chunk is looked up, not each id converted again.
        shop_ids = pd.Index(list(category_of), dtype=object)
        elsewhere = pd.Index(sorted(set((catalogue if catalogue is not None else shop).items["item_id"])
                                    - set(category_of)), dtype=object)
        cut = _timestamp(self.cut, "users.cut") if self.cut is not None else None
        end = cut + pd.Timedelta(days=self.window_days) if cut is not None and self.window_days else None
        try:
            rows, first, last, kept, unused = self._scan(path, shop_ids, elsewhere, end, binary=False)
        except pa.ArrowInvalid as error:
            if "UTF8" not in str(error):
                raise UsersConfigError(f"{path}: cannot be read ({error})") from None
            # Rare, so not paid for by clean logs: read again, decoding each value with replacement.
            log.warning("%s holds bytes that are not UTF-8: reading it again with them replaced (rows whose user, "
                        "item or time has them are counted as log_invalid_utf8)", path.name)
            rows, first, last, kept, unused = self._scan(path, shop_ids, elsewhere, end, binary=True)
        rows += unused["malformed_row"]
        if first is None:
            raise UsersConfigError(f"{path}: no row has a user, an item and a time that parses "
                                   f"(columns {self.user_column!r}, {self.item_column!r}, {self.time_column!r}"
                                   f"{'' if self.time_unit is None else f', time unit {self.time_unit!r}'})")
        if cut is not None and not first < cut <= last:
            raise UsersConfigError(f"users.cut={self.cut} is outside the log {path}: its interactions run from "
                                   f"{first} to {last}, so one side of the cut would be empty")
        table = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame(columns=["user", "item", "time"])
        before = len(table)
        table = table.drop_duplicates(["user", "item", "time"])
        unused["duplicate"] += before - len(table)
        if table.empty:
            raise UsersConfigError(f"{path}: none of its {rows} rows is an interaction with the shop's items "
                                   f"(not used: {dict(unused)}); check users.item_column, users.item_id_width "
                                   "and that the log and data.* describe the same shop")
        ratings = pd.DataFrame({
            "user_id": table["user"].astype(str).to_numpy(),
            "item_id": table["item"].to_numpy(),
            "category": table["item"].map(category_of).to_numpy(),
            "rating": pd.to_numeric(table["rating"], errors="coerce").to_numpy(dtype=float)
            if "rating" in table else np.ones(len(table)),
            "time": table["time"].to_numpy(),
            **({"price": pd.to_numeric(table["price"], errors="coerce").to_numpy(dtype=float)}
               if "price" in table else {}),
        }).sort_values(["user_id", "category", "time", "item_id"], kind="stable", ignore_index=True)
        ratings["period"] = self._periods(ratings, cut)
        counts = {"log_rows": float(rows), "log_rows_used": float(len(ratings)),
                  **{f"log_{reason}": float(count) for reason, count in sorted(unused.items())}}
        log.info("interaction log %s: %d rows, %d used (%d users); not used: %s", path.name, rows, len(ratings),
                 ratings["user_id"].nunique(), {reason: count for reason, count in unused.items() if count} or "none")
        threshold = self.favourite_threshold if self.favourite_threshold is not None else float("-inf")
        return UserInteractions(ratings, threshold, counts)

    def _scan(self, path: Path, shop_ids: pd.Index, elsewhere: pd.Index, end: pd.Timestamp | None, *,
              binary: bool) -> tuple[int, pd.Timestamp | None, pd.Timestamp | None, list[pd.DataFrame], Counter[str]]:
        """One pass over the log: rows read, the first and last time, the shop's rows, and the
        other rows' counts by reason. ``binary``: values are read as bytes and decoded with
        replacement (a log that is not all UTF-8)."""
        unused: Counter[str] = Counter()
        rows, first, last, kept = 0, None, None, []
        for chunk in read_log(path, self._columns(), self.chunk_mb, unused, binary=binary):
            rows += len(chunk)
            if binary:
                replaced = chunk[["user", "item", "time"]].apply(lambda values: values.str.contains("\ufffd", na=False))
                invalid = replaced.any(axis=1)
                unused["invalid_utf8"] += int(invalid.sum())
                chunk = chunk[~invalid]
            missing = chunk[["user", "item", "time"]].isna().any(axis=1) | (chunk["user"] == "") | (chunk["item"] == "")
            unused["missing_value"] += int(missing.sum())
            chunk = chunk[~missing]
            times = self._times(chunk["time"])
            unused["bad_time"] += int(times.isna().sum())
            chunk = chunk.assign(time=times)[times.notna()]
            if len(chunk):
                first = min(first, chunk["time"].min()) if first is not None else chunk["time"].min()
                last = max(last, chunk["time"].max()) if last is not None else chunk["time"].max()
            items = chunk["item"].str.zfill(self.item_id_width) if self.item_id_width else chunk["item"]
            chunk = chunk.assign(item=items)
            items = chunk["item"].to_numpy(dtype=object)
            in_shop = shop_ids.get_indexer(items) >= 0
            in_catalogue = elsewhere.get_indexer(items) >= 0
            unused["item_not_in_shop"] += int(in_catalogue.sum())
            unused["item_not_in_catalogue"] += int((~in_shop & ~in_catalogue).sum())
            chunk = chunk[in_shop]
            if self.favourite_threshold is not None:
                rating = pd.to_numeric(chunk["rating"], errors="coerce")
                unrated = rating.isna()  # empty, or not a number: not a rating under the threshold
                low = ~unrated & (rating < self.favourite_threshold)
                unused["bad_rating"] += int(unrated.sum())
                unused["below_threshold"] += int(low.sum())
                chunk = chunk[~(unrated | low)]
            if end is not None:
                late = chunk["time"] >= end
                unused["after_window"] += int(late.sum())
                chunk = chunk[~late]
            kept.append(chunk)
        return rows, first, last, kept, unused

    def _times(self, values: pd.Series) -> pd.Series:
        """The time column as UTC times without a zone; NaT where a value does not parse."""
        if self.time_unit is not None:
            numbers = pd.to_numeric(values, errors="coerce")
            return pd.to_datetime(numbers, unit=self.time_unit, errors="coerce")
        if pd.api.types.is_datetime64_any_dtype(values):
            times = values
        else:
            times = pd.to_datetime(values.astype(str), format="ISO8601", errors="coerce", utc=True)
        return times.dt.tz_convert(None) if times.dt.tz is not None else times

    def _periods(self, ratings: pd.DataFrame, cut: pd.Timestamp | None) -> np.ndarray:
        """Each row a query or held out: before or after the cut; without one, the pair's
        ``holdout_last`` most recent items (by their first interaction) are held out."""
        if cut is not None:
            return np.where(ratings["time"].to_numpy() < cut.to_datetime64(), QUERY, HELD_OUT)
        first_time = ratings.groupby(["user_id", "category", "item_id"], sort=False)["time"].transform("min")
        order = pd.DataFrame({"user_id": ratings["user_id"], "category": ratings["category"], "first": first_time,
                              "item_id": ratings["item_id"]})
        # Rank of each distinct item among its pair's, newest first (ties: the item id).
        distinct = order.drop_duplicates(["user_id", "category", "item_id"]).sort_values(
            ["user_id", "category", "first", "item_id"], ascending=[True, True, False, False], kind="stable")
        distinct["recent"] = distinct.groupby(["user_id", "category"], sort=False).cumcount()
        rank = order.merge(distinct[["user_id", "category", "item_id", "recent"]], how="left",
                           on=["user_id", "category", "item_id"])["recent"].to_numpy()
        return np.where(rank < self.holdout_last, HELD_OUT, QUERY)

    def hold_out(self, users: SimulatedUsers, fraction: float) -> HeldOutSplits:
        """Every (user, category) pair's queries and held-out items, by time (``fraction`` is not
        used: the cut decides). Pairs with no queries or no held-out items are counted and
        skipped; with ``max_users``, a seeded sample of the users that have an evaluable pair."""
        if not isinstance(users, UserInteractions):
            raise TypeError("users=interactions holds out the interactions its own simulate() read")
        ratings, keys = users.ratings, ["user_id", "category"]
        distinct = ratings.drop_duplicates([*keys, "item_id", "period"])  # in time order
        queried = distinct[distinct["period"] == QUERY]
        later = distinct[distinct["period"] == HELD_OUT].merge(queried[[*keys, "item_id"]], how="left",
                                                               on=[*keys, "item_id"], indicator=True)
        queries = queried.groupby(keys, sort=False)["item_id"].agg(list).to_dict()
        held_outs = later[later["_merge"] == "left_only"].groupby(keys, sort=False)["item_id"].agg(list).to_dict()
        splits, no_queries, no_held_out = [], 0, 0
        for pair in sorted(ratings[keys].drop_duplicates().itertuples(index=False, name=None)):
            if pair not in queries:
                no_queries += 1
            elif pair not in held_outs:  # nothing after the cut, or only items it had before
                no_held_out += 1
            else:
                splits.append(HeldOutFavourites(str(pair[0]), str(pair[1]), queries[pair], held_outs[pair]))
        not_sampled = 0
        evaluable = sorted({split.user_id for split in splits})
        if self.max_users is not None and len(evaluable) > self.max_users:
            chosen = set(np.random.default_rng(self.seed).choice(evaluable, self.max_users, replace=False))
            not_sampled = sum(split.user_id not in chosen for split in splits)
            splits = [split for split in splits if split.user_id in chosen]
        log.info("interaction pairs: %d evaluable, %d without queries, %d without held-out items, %d not sampled",
                 len(splits), no_queries, no_held_out, not_sampled)
        return HeldOutSplits(splits, no_queries + no_held_out + not_sampled,
                             {"without_queries": no_queries, "without_held_out": no_held_out,
                              "not_sampled": not_sampled})


@dataclass(frozen=True)
class UserInteractions(SimulatedUsers):
    """The log's users: one row per used interaction (user_id, item_id, category, rating, time,
    [price], period: query or held_out); every row is a favourite unless a threshold was set."""

    stage = "users"

    def summary(self) -> str:
        held_out = int((self.ratings["period"] == HELD_OUT).sum())
        return (f"{self.n_users} users, {len(self.ratings)} interactions with the shop "
                f"({held_out} held out by time), {int(self.simulation['log_rows'])} log rows read")

    @property
    def known_favourites(self) -> pd.DataFrame:
        """The interactions before the cut: what popularity may count."""
        return self.favourites[self.favourites["period"] == QUERY]


def log_columns(path: Path) -> list[str]:
    """The column names of a CSV or Parquet log (its header or schema; nothing else is read)."""
    try:
        if path.name.lower().endswith(PARQUET_SUFFIXES):
            return list(pq.ParquetFile(path).schema_arrow.names)
        with pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=1 << 20),
                             parse_options=pa_csv.ParseOptions(invalid_row_handler=lambda row: "skip",
                                                               newlines_in_values=True)) as reader:
            return [str(name).strip() for name in reader.schema.names]
    except (OSError, ValueError, pa.ArrowException) as error:
        raise UsersConfigError(f"{path}: cannot read its header ({type(error).__name__}: {error})") from None


# pyarrow's streaming CSV reader keeps a few dozen blocks in flight (read ahead and being parsed):
# small blocks bound that, and they are joined into chunks of ``users.chunk_mb`` for pandas.
READ_BLOCK_BYTES = 1 << 20


def read_log(path: Path, columns: dict[str, str], chunk_mb: int, malformed: Counter[str], binary: bool = False
             ) -> Iterator[pd.DataFrame]:
    """The log about ``chunk_mb`` MB at a time (pyarrow's streaming readers), its ``columns``
    (role -> column) renamed to their roles, every value as text, so that "0108775015" keeps its
    leading zero. A CSV row with the wrong number of fields is skipped and counted in
    ``malformed["malformed_row"]``. ``binary``: CSV values are read as bytes and decoded with
    replacement characters, for a log that is not all UTF-8 (pyarrow refuses such a column as text)."""
    names = list(dict.fromkeys(columns.values()))
    roles = {column: role for role, column in columns.items()}
    if path.name.lower().endswith(PARQUET_SUFFIXES):
        rows = max(1, chunk_mb * 2**20 // 64)
        for batch in pq.ParquetFile(path).iter_batches(batch_size=rows, columns=names):
            yield _as_text(batch.to_pandas().rename(columns=roles), binary=False)
        return

    def skip(row) -> str:
        malformed["malformed_row"] += 1
        return "skip"

    pending, pending_bytes = [], 0
    with pa_csv.open_csv(path, read_options=pa_csv.ReadOptions(block_size=READ_BLOCK_BYTES),
                         parse_options=pa_csv.ParseOptions(invalid_row_handler=skip, newlines_in_values=True),
                         convert_options=pa_csv.ConvertOptions(include_columns=names,
                                                               column_types={name: pa.binary() if binary
                                                                             else pa.string() for name in names},
                                                               strings_can_be_null=True)) as reader:
        for batch in reader:
            pending.append(batch)
            pending_bytes += batch.nbytes
            if pending_bytes >= chunk_mb * 2**20:
                yield _as_text(pa.Table.from_batches(pending).to_pandas().rename(columns=roles), binary)
                pending, pending_bytes = [], 0
    if pending:
        yield _as_text(pa.Table.from_batches(pending).to_pandas().rename(columns=roles), binary)


def _as_text(chunk: pd.DataFrame, binary: bool) -> pd.DataFrame:
    """Every column but a time column Parquet typed as such, as stripped text; ``binary``: the
    values were read as bytes (a log that is not all UTF-8) and are decoded with replacement."""
    for role in chunk.columns:
        if role != "time" or not pd.api.types.is_datetime64_any_dtype(chunk[role]):
            values = chunk[role]
            if binary:
                values = values.str.decode("utf-8", errors="replace")
            chunk[role] = values.where(values.isna(), values.astype(str).str.strip())
    return chunk


def _timestamp(text: str, option: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(str(text))
    except ValueError:
        raise UsersConfigError(f"{option}={text!r} is not an ISO date or time (e.g. 2020-09-16)") from None
    return stamp.tz_convert(None) if stamp.tzinfo is not None else stamp
