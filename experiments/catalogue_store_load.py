"""Catalogue load time without the store, on a first (cold) and a second (warm) run.

    python experiments/catalogue_store_load.py                          # synthetic, clothing_photos; ~20 s
    python experiments/catalogue_store_load.py data.image_size=128      # Hydra overrides for every source

For each data config: ``source.load()`` (what every run paid before the store), then
``load_catalogue`` twice into an empty temporary store: cold = load + store, warm = read
back. Best of 3 fresh stores each, in one process. Times are measured, never asserted.
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from omegaconf import OmegaConf  # noqa: E402

from fashionbench.config import compose_config  # noqa: E402
from fashionbench.data.catalogue_store import load_catalogue  # noqa: E402

DATA_CONFIGS = ("synthetic", "clothing_photos")
REPEATS = 3


def main() -> None:
    overrides = sys.argv[1:]
    print(f"# {platform.machine()}, {platform.python_version()}; overrides {overrides or 'none'}")
    print("| data | items | MB | plain load s | cold (load + store) s | warm (store hit) s | warm / plain |")
    print("|---|---|---|---|---|---|---|")
    for data in DATA_CONFIGS:
        try:
            source = OmegaConf.to_object(compose_config([f"data={data}", *overrides]).data)
            plain, catalogue = [], None
            for _ in range(REPEATS):
                start = time.perf_counter()
                catalogue = source.load()
                plain.append(time.perf_counter() - start)
        except Exception as error:  # e.g. the shared photos are not on this machine
            print(f"| {data} | not loaded: {type(error).__name__}: {error} |")
            continue
        cold, warm = [], []
        for _ in range(REPEATS):
            with tempfile.TemporaryDirectory() as store:
                first, second = load_catalogue(source, store), load_catalogue(source, store)
                assert not first.hit and second.hit
                cold.append(first.seconds)
                warm.append(second.seconds)
        print(f"| {data} | {len(catalogue)} | {catalogue.images.nbytes / 1e6:.1f} | {min(plain):.2f} | "
              f"{min(cold):.2f} | {min(warm):.3f} | **{min(warm) / min(plain):.3f}** |")


if __name__ == "__main__":
    main()
