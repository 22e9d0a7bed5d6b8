"""The dispatcher's side of the rates shared by several nodes: a token bucket drawn from PostgreSQL.

`SharedBucket` stands where the dispatcher keeps a local TokenBucket for the service's rate and each
gateway's (actors/dispatcher.py asks it `wait_time` and `take`, synchronously, in its scheduling
round). It answers from a local allowance of tokens drawn in chunks from the shared bucket of the
same key (eventstore/rate_buckets.py); a task of its own tops the allowance up to one chunk
(CHUNK_SECONDS of the rate) whenever it runs below half a chunk and something wants tokens, and
wakes the dispatcher when tokens arrive. So a node that has work sends at whatever share of the
rate the others leave, a node without work draws nothing, and the whole cluster stays within the
configured rate (see eventstore/rate_buckets.py for why a shared bucket, not a fixed share).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import trio

from actors.faults import log_failure
from eventstore.rate_buckets import SharedBuckets
from sftpsms.ratelimit import EPSILON, TOLERANCE, TokenBucket

log = logging.getLogger(__name__)

CHUNK_SECONDS = 0.05  # tokens drawn at once: this much of the rate (one round trip per chunk)
MIN_CHUNK = 11.0  # at least a 10-part message and a bit
RETRY_MIN = 0.005  # seconds before drawing again from an empty shared bucket, at least
ERROR_PAUSE = 1.0  # seconds after a failed draw


class SharedBucket(TokenBucket):
    """A TokenBucket whose tokens come from the shared bucket `key`. `wake` is called when a draw
    brought tokens (the dispatcher's loop may have gone to sleep on an empty allowance)."""

    def __init__(self, key: str, rate: float, buckets: SharedBuckets, wake: Callable[[], None]) -> None:
        super().__init__(rate)
        self.key = key
        self.buckets = buckets
        self.wake = wake
        self.chunk = max(rate * CHUNK_SECONDS, MIN_CHUNK)
        self.shared_burst = max(rate * TOLERANCE, 2 * self.chunk)
        self.tokens = 0.0  # the local allowance: nothing until drawn
        self.drawn = 0.0  # tokens drawn so far (benchmarks)
        self._wanted = trio.Event()

    def wait_time(self, cost: float, now: float) -> float:
        needed = min(cost, self.chunk)
        if self.tokens >= needed - EPSILON:
            return 0.0
        self._wanted.set()
        return max(RETRY_MIN, (needed - self.tokens) / self.rate)

    def take(self, cost: float, now: float) -> None:
        self.tokens -= cost
        if self.tokens < self.chunk / 2:
            self._wanted.set()

    async def run(self) -> None:
        """Draw while tokens are wanted and the allowance is below half a chunk, until cancelled.

        Error handling: a failed draw is logged and tried again after ERROR_PAUSE; meanwhile this
        node sends nothing that needs this bucket (the safe side of a rate)."""
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            while self.tokens < self.chunk / 2:
                want = self.chunk - self.tokens
                try:
                    got = await trio.to_thread.run_sync(
                        partial(self.buckets.draw, self.key, want, rate=self.rate, burst=self.shared_burst)
                    )
                except Exception:
                    log_failure(log, f"drawing from the shared rate {self.key} failed; trying again")
                    await trio.sleep(ERROR_PAUSE)
                    continue
                self.tokens += got
                self.drawn += got
                if got > 0:
                    self.wake()
                if got < want / 2:  # the others took it: wait for it to fill again
                    await trio.sleep(max(RETRY_MIN, min(CHUNK_SECONDS, (want - got) / self.rate)))
