"""Peak memory and seconds per stage of the embedded default at 1x, 2x, 4x and 8x catalogue size.

    python experiments/scale/benchmark.py                       # data.scale=0.125,0.25,0.5,1.0: ~15 min on 2 cores
    python experiments/scale/benchmark.py --scales 0.02 0.04 --image-size 64   # a quick look

Every size runs the run's stages (fashionbench.run without MLflow: load the catalogue, build
the classifier, classify and embed the shop untrained, train with the trunk cache, classify and
embed the shop trained (both passes on the trunk cache's activations of the shop, as a run does),
index, simulate users, score the recommendations) at 128 px, freeze=4, 1 epoch, random weights, in
its own subprocess, so each size's peak RSS is its own: ``ru_maxrss`` of that child, read by
the parent with ``os.wait4``. Before it, another subprocess writes the catalogue into a fresh
catalogue store, so the measured child reads it from the store as a second run would (the
trunk cache starts empty: its activations are computed, as in a first run).

Printed: per size, the items, peak RSS and seconds of each stage; then the RSS growth per
1,000 items (least-squares slope over the sizes) and each size's seconds per item as a ratio
of the smallest size's. Test accuracy and precision@5 are printed too: the same seeds must
give the same figures on any version of the code. Times are measured, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("data", "model", "untrained", "train", "classify+embed", "index", "users", "recommend")


def overrides(args: argparse.Namespace, scale: float, work: Path) -> list[str]:
    return [f"data.scale={scale}", f"data.image_size={args.image_size}", f"freeze={args.freeze}",
            f"train.epochs={args.epochs}", "model.weights=null", f"data_store.dir={work / 'catalogues'}",
            f"train.cache_dir={work / 'trunk'}"]


def prepare(config_overrides: list[str]) -> None:
    """Write the catalogue into the store (the measured child then reads it from there)."""
    from fashionbench.config import compose_config, experiment_config
    from fashionbench.data.catalogue_store import load_catalogue

    x = experiment_config(compose_config(config_overrides))
    load_catalogue(x.data, x.data_store.directory, x.data_store.enabled)


def measure(config_overrides: list[str]) -> dict:
    """The run's stages, timed one by one (as fashionbench.pipeline.experiment.run_experiment calls them)."""
    from fashionbench.config import compose_config, experiment_config
    from fashionbench.data.catalogue_store import load_catalogue
    from fashionbench.evaluation.classification import score_classification
    from fashionbench.evaluation.pairs import evaluate_shop
    from fashionbench.evaluation.references import MODEL, UNTRAINED
    from fashionbench.evaluation.summaries import metric_name
    from fashionbench.index.shop import build_shop_index
    from fashionbench.model.classifier import build_classifier
    from fashionbench.training.fit import train_classifier
    from fashionbench.training.shop_pass import shop_outputs
    from fashionbench.training.trunk_cache import TrunkCache
    from fashionbench.users.simulation import hold_out_favourites

    x = experiment_config(compose_config(config_overrides))
    seconds: dict[str, float] = {}
    peak_mb: dict[str, float] = {"start": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

    def timed(stage, work):
        start = time.perf_counter()
        result = work()
        seconds[stage] = time.perf_counter() - start
        peak_mb[stage] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
        return result

    data = timed("data", lambda: load_catalogue(x.data, x.data_store.directory, x.data_store.enabled))
    catalogue = data.catalogue
    shop = catalogue.split("test")
    classifier = timed("model", lambda: build_classifier(x.model, x.data.image_size))
    cache = TrunkCache.from_config(x.train, x.eval.batch_size)
    digests: dict[int, str] = {}  # the trunk's weight hashes, shared as the run shares them
    untrained = timed("untrained", lambda: shop_outputs(classifier, shop, x.eval.batch_size, cache, digests)[1]
                      if UNTRAINED in x.eval.references else None)
    timed("train", lambda: train_classifier(classifier.model, catalogue.split("train"), catalogue.split("val"),
                                            x.train, seed=x.model.seed, cache=cache, trunk_digests=digests))
    probabilities, embeddings = timed("classify+embed", lambda: shop_outputs(classifier, shop, x.eval.batch_size,
                                                                              cache, digests))
    classification = score_classification(shop, probabilities)
    shop_index = timed("index", lambda: build_shop_index(shop, embeddings, x.index))
    users = timed("users", lambda: x.users.simulate(shop))
    splits = hold_out_favourites(users, x.eval.holdout_fraction, seed=x.users.seed)
    recommendations = timed("recommend", lambda: evaluate_shop(shop_index, users, splits, untrained, x.index,
                                                               x.eval))
    return {"items": len(catalogue), "hit": data.hit, "seconds": seconds, "peak_mb": peak_mb,
            "test_accuracy": classification.accuracy,
            "precision": recommendations.metrics()[metric_name("precision", x.eval.k, MODEL)]}


def run_child(args: argparse.Namespace, role: str, scale: float, work: Path) -> tuple[dict | None, float]:
    """Run this script as a child in ``role``; (its JSON result, its peak RSS in MB)."""
    command = [sys.executable, __file__, "--child", role, "--child-scale", str(scale), "--work", str(work),
               "--image-size", str(args.image_size), "--freeze", str(args.freeze), "--epochs", str(args.epochs)]
    result_file = work / f"{role}.json"
    process = subprocess.Popen(command + ["--result", str(result_file)])
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"benchmark: the {role} child at data.scale={scale} failed (exit {os.waitstatus_to_exitcode(status)})")
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    return result, usage.ru_maxrss / 1024  # Linux: kilobytes


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    return (sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
            / sum((x - mean_x) ** 2 for x in xs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1.0],
                        help="data.scale of each size (times the course's split sizes)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--freeze", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--child", choices=["prepare", "measure"], help=argparse.SUPPRESS)
    parser.add_argument("--child-scale", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        config_overrides = overrides(args, args.child_scale, args.work)
        if args.child == "prepare":
            prepare(config_overrides)
        else:
            args.result.write_text(json.dumps(measure(config_overrides)))
        return

    print(f"{args.image_size} px, freeze={args.freeze}, {args.epochs} epoch(s), {os.cpu_count()} CPU cores; "
          f"load at start: {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    for scale in args.scales:
        with tempfile.TemporaryDirectory(prefix="fashionbench-scale-") as folder:
            work = Path(folder)
            run_child(args, "prepare", scale, work)
            result, peak_mb = run_child(args, "measure", scale, work)
        rows.append((scale, result, peak_mb))
        print(f"data.scale={scale}: {result['items']} items, peak RSS {peak_mb:.0f} MB, "
              f"{sum(result['seconds'].values()):.1f} s, test accuracy {result['test_accuracy']:.4f}, "
              f"precision@5 {result['precision']:.4f}", flush=True)

    print("\n| data.scale | items | peak RSS MB | " + " | ".join(f"{s} s" for s in STAGES) + " | total s |")
    print("|---" * (len(STAGES) + 4) + "|")
    for scale, result, peak_mb in rows:
        seconds = result["seconds"]
        print(f"| {scale} | {result['items']} | {peak_mb:.0f} | "
              + " | ".join(f"{seconds[s]:.1f}" for s in STAGES) + f" | {sum(seconds.values()):.1f} |")
    print("\nPeak RSS (MB) after each stage (ru_maxrss: which stage set the peak):\n")
    print("| data.scale | start | " + " | ".join(STAGES) + " |")
    print("|---" * (len(STAGES) + 2) + "|")
    for scale, result, _ in rows:
        print(f"| {scale} | {result['peak_mb']['start']:.0f} | "
              + " | ".join(f"{result['peak_mb'][s]:.0f}" for s in STAGES) + " |")
    items = [result["items"] for _, result, _ in rows]
    peaks = [peak for _, _, peak in rows]
    print(f"\nRSS growth: {slope(items, peaks) * 1000:.1f} MB per 1,000 items (least-squares slope over "
          f"{len(rows)} sizes)")
    per_item = [sum(result["seconds"].values()) / result["items"] for _, result, _ in rows]
    print("seconds per item, ratio to the smallest size: "
          + ", ".join(f"{result['items']} items {t / per_item[0]:.2f}" for (_, result, _), t in zip(rows, per_item)))
    print(f"load at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
