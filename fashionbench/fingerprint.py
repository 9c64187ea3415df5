"""Which runs did the same work: fingerprints of a resolved config over chosen keys.

Two questions share this machinery, each answered by a tag on every run and an MLflow search
for a FINISHED run with the same tag value (``tracking.store.finished_runs_with``):

- did this sweep job already run? (``tracking.resume``): the whole config, tracking and naming
  keys aside (``CONFIG_FINGERPRINT_EXCLUDES``);
- was this model already trained? (``tracking.reuse_training``): the keys that decide the
  trained weights (``TRAINING_KEYS``, less ``TRAINING_EXCLUDES``), the data's content and the
  package's source code, so that a run after a code change trains again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

# Where a run is logged and what it is called change nothing it computes.
CONFIG_FINGERPRINT_EXCLUDES = ("tracking", "run_name")
# What decides the trained weights: the data, the model, how it is fitted, and the seeds
# (the top-level seed and freeze feed model.seed and model.freeze).
TRAINING_KEYS = ("data", "model", "train", "seed", "freeze")
# ... except what only reads the trained model (the embedding layer) or where the trunk
# cache lives and how large it may grow.
TRAINING_EXCLUDES = ("model.embedding_layer", "train.cache_dir", "train.cache_max_gb")


def config_fingerprint(config: Mapping[str, Any], keys: Sequence[str] | None = None,
                       excludes: Sequence[str] = (), extra: Sequence[str] = ()) -> str:
    """16 hex digits that change when any value under ``keys`` (dotted prefixes; every key when
    None), other than those under ``excludes``, changes, or when one of ``extra`` does."""
    selected = {name: value for name, value in flatten(config).items()
                if (keys is None or _under(name, keys)) and not _under(name, excludes)}
    digest = hashlib.sha256(json.dumps([selected, list(extra)], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def job_fingerprint(config: Mapping[str, Any]) -> str:
    """What ``tracking.resume`` compares: the resolved config, tracking and naming keys aside."""
    return config_fingerprint(config, excludes=CONFIG_FINGERPRINT_EXCLUDES)


def training_fingerprint(config: Mapping[str, Any], data_fingerprint: str) -> str:
    """What ``tracking.reuse_training`` compares: the settings that decide the trained weights,
    the data's content (``Catalogue.fingerprint``) and the package's code (``code_fingerprint``)."""
    return config_fingerprint(config, TRAINING_KEYS, TRAINING_EXCLUDES, extra=(data_fingerprint, code_fingerprint()))


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


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> {"model.freeze": 4, ...}: what fingerprints select from, and (as strings)
    the params a run logs."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)
