"""Peak memory of reading an H&M-sized interaction log (users=interactions), against reading it
whole with pandas, measured in the same run.

    python experiments/interaction_log/measure.py                 # 10M rows, ~1 GB of CSV: ~ 4 min on 2 cores
    python experiments/interaction_log/measure.py --rows 31800000 # the competition's size

Writes a transactions_train.csv in the H&M layout (t_dat, customer_id as 64 hex digits,
article_id as 10 digits, price, sales_channel_id) of ``--rows`` rows over 105,542 articles and
1.37M customers, as the competition's are, into a temporary folder. A shop of 4,000 of the
articles (and a catalogue of 20,000, the rest of which are other splits) stands for the women's
articles of the four categories. Each reader runs in a fresh process, and its peak resident
memory (VmHWM) and seconds are printed, beside a process that only imports the same
modules and builds the same catalogue (the floor):

- ``users=interactions``: ``InteractionUsers.simulate`` (pyarrow's streaming CSV reader,
  ``users.chunk_mb`` at a time, only the shop's rows kept);
- the reference: ``pandas.read_csv`` of the whole log with text ids (how the competition's
  notebooks read it), then the same filter.
The last line is each reader's peak above the floor and their ratio. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

ARTICLES, CUSTOMERS, SHOP, CATALOGUE = 105_542, 1_371_980, 4_000, 20_000


def write_log(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    articles = pa.array([f"0{n:09d}" for n in rng.choice(10**9, ARTICLES, replace=False)])
    customers = pa.array([f"{n:016x}" * 4 for n in rng.integers(1, 2**62, CUSTOMERS)])
    days = pa.array([str(day.astype("datetime64[D]")) for day in np.arange("2018-09-20", "2020-09-23",
                                                                          dtype="datetime64[D]")])
    with pa_csv.CSVWriter(path, pa.schema([("t_dat", pa.string()), ("customer_id", pa.string()),
                                           ("article_id", pa.string()), ("price", pa.float64()),
                                           ("sales_channel_id", pa.int8())])) as writer:
        for start in range(0, rows, 1_000_000):
            n = min(1_000_000, rows - start)
            # Popular articles are bought more: a Zipf-like draw over the articles.
            picks = np.minimum(rng.zipf(1.3, n) - 1, ARTICLES - 1)
            writer.write_table(pa.table({
                "t_dat": days.take(np.sort(rng.integers(0, len(days), n))),
                "customer_id": customers.take(rng.integers(0, CUSTOMERS, n)),
                "article_id": articles.take(picks), "price": np.round(rng.uniform(0.001, 0.5, n), 6),
                "sales_channel_id": rng.integers(1, 3, n).astype(np.int8)}))
    catalogue = rng.choice(ARTICLES, CATALOGUE, replace=False)  # articles of any popularity
    (path.parent / "articles.json").write_text(json.dumps(articles.take(catalogue).to_pylist()))


def peak_rss_mb() -> float:
    """This process's peak resident memory: /proc's VmHWM, that of its own memory since exec.
    (``ru_maxrss`` is not reset by exec on Linux: a child started from a large parent reports the
    parent's size.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read(kind: str, folder: Path) -> None:
    """One reader, in this (fresh) process; prints its peak RSS and seconds as JSON."""
    import pandas as pd

    from fashionbench.data import Catalogue
    from fashionbench.users.interactions import InteractionUsers

    articles = json.loads((folder / "articles.json").read_text())
    items = pd.DataFrame({"item_id": articles,
                          "category": ["Skirts", "Dresses", "Shorts", "Blouses"] * (len(articles) // 4),
                          "split": ["test"] * SHOP + ["train"] * (len(articles) - SHOP), "source": "generated"})
    catalogue = Catalogue(items, np.zeros((len(items), 1, 1, 3), np.uint8))
    shop = catalogue.split("test")
    log = folder / "transactions_train.csv"
    start = time.perf_counter()
    if kind == "imports":  # the same modules and catalogue, no log: the floor both readers start from
        kept = 0
    elif kind == "interactions":
        users = InteractionUsers(log=str(log), user_column="customer_id", item_column="article_id",
                                 time_column="t_dat", price_column="price", item_id_width=10, cut="2020-09-16",
                                 window_days=7).simulate(shop, catalogue)
        kept = len(users.ratings)
    else:
        table = pd.read_csv(log, dtype={"customer_id": str, "article_id": str})
        table["t_dat"] = pd.to_datetime(table["t_dat"])
        kept = int(table["article_id"].isin(set(shop.items["item_id"])).sum())
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    print(json.dumps({"kind": kind, "seconds": seconds, "peak_mb": peak_mb, "rows_kept": kept}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--read", choices=["imports", "interactions", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        read(args.read, args.folder)
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        start = time.perf_counter()
        write_log(folder / "transactions_train.csv", args.rows)
        size = (folder / "transactions_train.csv").stat().st_size
        print(f"log: {args.rows:,} rows, {size / 1e9:.2f} GB, written in {time.perf_counter() - start:.0f} s",
              flush=True)
        results = {}
        for kind in ("imports", "interactions", "pandas"):
            out = subprocess.run([sys.executable, __file__, "--read", kind, "--folder", str(folder)],
                                 capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"the {kind} reader failed:\n{out.stderr[-3000:]}")
            results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[kind]
            print(f"{kind:<13} peak RSS {r['peak_mb']:8.0f} MB   {r['seconds']:6.1f} s   {r['rows_kept']:,} rows "
                  "of the shop kept", flush=True)
        floor = results["imports"]["peak_mb"]
        above = {kind: results[kind]["peak_mb"] - floor for kind in ("interactions", "pandas")}
        print(f"above the imports' {floor:.0f} MB: users=interactions {above['interactions']:.0f} MB, "
              f"pandas.read_csv {above['pandas']:.0f} MB ({above['pandas'] / above['interactions']:.1f}x); "
              f"peak RSS ratio {results['pandas']['peak_mb'] / results['interactions']['peak_mb']:.1f}x")


if __name__ == "__main__":
    main()
