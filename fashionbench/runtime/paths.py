"""Where relative paths point: the directory the command was launched from.

A relative path in the config or the environment (the data root, the trunk cache, the catalogue
store, the Keras weights folder, the MLflow store) is relative to where the command was run, in
every job of a sweep, even with ``hydra.job.chdir=true``, which runs each job in its own output
folder: so every job shares one cache and one store instead of making its own. An absolute path
(or an environment variable set to one) points them all at shared storage.
"""

from __future__ import annotations

import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

# Read by a library when it is imported, before any config exists: made absolute at start-up.
PATH_VARIABLES_READ_AT_IMPORT = ("KERAS_HOME",)


def launch_directory() -> Path:
    """Where the command was run: Hydra's ``runtime.cwd`` inside a Hydra job (the same for every
    job of a sweep, on every launcher, as it travels with the job's config), else the working
    directory (the compose API, notebooks, the read commands)."""
    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.cwd)
    return Path.cwd()


def absolute_path(path: str | os.PathLike[str]) -> Path:
    """``path`` with ``~`` expanded and, when relative, under the launch directory."""
    return launch_directory() / Path(path).expanduser()


def anchor_path_variables() -> None:
    """Make the folders named by environment variables that libraries read at import absolute,
    against the working directory at start-up (before Hydra moves a job anywhere), so that the
    jobs a sweep starts, which inherit the environment, all use the same folders."""
    for variable in PATH_VARIABLES_READ_AT_IMPORT:
        value = os.environ.get(variable)
        if value and not Path(value).expanduser().is_absolute():
            os.environ[variable] = str(Path(value).expanduser().resolve())
