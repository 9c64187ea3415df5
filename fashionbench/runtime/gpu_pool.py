"""A pool of GPUs for the parallel jobs of a sweep on one machine: each job sees one GPU.

Joblib's workers (``hydra/launcher=parallel``) all see every GPU, and TensorFlow takes memory on
every GPU it sees. With a pool (``hydra.callbacks.gpu_pool.gpus=[0,1,2,3]``), each worker process
takes the first free GPU of the pool and sets ``CUDA_VISIBLE_DEVICES`` to it. A GPU is held with an
exclusive ``flock`` on its lock file in a directory that every sweep of the machine shares, for as
long as the process lives: the OS releases it when the process ends, even killed with SIGKILL.

When: CUDA reads ``CUDA_VISIBLE_DEVICES`` once, when TensorFlow first looks for devices, and a
joblib (loky) worker imports the task, and with it TensorFlow, before its first job starts; it
then runs later jobs in the same process. So the GPU is claimed when the worker imports
``fashionbench`` (``claim_from_environment``, called by ``fashionbench/__init__.py``), from the pool
that ``GpuPoolCallback`` puts in the environment when the sweep starts: workers start after that
and inherit it, the sweep's own process imported fashionbench before and claims nothing. A process
per job (``hydra/launcher=local``) claims at its start and frees the GPU when it ends; when every
GPU is held it waits for one.

Without a pool (the default) nothing is claimed and nothing is set. On SLURM the scheduler gives
each job its GPUs (``gpus_per_node``); Ray's launcher does with ``remote.num_gpus=1``.

Every ``import fashionbench`` runs the claim, so this module stays light: the standard library
and Hydra's callback class, no numpy or pandas.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from fashionbench.runtime.locks import FileLock

POOL_ENV = "FASHIONBENCH_GPU_POOL"  # the pool's GPUs, comma-separated, for the sweep's workers
LOCK_DIR_ENV = "FASHIONBENCH_GPU_POOL_DIR"  # where their lock files are
DEFAULT_LOCK_DIR = Path(tempfile.gettempdir()) / "fashionbench-gpu-pool"  # one per machine: sweeps share it

log = logging.getLogger(__name__)

# The GPU this process holds and the lock that holds it (releasing it would free the GPU).
_held: tuple[str, FileLock] | None = None


class GpuPoolError(ValueError):
    """An unusable ``hydra.callbacks.gpu_pool`` option; the message names it."""


def lock_names(gpus: Sequence[str]) -> list[str]:
    """One lock file name per entry of the pool: ``gpu-0.lock``; a GPU listed twice (two jobs on
    it) gets ``gpu-0.lock`` and ``gpu-0.2.lock``. Named by GPU, not by position, so that two sweeps
    listing the same GPUs in another order still share them."""
    seen: dict[str, int] = {}
    names = []
    for gpu in gpus:
        seen[gpu] = seen.get(gpu, 0) + 1
        names.append(f"gpu-{gpu}.lock" if seen[gpu] == 1 else f"gpu-{gpu}.{seen[gpu]}.lock")
    return names


def claim_gpu(gpus: Sequence[str], lock_dir: Path, poll_seconds: float = 0.5) -> str:
    """Hold the first free GPU of the pool until this process ends and return it; while every
    GPU of the pool is held by another process, wait for one to be freed."""
    global _held
    if _held is not None:
        return _held[0]
    lock_dir.mkdir(parents=True, exist_ok=True)
    waiting = False
    while True:
        for gpu, name in zip(gpus, lock_names(gpus)):
            lock = FileLock(lock_dir / name)
            if not lock.acquire(exclusive=True, wait=False):
                continue
            lock.write_note(f"{os.getpid()}\n")  # for a person looking at the pool
            _held = (gpu, lock)
            return gpu
        if not waiting:
            log.info("every GPU of the pool %s is held (lock files in %s): waiting for one", list(gpus), lock_dir)
            waiting = True
        time.sleep(poll_seconds)


def claim_from_environment() -> None:
    """In a sweep's worker: claim a GPU of the pool that ``GpuPoolCallback`` put in the
    environment and make it the only one CUDA shows this process. Does nothing without a pool."""
    pool = os.environ.get(POOL_ENV)
    if not pool:
        return
    gpu = claim_gpu(pool.split(","), Path(os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR))
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def claimed_gpu() -> str | None:
    """The GPU of the pool this process holds, if any."""
    return _held[0] if _held else None


def check_pool(gpus: Sequence[Any], launcher: DictConfig) -> list[str]:
    """The pool as CUDA_VISIBLE_DEVICES values, checked against the launcher; GpuPoolError otherwise.

    A joblib worker keeps its GPU for as long as it lives, so more workers than GPUs in the pool
    would wait for ever: ``hydra.launcher.n_jobs`` must be between 1 and the pool's size."""
    pool = [str(gpu).strip() for gpu in gpus]
    if not pool or any(not gpu or "," in gpu for gpu in pool):
        raise GpuPoolError(f"hydra.callbacks.gpu_pool.gpus must list GPU indices or UUIDs (as CUDA_VISIBLE_DEVICES "
                           f"takes them), e.g. [0,1,2,3], got {list(gpus)}")
    n_jobs = launcher.get("n_jobs")  # joblib's; submitit's launchers start a process per job
    if n_jobs is not None and not 1 <= n_jobs <= len(pool):
        raise GpuPoolError(f"hydra.launcher.n_jobs={n_jobs} with hydra.callbacks.gpu_pool.gpus={pool}: each "
                           f"parallel worker keeps one GPU of the pool while it lives, so n_jobs must be between 1 "
                           f"and {len(pool)} (list a GPU twice to run two jobs on it)")
    return pool


class GpuPoolCallback(Callback):
    """Hydra callback (``hydra.callbacks.gpu_pool``): when a sweep starts, check the pool against
    the launcher and hand it to the workers through the environment; take it back at the end.

    ``gpus``: GPU indices or UUIDs, one entry per job that may run at once (null: no pool).
    ``lock_dir``: the directory of the lock files (null: one per machine, in the temp directory)."""

    def __init__(self, gpus: Sequence[Any] | None = None, lock_dir: str | None = None) -> None:
        self.gpus = gpus
        self.lock_dir = lock_dir

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.gpus:
            return
        pool = check_pool(self.gpus, config.hydra.launcher)
        lock_dir = Path(self.lock_dir or DEFAULT_LOCK_DIR).expanduser().resolve()
        os.environ[POOL_ENV] = ",".join(pool)
        os.environ[LOCK_DIR_ENV] = str(lock_dir)
        log.info("GPU pool %s for the sweep's workers (lock files in %s)", pool, lock_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.pop(POOL_ENV, None)
        os.environ.pop(LOCK_DIR_ENV, None)
