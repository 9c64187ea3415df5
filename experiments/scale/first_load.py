"""Peak memory of a source's first load (decode every image into an empty catalogue store).

    python experiments/scale/first_load.py                                     # clothing_photos at 224 px
    python experiments/scale/first_load.py data=synthetic data.scale=1.0 data.image_size=128

Runs ``load_catalogue`` into a fresh temporary store in a child process and prints the child's
peak RSS (``ru_maxrss``, read with ``os.wait4``) beside the bytes of the decoded images and the
RSS of a child that only imports the same modules: what the load itself added.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(overrides: list[str], load: bool, result: Path) -> None:
    from fashionbench.config import compose_config, experiment_config
    from fashionbench.data.catalogue_store import load_catalogue

    x = experiment_config(compose_config(overrides))
    if not load:
        return
    with tempfile.TemporaryDirectory(prefix="fashionbench-first-load-") as store:
        start = time.perf_counter()
        loaded = load_catalogue(x.data, store)
        images = loaded.catalogue.images
        result.write_text(json.dumps({"items": len(images), "image_mb": images.nbytes / 2**20,
                                      "seconds": time.perf_counter() - start, "hit": loaded.hit}))


def peak_mb(overrides: list[str], load: bool, result: Path) -> float:
    process = subprocess.Popen([sys.executable, __file__, "--child", "load" if load else "import", str(result),
                                *overrides])
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"first_load: the child failed (exit {os.waitstatus_to_exitcode(status)})")
    return usage.ru_maxrss / 1024  # Linux: kilobytes


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        child(sys.argv[4:], sys.argv[2] == "load", Path(sys.argv[3]))
        return
    overrides = sys.argv[1:] or ["data=clothing_photos", "data.image_size=224"]
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        baseline = peak_mb(overrides, False, result)
        loaded = peak_mb(overrides, True, result)
        figures = json.loads(result.read_text())
    print(f"{' '.join(overrides)}: {figures['items']} items, {figures['image_mb']:.0f} MB of decoded images, "
          f"first load {figures['seconds']:.1f} s; peak RSS {loaded:.0f} MB, {baseline:.0f} MB without loading: "
          f"the load added {loaded - baseline:.0f} MB")


if __name__ == "__main__":
    main()
