"""Look at the MLflow UI as a user does: screenshots of the runs list, one run, and the compare view.

    python experiments/mlflow_ui/screenshots.py --tracking-uri sqlite:////path/to/mlflow.db
    python experiments/mlflow_ui/screenshots.py --make-sweep      # first run a small 3-job sweep (~2 min)

Starts `mlflow server` on 127.0.0.1 (a free port) over the store, opens pages in Debian's
Chromium, headless (`apt-get install chromium`), and writes PNGs to --out (default
reports/mlflow_ui/, git-ignored): the experiment's runs, the best run's overview and its
charts, and the compare view of the sweep's runs. The server is stopped by its process id.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

from fashionbench.pipeline.summary import MODEL_TRAINING_VIEW

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1600,1000", "--virtual-time-budget=20000"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def screenshot(url: str, path: Path) -> Path:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("chromium is not installed: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={path}", url],
                       capture_output=True, timeout=180, check=False)
    print(f"{path}  <-  {url}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="sqlite:///" + str(Path("mlflow.db").resolve()))
    parser.add_argument("--experiment", default="fashionbench")
    parser.add_argument("--make-sweep", action="store_true", help="run `-m freeze=2,4,8` on a small catalogue first")
    parser.add_argument("--out", type=Path, default=Path("reports/mlflow_ui"))
    args = parser.parse_args()
    if args.make_sweep:
        subprocess.run([sys.executable, "-m", "fashionbench.run", "-m", "freeze=2,4,8", "data.scale=0.03",
                        "train.epochs=5", f"tracking.uri={args.tracking_uri}"], check=True)
    client = MlflowClient(args.tracking_uri)
    experiment = client.get_experiment_by_name(args.experiment)
    runs = client.search_runs([experiment.experiment_id], "tags.sweep_id != ''",
                              order_by=["metrics.`headline/precision_at_k` DESC"], max_results=20)
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", args.tracking_uri,
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                time.sleep(1)
        experiment_page = f"{base}/#/experiments/{experiment.experiment_id}"
        screenshot(experiment_page, args.out / "0_experiment_as_first_opened.png")  # a fresh browser: GenAI
        screenshot(experiment_page + MODEL_TRAINING_VIEW, args.out / "1_experiment.png")  # the link a run prints
        if runs:
            run_page = f"{experiment_page}/runs/{runs[0].info.run_id}"
            screenshot(run_page + MODEL_TRAINING_VIEW, args.out / "2_run_overview.png")
            screenshot(f"{run_page}/model-metrics{MODEL_TRAINING_VIEW}", args.out / "3_run_charts.png")
            ids = ",".join(f'"{run.info.run_id}"' for run in runs[:6])
            screenshot(f'{base}/#/compare-runs?runs=[{ids}]&experiments=["{experiment.experiment_id}"]',
                       args.out / "4_compare.png")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
