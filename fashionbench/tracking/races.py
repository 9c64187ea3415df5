"""Store calls that lose a race to another process doing the same thing at the same moment.

MLflow's SQL store creates some rows with a get-or-create that is not atomic: two runs that log
the same dataset into one experiment at once can both miss it and both insert it, and one gets
``UNIQUE constraint failed`` (through a server: a ``RestException`` BAD_REQUEST with that text).
The same holds for a registered model two ``promote`` commands create at once, and for the next
version number of a model. The row the loser wanted now exists (or the next number is free), so
the call is repeated: on its second try the get part finds it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

log = logging.getLogger(__name__)

T = TypeVar("T")

# What a lost race says, by backend: SQLite, PostgreSQL, MySQL; and SQLite's busy timeout, which a
# burst of parallel writers can exceed.
RACE_MESSAGES = ("UNIQUE constraint failed", "duplicate key value violates unique constraint", "Duplicate entry",
                 "IntegrityError", "database is locked")
ATTEMPTS = 6
FIRST_WAIT_SECONDS = 0.05


def lost_race(error: BaseException) -> bool:
    """Whether ``error`` says another process created the same row first (or held the database)."""
    if isinstance(error, MlflowException) and error.error_code == ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
        return True
    return any(message in str(error) for message in RACE_MESSAGES)


def retry_lost_race(action: Callable[[], T], what: str, attempts: int | None = None) -> T:
    """``action()``, repeated after a short, jittered, growing wait while it loses a race; any other
    error, or a race lost ``attempts`` times, is raised as it is."""
    attempts = attempts or ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as error:
            if attempt == attempts or not lost_race(error):
                raise
            log.debug("%s lost a race to another process (%s); trying again", what, str(error).splitlines()[0][:200])
            time.sleep(FIRST_WAIT_SECONDS * 2 ** (attempt - 1) * (1 + random.random()))
    raise AssertionError("unreachable")
