"""The read-model follower: keeps the sqlite-utils tables caught up with the notification log."""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from actors.faults import log_failure
from eventstore.projections import ReadModels
from eventstore.store import SmsStore

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.2  # the admin CLI writes from another process: poll for its events too
# While writes keep coming (a big ingest pokes after every group of batches), catch up at most
# about this often: each catch-up holds the GIL that pass 1 and pass 2 need, and the rows it
# would add one group at a time are just as good a moment later.
BUSY_INTERVAL = 0.5


class Projector:
    """Catches the read models up, on demand (before a decision that needs fresh rows) and in the
    background (`run`). Each catch-up opens its own connection: it runs in a worker thread."""

    def __init__(self, store: SmsStore, path: Path) -> None:
        self.store = store
        self.path = path
        self._wake = trio.Event()
        ReadModels(path).close()  # create the schema once, up front

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

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.catch_up()
        task_status.started()
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
