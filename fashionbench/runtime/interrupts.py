"""Ctrl-C and SIGTERM, never lost: a handler notes the signal here before it raises, and a signal
whose exception never reached the code that stops the run is raised again at the next checkpoint.

Python runs a signal's handler between any two bytecodes, in finalizers and weakref callbacks
too, and an exception raised there is printed ("Exception ignored in: ...") and dropped.
TensorFlow frees objects all the time while it trains, so about one Ctrl-C in twenty sent during
training was dropped that way: the run went on, ended FINISHED, and the sweep exited 0. The
checkpoints are the end of each training epoch (``training.fit``), the end of a tracked run
(``tracking.runs.tracked_run``: the run ends KILLED, not FINISHED) and the start of a sweep's
next job (``tracking.sweep_callback``).
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

# The signals noted since the last one was taken, oldest first (a dict as an ordered set).
_pending: dict[int, None] = {}


class Terminated(BaseException):
    """The process was asked to stop (SIGTERM: ``timeout``, SLURM, ``docker stop``, CI cancellation).

    Python's default SIGTERM handler exits without unwinding, which would leave the run RUNNING
    for good; ``tracked_run`` turns the signal into this exception so the run ends KILLED."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(f"terminated by {signal_name}")
        self.signal_name = signal_name


def note(signum: int) -> None:
    """Remember that ``signum`` arrived (a handler calls this before it raises)."""
    _pending[signum] = None


def pending() -> int | None:
    """The oldest signal noted and not yet taken, or None."""
    return next(iter(_pending), None)


def taken() -> None:
    """Forget the noted signals: their exception reached the code that acts on it."""
    _pending.clear()


def exception_for(signum: int) -> BaseException:
    """What a signal is turned into: KeyboardInterrupt for Ctrl-C, ``Terminated`` otherwise."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signal.Signals(signum).name)


def raise_pending() -> None:
    """A checkpoint: raise the noted signal whose exception was swallowed on its way, if any."""
    signum = pending()
    if signum is not None:
        raise exception_for(signum)


def raise_terminated(signum: int, frame: Any) -> None:
    """SIGTERM's handler during a run: note it, then raise ``Terminated``."""
    note(signum)
    raise exception_for(signum)


def noting(previous: Any) -> Any:
    """A SIGINT handler that notes the signal, then does what ``previous`` did: calls it (Python's
    default raises KeyboardInterrupt; a handler that returns has chosen to ignore the signal),
    ignores the signal where ``previous`` ignored it (nohup, a background job), and raises
    KeyboardInterrupt where it was the system's default."""
    if previous == signal.SIG_IGN:
        return previous

    def handler(signum: int, frame: Any) -> None:
        note(signum)
        if not callable(previous):  # SIG_DFL ends the process; in Python, with an exception that unwinds
            raise exception_for(signum)
        previous(signum, frame)
        _pending.pop(signum, None)  # it returned: ignored, nothing to raise later

    return handler


def quieting_dropped(previous: Callable[[Any], None]) -> Callable[[Any], None]:
    """A ``sys.unraisablehook`` that says in one line, not with a traceback, that an interruption
    raised in a finalizer was dropped there (noted, it is raised again at the next checkpoint);
    whatever else is unraisable goes to ``previous``."""

    def hook(unraisable: Any) -> None:
        error = unraisable.exc_value
        while error is not None and not isinstance(error, (KeyboardInterrupt, Terminated)):
            error = error.__cause__ or error.__context__  # native code may have wrapped it (SystemError)
        if error is not None and pending() is not None:
            log.debug("%s raised in %r was dropped there; it is raised again at the next checkpoint",
                      type(error).__name__, unraisable.object)
            return
        previous(unraisable)

    return hook


def install_unraisable_hook() -> Callable[[Any], None]:
    """Install ``quieting_dropped`` over the current hook; return the hook it replaced."""
    previous = sys.unraisablehook
    sys.unraisablehook = quieting_dropped(previous)
    return previous
