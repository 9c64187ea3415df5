"""A Hydra callback that splits each job's wall time into model work and harness, in the process
that runs the job (the sweep's own with the basic launcher, a worker with joblib), and writes it to
``model_work.json`` in the job's output folder. Used by ``measure.py``:

    PYTHONPATH=experiments:experiments/sweep_throughput python -m fashionbench.run -m seed=0,1 \\
        +hydra.callbacks.job_timer._target_=job_timer.JobTimer
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


class JobTimer(Callback):
    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        import model_work  # in the job's process: it wraps Keras and Annoy there

        model_work.install()
        model_work.reset()
        self._start = time.perf_counter()

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        import model_work

        wall = time.perf_counter() - self._start
        folder = Path(job_return.hydra_cfg.hydra.runtime.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model_work.json").write_text(json.dumps({
            "job": job_return.hydra_cfg.hydra.job.override_dirname, "status": job_return.status.name,
            "wall": wall, "model": model_work.model_seconds(), **model_work.inside}))
