"""One way to lock a file across processes: an advisory ``flock`` that dies with its holder.

Used wherever parallel jobs share something: a trunk-cache entry (shared while read, exclusive
while computed or evicted), a fresh SQLite store being created, a GPU of a sweep's pool.

- The kernel drops a ``flock`` when its holder exits however it exits, SIGKILL included, so no
  process ever waits on a dead one, and no stale lock file needs cleaning.
- A lock file can be removed by a holder of its exclusive lock (an evicted cache entry); a process
  that was waiting locked the removed file, sees that the path now names another one (or none),
  and locks again: the classic flock pattern.
- Where locks cannot be taken (a file system without them, a read-only folder) the lock is granted
  without being held and this is logged once per path: the work goes on as it would without locks.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1  # how often a lock with a timeout is tried again


class LockTimeout(TimeoutError):
    """Another process has held a lock for longer than the caller would wait; the message names the file."""


class FileLock:
    """An advisory lock on ``path`` (created if missing), exclusive or shared."""

    _unlockable_logged: set[Path] = set()

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._close: weakref.finalize | None = None  # closes the locked file, so releases the lock
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._close is not None and self._close.alive

    def acquire(self, exclusive: bool = True, wait: bool = True, timeout: float | None = None) -> bool:
        """Take the lock. Without ``wait``: False when another holder's mode conflicts. With a
        ``timeout`` (seconds): LockTimeout naming the file once it has passed. Otherwise blocks
        until the lock is free."""
        deadline = None if timeout is None else time.monotonic() + timeout
        blocking = wait and deadline is None
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if blocking else fcntl.LOCK_NB)
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as error:
                return self._unlockable(error)
            try:
                fcntl.flock(fd, mode)
            except BlockingIOError:
                os.close(fd)
                if deadline is None:
                    return False
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"another process has held {self.path} for over {timeout:g} s") from None
                time.sleep(POLL_SECONDS)
                continue
            except OSError as error:
                os.close(fd)
                return self._unlockable(error)
            if _same_file(fd, self.path):
                self._fd = fd
                self._close = weakref.finalize(self, os.close, fd)  # also when dropped without release()
                return True
            os.close(fd)  # removed (e.g. its cache entry evicted) while we waited for it: lock the new file

    def release(self, remove: bool = False) -> None:
        """Let go; ``remove`` (an exclusive holder whose subject is gone) deletes the lock file first."""
        if self._close is None:
            return
        if remove:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self._close()
        self._close = self._fd = None

    def write_note(self, text: str) -> None:
        """Write ``text`` into the held lock file (who holds it, for a person looking at it)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, text.encode(), 0)

    def _unlockable(self, error: OSError) -> bool:
        if self.path not in FileLock._unlockable_logged:
            FileLock._unlockable_logged.add(self.path)
            log.warning("cannot lock %s (%s): going on without the lock, so parallel jobs may repeat work",
                        self.path, error)
        return True


@contextlib.contextmanager
def locked(path: Path, exclusive: bool = True, timeout: float | None = None) -> Iterator[FileLock]:
    """Hold the lock on ``path`` for a block (see ``FileLock.acquire`` for ``timeout``)."""
    lock = FileLock(path)
    lock.acquire(exclusive=exclusive, timeout=timeout)
    try:
        yield lock
    finally:
        lock.release()


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd``."""
    try:
        opened, named = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (opened.st_dev, opened.st_ino) == (named.st_dev, named.st_ino)
