"""Which runs did the same work: fingerprints of a resolved config over the options of a stage.

What an option decides is declared on its schema field (``fashionbench.options``), and each
fingerprint covers the options whose results are among its stages (``options.UPSTREAM``). Two
questions are answered by a tag on every run and an MLflow search for a FINISHED run with the same
tag value (``tracking.store.finished_runs_with``):

- did this sweep job already run? (``tracking.resume``): every option that decides a result
  (where runs are logged, where caches live and what a run is called aside);
- was this model already trained? (``tracking.reuse_training``): the options that decide the data
  and the trained weights (``device.mixed_precision`` and ``device.jit_compile`` among them), the
  data's content and the package's source code, so that a run after a code change trains again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from fashionbench.config import option_roles
from fashionbench.options import UPSTREAM, Stage, UndeclaredOptionError, flatten, role_of

# Every result a run computes: what a job's fingerprint covers.
RESULTS = UPSTREAM[Stage.EVALUATION]


def config_fingerprint(config: Mapping[str, Any], stages: Iterable[Stage], extra: Sequence[str] = ()) -> str:
    """16 hex digits that change when the value of any option deciding one of ``stages`` changes
    (by the options' declared roles), or when one of ``extra`` does. Raises UndeclaredOptionError
    for a key that no schema declares."""
    wanted, roles = frozenset(stages), option_roles()
    selected = {}
    for name, value in flatten(config).items():
        role = role_of(name, roles)
        if role is None:
            raise UndeclaredOptionError(f"config key {name!r} is no option of any schema: it cannot be fingerprinted")
        if role.decides in wanted:
            selected[name] = value
    digest = hashlib.sha256(json.dumps([selected, list(extra)], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def job_fingerprint(config: Mapping[str, Any]) -> str:
    """What ``tracking.resume`` compares: every option that decides a result of the run."""
    return config_fingerprint(config, RESULTS)


def training_fingerprint(config: Mapping[str, Any], data_fingerprint: str) -> str:
    """What ``tracking.reuse_training`` compares: the options that decide the trained weights, the
    data's content (``Catalogue.fingerprint``) and the package's code (``code_fingerprint``)."""
    return config_fingerprint(config, UPSTREAM[Stage.TRAINING], extra=(data_fingerprint, code_fingerprint()))


def stage_fingerprint(config: Mapping[str, Any], stage: Stage) -> str:
    """The options of ``stage`` itself (not of its inputs): what a result computed from given inputs
    depends on besides them (the results a process keeps for a sweep's next job)."""
    return config_fingerprint(config, {stage})


@cache
def code_fingerprint() -> str:
    """16 hex digits of the package's Python source: changes with any edit, committed or not
    (a git commit would miss uncommitted edits)."""
    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
