"""The contact-batch actor: pass 2, turning a file's spooled outcomes into batch aggregates.

Each batch holds BATCH_SIZE consecutive contacts (MessageQueued / ContactRejected / OptOutSkipped,
then BatchSealed with the batch's counts and errors for the report). GROUP batches are saved per
transaction (SmsStore.queue_batches, which writes them as rows or as aggregates); a batch already
stored (a file resumed after a crash) is skipped by the store, so a message is never queued twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import IO
from uuid import UUID

import outcome
import trio

from actors.writer import StoreClient
from eventstore.contact_rows import SpooledBatch
from sftpsms.intake import Plan

log = logging.getLogger(__name__)

BATCH_SIZE = 1000
GROUP = 10  # batches per transaction: FINDINGS.md, grouping decides ingest speed
INBOX_BUFFER = 0
PROGRESS_EVERY = 100_000


@dataclass(frozen=True)
class QueueRequest:
    file_id: UUID
    account: str
    plan: Plan
    timestamp: datetime  # one clock reading for all the file's queue events
    reply: trio.MemorySendChannel[outcome.Outcome[int]]


class _SpoolGroups:
    """Reads a file's spool GROUP batches at a time (in a worker thread)."""

    def __init__(self, request: QueueRequest, timestamp: datetime) -> None:
        self.request = request
        self.timestamp = timestamp
        self.number = 0
        self._lines: IO[bytes] | None = None

    def next_group(self) -> list[SpooledBatch]:
        """The next group's batches, BATCH_SIZE spool lines each ([] at the end)."""
        if self._lines is None:
            self._lines = self.request.plan.spool.open("rb")
        request, plan = self.request, self.request.plan
        not_before = plan.not_before.isoformat() if plan.not_before else None
        expires_at = plan.expires_at.isoformat() if plan.expires_at else None
        batches: list[SpooledBatch] = []
        for _ in range(GROUP):
            lines = list(islice(self._lines, BATCH_SIZE))
            if not lines:
                break
            batches.append(
                SpooledBatch(
                    file=request.file_id, account=request.account, number=self.number, sender_id=plan.sender_id,
                    not_before=not_before, expires_at=expires_at, timestamp=self.timestamp, lines=lines,
                )
            )
            self.number += 1
        return batches

    def close(self) -> None:
        if self._lines is not None:
            self._lines.close()


async def run_contact_batches(
    inbox: trio.MemoryReceiveChannel[QueueRequest],
    *,
    store: StoreClient,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Queue files' messages until the inbox closes.

    Each group is one writer command, so other work (logins, dispatch records) interleaves with a
    million-contact file instead of waiting for all of it.

    Error handling: the outcome (contacts queued, or the error) goes back on the request's reply
    channel; the actor itself goes on with the next file.
    """
    task_status.started()
    with inbox:
        async for request in inbox:
            groups = _SpoolGroups(request, request.timestamp)
            with request.reply:
                result = await outcome.acapture(_queue_all, store, groups)
                groups.close()
                try:
                    request.reply.send_nowait(result)
                except trio.BrokenResourceError:
                    log.warning("file_id=%s queued but nobody waited", request.file_id)


async def _queue_all(store: StoreClient, groups: _SpoolGroups) -> int:
    total = 0
    while batches := await trio.to_thread.run_sync(groups.next_group):
        await store.queue_batches(batches)  # the store skips batches stored before a restart
        contacts = sum(len(batch.lines) for batch in batches)
        total += contacts
        if total % PROGRESS_EVERY < contacts:
            log.info("file_id=%s queued=%d", groups.request.file_id, total)
    return total
