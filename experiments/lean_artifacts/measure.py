"""Bytes a run stores, by run and shared: ``freeze=2,4,8`` into a temporary MLflow store.

    python experiments/lean_artifacts/measure.py                      # 224 px, ~3 minutes on 2 cores
    python experiments/lean_artifacts/measure.py data.image_size=128  # any Hydra overrides

Runs ``fashionbench.pipeline.experiment.run_experiment`` once per freeze value (random weights: ImageNet's have
the same size), then counts the bytes under the experiment's artifact folder: a run's own
(its artifact folder and the folders of the models it logged) and what no pipeline run owns
(shared: the backbone store). The same script measured the version before lean artifacts
(run it with that checkout first on ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from mlflow.tracking import MlflowClient  # noqa: E402

from fashionbench.config import compose_config  # noqa: E402
from fashionbench.pipeline.experiment import run_experiment  # noqa: E402

FREEZES = (2, 4, 8)
DEFAULT_OVERRIDES = ["data.image_size=224", "data.scale=0.01", "data.min_per_split=3", "train.epochs=1",
                     "users.n_users=6", "users.items_per_user=40", "users.favourite_threshold=3", "eval.k=2",
                     "model.weights=null"]


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def main(overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        uri = "sqlite:///" + str(Path(scratch) / "mlflow.db")
        run_ids = {}
        for freeze in FREEZES:
            cfg = compose_config([*DEFAULT_OVERRIDES, *overrides, f"freeze={freeze}", f"tracking.uri={uri}",
                                  f"train.cache_dir={scratch}/cache", "data_store.enabled=false"])
            run_ids[freeze] = run_experiment(cfg).run_id
        client = MlflowClient(uri)
        experiment = client.get_experiment_by_name("fashionbench")
        total = folder_bytes(local(experiment.artifact_location))
        print(f"{'freeze':>6} {'run MB':>8} {'of which model MB':>18}")
        owned = 0
        for freeze, run_id in run_ids.items():
            run_folder = local(client.get_run(run_id).info.artifact_uri)
            models = [local(m.artifact_location) for m in client.search_logged_models(
                [experiment.experiment_id], filter_string=f"source_run_id = '{run_id}'")]
            model_bytes = sum(folder_bytes(m) for m in models) + folder_bytes(run_folder / "model")
            run_bytes = folder_bytes(run_folder) + sum(folder_bytes(m) for m in models)
            owned += run_bytes
            print(f"{freeze:>6} {run_bytes / 1e6:>8.1f} {model_bytes / 1e6:>18.1f}")
        print(f"shared (no pipeline run's): {(total - owned) / 1e6:.1f} MB; experiment total {total / 1e6:.1f} MB")


if __name__ == "__main__":
    main(sys.argv[1:])
