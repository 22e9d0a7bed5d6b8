"""The read-model follower: keeps the sqlite-utils tables, and the message history behind them,
caught up with the notification log."""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from actors.faults import log_failure
from eventstore.history import HISTORY_FILE, History
from eventstore.projections import ReadModels
from eventstore.store import SmsStore

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.2  # the admin CLI writes from another process: poll for its events too
# While writes keep coming (a big ingest pokes after every group of batches), catch up at most
# about this often: each catch-up holds the GIL that pass 1 and pass 2 need, and the rows it
# would add one group at a time are just as good a moment later.
BUSY_INTERVAL = 0.5
# The history (eventstore.history) is a million rows per million-contact file: it is caught up
# every HISTORY_INTERVAL while no file is being ingested, so it never takes the CPU an ingest
# needs; while files keep arriving it still catches up once every HISTORY_DEFER_MAX, and each
# catch-up step is HISTORY_PAGES pages (about a second), so a stop never waits long for it.
HISTORY_INTERVAL = 1.0
HISTORY_DEFER_MAX = 60.0
HISTORY_PAGES = 5


class Projector:
    """Catches the read models up, on demand (before a decision that needs fresh rows) and in the
    background (`run`). Each catch-up opens its own connection: it runs in a worker thread."""

    def __init__(self, store: SmsStore, path: Path, history_path: Path | None = None) -> None:
        self.store = store
        self.path = path
        self.history_path = history_path or path.with_name(HISTORY_FILE)
        self._wake = trio.Event()
        ReadModels(path).close()  # create the schema once, up front
        History(self.history_path).close()

    def poke(self) -> None:
        """Something was written: catch up soon."""
        self._wake.set()

    def catch_up_sync(self) -> int:
        models = ReadModels(self.path)
        try:
            return models.catch_up(self.store)
        finally:
            models.close()

    async def catch_up(self) -> int:
        return await trio.to_thread.run_sync(self.catch_up_sync)

    def ingest_in_flight(self) -> bool:
        """Whether a file is between FileReceived and FileCompleted (as the read models know)."""
        models = ReadModels(self.path)
        try:
            row = models.db.execute(
                "SELECT 1 FROM files WHERE status IN ('received', 'accepted') LIMIT 1"
            ).fetchone()
            return row is not None
        finally:
            models.close()

    def history_step_sync(self) -> bool:
        """Catch the history up by at most HISTORY_PAGES pages; returns whether it reached the log's end."""
        history = History(self.history_path)
        try:
            return history.catch_up(self.store, max_pages=HISTORY_PAGES)[1]
        finally:
            history.close()

    async def follow_history(self) -> None:
        deferred_since: float | None = None
        while True:
            await trio.sleep(HISTORY_INTERVAL)
            try:
                ingesting = await trio.to_thread.run_sync(self.ingest_in_flight)
            except Exception:  # e.g. a full disk: asked again next round, never stops the service
                log_failure(log, "history: cannot tell whether a file is being ingested")
                continue
            if ingesting:
                now = trio.current_time()
                if deferred_since is None:
                    deferred_since = now
                if now - deferred_since < HISTORY_DEFER_MAX:
                    continue
            deferred_since = None
            try:
                while not await trio.to_thread.run_sync(self.history_step_sync):
                    if await trio.to_thread.run_sync(self.ingest_in_flight):
                        break  # an upload arrived meanwhile: it goes first
            except Exception:  # a bad row must not stop the service; it is retried next round
                log_failure(log, "history catch-up failed")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.catch_up()
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.follow_history)
            await self._follow_read_models()

    async def _follow_read_models(self) -> None:
        while True:
            with trio.move_on_after(POLL_INTERVAL):
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self.catch_up()
            except Exception:  # a bad row must not stop the service; it is retried next round
                log_failure(log, "read-model catch-up failed")
            if self._wake.is_set():  # poked again meanwhile: writes keep coming
                await trio.sleep(BUSY_INTERVAL)
