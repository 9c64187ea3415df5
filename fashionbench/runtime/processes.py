"""Whether a process that left its id behind (a run's tags, a cache's staging folder) still runs."""

from __future__ import annotations

import os
from pathlib import Path


def process_start(pid: int) -> str:
    """When process ``pid`` started, in clock ticks since boot (/proc), so that a reused pid is not
    mistaken for the original process; "" where /proc does not say."""
    try:
        # Field 22 of /proc/<pid>/stat, counted after the parenthesised command name.
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_alive(pid: int, started: str = "") -> bool:
    """Whether process ``pid`` (started at ``started``, "" if unknown) still runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return not started or process_start(pid) in ("", started)
