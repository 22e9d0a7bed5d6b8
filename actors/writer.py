"""The event writer: the one actor that runs commands against the event store, one at a time.

Everyone else sends it a function of the store over a channel and awaits the reply. Commands run in
a worker thread (the eventsourcing API is synchronous), strictly in arrival order, so aggregates
written by this process never race each other; other processes (the admin CLI) may still write, and
SmsStore's commands retry on a version conflict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

import outcome
import trio

from eventstore.contact_rows import SpooledBatch
from eventstore.dispatch_rows import PendingRow
from eventstore.reports import Report, ReportsRecorded
from eventstore.store import Refund, SmsStore

T = TypeVar("T")
log = logging.getLogger(__name__)

INBOX_BUFFER = 16


@dataclass(frozen=True)
class StoreCommand(Generic[T]):
    run: Callable[[SmsStore], T]
    reply: trio.MemorySendChannel[outcome.Outcome[T]] = field(repr=False)


class StoreClient:
    """What actors hold: the store's intents as awaitables (`await store.queue_batches(...)`),
    and `await store.run(partial(SmsStore.add_credits, ...))` for its other commands."""

    def __init__(self, inbox: trio.MemorySendChannel[StoreCommand[Any]]) -> None:
        self._inbox = inbox

    def clone(self) -> StoreClient:
        return StoreClient(self._inbox.clone())

    def close(self) -> None:
        self._inbox.close()

    async def run(self, command: Callable[[SmsStore], T]) -> T:
        send, receive = trio.open_memory_channel[outcome.Outcome[T]](1)
        with receive:
            await self._inbox.send(StoreCommand(command, send))
            result = await receive.receive()
        return result.unwrap()

    # The hot path's intents (eventstore.store's docstring): each picks its backend's path.

    async def queue_batches(self, batches: Sequence[SpooledBatch]) -> int:
        return await self.run(partial(SmsStore.queue_batches, batches=batches))

    async def record_submissions(
        self, rows: Sequence[PendingRow], events: Sequence[Any] = (), refunds: Mapping[Refund, int] | None = None
    ) -> None:
        await self.run(partial(SmsStore.record_submissions, rows=rows, events=events, refunds=refunds))

    async def record_reports(self, reports: Sequence[Report], *, optout_words: Sequence[str]) -> ReportsRecorded:
        return await self.run(partial(SmsStore.record_reports, reports=reports, optout_words=optout_words))


def open_store_channel() -> tuple[StoreClient, trio.MemoryReceiveChannel[StoreCommand[Any]]]:
    send, receive = trio.open_memory_channel[StoreCommand[Any]](INBOX_BUFFER)
    return StoreClient(send), receive


async def run_writer(
    inbox: trio.MemoryReceiveChannel[StoreCommand[Any]],
    *,
    store: SmsStore,
    on_written: Callable[[], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run store commands until every StoreClient is closed.

    Error handling: a command's exception goes back to its sender, never kills the writer.
    A command cannot be cancelled half-way (the thread finishes its transaction); its sender may
    stop waiting. `on_written` is called after each command (the projector's wake-up).
    """
    task_status.started()
    with inbox:
        async for command in inbox:
            result = await trio.to_thread.run_sync(outcome.capture, command.run, store, abandon_on_cancel=False)
            try:
                command.reply.send_nowait(result)
            except (trio.BrokenResourceError, trio.WouldBlock):
                if isinstance(result, outcome.Error):
                    log.error("store command failed and nobody waited: %r", result.error)
            finally:
                command.reply.close()
            if on_written is not None:
                on_written()
