"""Garbage-collection pauses, logged: a full collection stops every thread of the process, and at
thousands of messages a second a long one shows up as a dip in the sending rate."""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

log = logging.getLogger(__name__)

SLOW = 0.05  # seconds; shorter pauses are not logged


class PauseWatch:
    def __init__(self, slow: float = SLOW) -> None:
        self.slow = slow
        self.started = 0.0
        self.pauses: list[tuple[int, float]] = []  # (generation, seconds) of the slow ones

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            return
        took = time.perf_counter() - self.started
        if took >= self.slow:
            self.pauses.append((info["generation"], took))
            del self.pauses[:-100]
            log.warning(
                "garbage collection (generation %d) paused the process %.0f ms; %d objects collected",
                info["generation"], 1000 * took, info["collected"],
            )


def watch(slow: float = SLOW) -> PauseWatch:
    """Log every collection that takes `slow` seconds or more (once per process)."""
    for callback in gc.callbacks:
        if isinstance(callback, PauseWatch):
            return callback
    callback = PauseWatch(slow)
    gc.callbacks.append(callback)
    return callback

