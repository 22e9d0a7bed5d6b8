"""Telling a full disk from a bug: a full disk is never a file's fault, so the actors pause and
try again (one log line) instead of failing the file or logging a traceback each round."""

from __future__ import annotations

import errno
import logging
import sqlite3
import sys

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, says the disk (or quota) is full: an
    OSError, or SQLite's "database or disk is full" (also as eventsourcing's wrapper of it), or
    the "disk I/O error" SQLite gives when it cannot create its WAL files on a full disk."""
    seen: BaseException | None = error
    for _ in range(10):  # a chain of causes, never a cycle followed forever
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return True
        if isinstance(seen, sqlite3.Error) and ("full" in str(seen) or "disk I/O error" in str(seen)):
            return True
        if type(seen).__name__ == "OperationalError" and ("disk is full" in str(seen) or "disk I/O error" in str(seen)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def log_failure(log: logging.Logger, message: str, *args: object) -> None:
    """In an `except` block: a full disk in one warning line, anything else with its traceback."""
    error = sys.exc_info()[1]
    if error is not None and is_disk_full(error):
        log.warning(message + " (the disk is full: %s)", *args, error)
    else:
        log.exception(message, *args)
