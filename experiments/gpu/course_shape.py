"""The course's training shape on this machine's GPU: seconds per attempt beside the course's.

    python experiments/gpu/course_shape.py                # 224 px, data.scale=1.0, freeze 2 4 8: < 8 min, one H100
    python experiments/gpu/course_shape.py --mixed-precision --jit-compile true
    python experiments/gpu/course_shape.py --smoke        # 32 px, a few items, 1 epoch: runs on a CPU

The course fine-tuned ResNet50 at 224 px on 8,812 images (its split sizes: data.scale=1.0),
4 epochs, batch 32, and reported 301 / 283 / 290 / 120 s per attempt on a Titan RTX. For each
freeze value this trains the classifier uncached (``model.fit`` runs the frozen trunk every
epoch, as the course did) and with the trunk cache (one cold cache for the whole sweep, so
later freeze values may start from earlier boundaries), then predicts the test split. Printed
per attempt: seconds of training (the course's "seconds per attempt"), fit images/s (training
images times epochs over fit seconds), predict images/s, peak GPU memory
(``tf.config.experimental.get_memory_info``; "-" on a CPU), and the course's mean attempt over
this attempt's seconds. Random initial weights (no download on a GPU box without internet):
the same work per step as ImageNet weights. Attempts stop starting once ``--budget`` seconds
have passed, and the skipped ones are listed. Times are measured, never asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

from fashionbench.data.catalogue_store import load_catalogue  # noqa: E402
from fashionbench.data.synthetic import SyntheticSource  # noqa: E402
from fashionbench.model.classifier import build_classifier, predict_in_batches  # noqa: E402
from fashionbench.model.schema import ModelConfig  # noqa: E402
from fashionbench.runtime.device import (
    DeviceConfig,  # noqa: E402
    configure_device,  # noqa: E402
)
from fashionbench.training.fit import train_classifier  # noqa: E402
from fashionbench.training.schema import TrainConfig  # noqa: E402
from fashionbench.training.trunk_cache import TrunkCache  # noqa: E402

COURSE_SECONDS = (301, 283, 290, 120)  # per attempt, Titan RTX


def peak_gpu_gb() -> float | None:
    """Peak GPU memory since the last reset, in GB; None without a GPU."""
    if not tf.config.list_logical_devices("GPU"):
        return None
    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 1e9


def reset_gpu_peak() -> None:
    if tf.config.list_logical_devices("GPU"):
        tf.config.experimental.reset_memory_stats("GPU:0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--scale", type=float, default=1.0, help="times the course's split sizes")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--freeze", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--mixed-precision", action="store_true", help="device.mixed_precision=true")
    parser.add_argument("--jit-compile", choices=["auto", "true", "false"], default="auto",
                        help="device.jit_compile (auto: Keras' choice, XLA on a GPU)")
    parser.add_argument("--budget", type=float, default=420.0, help="start no attempt after this many seconds")
    parser.add_argument("--smoke", action="store_true", help="32 px, data.scale=0.01, 1 epoch, freeze 4: a CPU check")
    args = parser.parse_args()
    if args.smoke:
        args.image_size, args.scale, args.epochs, args.freeze = 32, 0.01, 1, [4]

    started = time.perf_counter()
    jit = {"auto": None, "true": True, "false": False}[args.jit_compile]
    gpus = configure_device(DeviceConfig(mixed_precision=args.mixed_precision, jit_compile=jit))
    with tempfile.TemporaryDirectory(prefix="fashionbench-gpu-") as work:
        source = SyntheticSource(seed=0, image_size=args.image_size, scale=args.scale, min_per_split=3)
        catalogue = load_catalogue(source, os.path.join(work, "catalogues")).catalogue
        train, val, test = (catalogue.split(name) for name in ("train", "val", "test"))
        print(f"device: {', '.join(gpus) or 'CPU only'}; {len(train)}/{len(val)}/{len(test)} train/val/test images at "
              f"{args.image_size} px, {args.epochs} epochs, batch {args.batch_size}, mixed precision "
              f"{args.mixed_precision}, jit_compile {args.jit_compile}; data ready after "
              f"{time.perf_counter() - started:.0f} s", flush=True)
        cache = TrunkCache(os.path.join(work, "trunk"), max_gb=200)
        course = sum(COURSE_SECONDS) / len(COURSE_SECONDS)
        print(f"\n| freeze | trunk cache | seconds | fit images/s | predict images/s | peak GPU GB | course "
              f"{'/'.join(map(str, COURSE_SECONDS))} s: mean / this |")
        print("|---|---|---|---|---|---|---|")
        skipped = []
        for freeze in args.freeze:
            for cached in (False, True):
                if time.perf_counter() - started > args.budget:
                    skipped.append(f"freeze={freeze} {'cached' if cached else 'uncached'}")
                    continue
                reset_gpu_peak()
                classifier = build_classifier(ModelConfig(weights=None, freeze=freeze, seed=0), args.image_size)
                training = train_classifier(classifier.model, train, val,
                                            TrainConfig(epochs=args.epochs, batch_size=args.batch_size),
                                            seed=0, cache=cache if cached else None, jit_compile=jit)
                predict_start = time.perf_counter()
                predict_in_batches(classifier.model, test.images)
                predict_rate = len(test) / (time.perf_counter() - predict_start)
                fit_rate = len(train) * args.epochs / training.fit_seconds
                peak = peak_gpu_gb()
                report = training.cache
                label = f"{report.hits} hit / {report.misses} miss" if report.used else "off"
                print(f"| {freeze} | {label} | {training.seconds:.1f} | {fit_rate:.0f} | {predict_rate:.0f} | "
                      f"{'-' if peak is None else f'{peak:.1f}'} | {course / training.seconds:.1f}x |", flush=True)
        if skipped:
            print(f"\nnot started (past the {args.budget:.0f} s budget): {', '.join(skipped)}")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
