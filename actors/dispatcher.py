"""The rate-limited dispatcher: sends queued messages to the gateway, fairly, within Start and End.

It follows the `batches` read model for sealed batches not yet dispatched, keeps one active batch
per account, and takes one message per account in turn (round robin), so a million-contact file
does not hold back a ten-contact one. Rates are token buckets in SMS parts per second: one for
the service, one per account. A message is never sent before its file's Start; one still unsent
at End expires and its credits are refunded.

Restart safety: MessageSubmitted events are written in small groups after the gateway accepted the
messages. After a crash, messages without MessageSubmitted are sent again with the same
deterministic message id, and the gateway de-duplicates them.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any
from uuid import UUID

import trio

from actors.gateway import Gateway, OutboundMessage
from actors.projector import Projector
from actors.writer import StoreClient
from eventstore.domain import ContactBatch, DispatchLog, message_id
from eventstore.projections import ReadModels
from eventstore.store import SmsStore
from sftpsms.config import Settings
from sftpsms.ratelimit import TokenBucket

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.25
FLUSH_EVERY = 200  # messages between MessageSubmitted writes
FLUSH_INTERVAL = 0.25  # seconds between them at most
PENDING_BATCH_LOOKAHEAD = 500


@dataclass
class ActiveBatch:
    row: dict[str, Any]
    log: DispatchLog
    messages: deque[OutboundMessage]
    not_before: datetime | None
    expires_at: datetime | None
    expired_parts: int = 0


@dataclass
class AccountQueue:
    batches: deque[dict[str, Any]] = field(default_factory=deque)
    active: ActiveBatch | None = None
    # Loaded batches whose Start is still ahead: set aside so they do not hold back the rest.
    scheduled: list[ActiveBatch] = field(default_factory=list)


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def load_batch(store: SmsStore, row: dict[str, Any]) -> ActiveBatch:
    batch_id = UUID(row["batch_id"])
    batch = store.batch(batch_id)
    dispatch = store.dispatch_log(batch)
    file_id = UUID(batch.file_id)
    messages: deque[OutboundMessage] = deque()
    for event in store.events.get(batch_id):
        if isinstance(event, ContactBatch.MessageQueued) and event.index not in dispatch.submitted_indexes:
            if event.index in dispatch.expired_indexes:
                continue
            messages.append(
                OutboundMessage(
                    message_id=message_id(file_id, event.index),
                    batch_id=batch_id,
                    file_id=file_id,
                    index=event.index,
                    account=batch.account,
                    msisdn=event.msisdn,
                    sender_id=batch.sender_id,
                    text=event.text,
                    parts=event.parts,
                )
            )
    return ActiveBatch(
        row=row,
        log=dispatch,
        messages=messages,
        not_before=_parse(batch.not_before),
        expires_at=_parse(batch.expires_at),
    )


def save_progress(store: SmsStore, logs: list[DispatchLog], refunds: dict[tuple[str, str], int]) -> None:
    """MessageSubmitted / MessageExpired / BatchDispatched, then refunds for expired parts."""
    if logs:
        store.save(*logs)
    for (account, file_id), parts in refunds.items():
        def command(account: str = account, file_id: str = file_id, parts: int = parts) -> None:
            aggregate = store.account(account)
            aggregate.refund_credits(UUID(file_id), parts, "expired")
            store.save(aggregate)

        store._retrying(command)


class Dispatcher:
    def __init__(
        self,
        *,
        store: StoreClient,
        projector: Projector,
        gateway: Gateway,
        settings: Settings,
    ) -> None:
        self.store = store
        self.projector = projector
        self.gateway = gateway
        self.settings = settings
        self.accounts: dict[str, AccountQueue] = {}
        self.known: set[str] = set()
        self.global_bucket = TokenBucket(settings.send_rate, now=trio.current_time())
        self.account_buckets: dict[str, TokenBucket] = {}
        self.dirty: dict[UUID, DispatchLog] = {}
        self.refunds: dict[tuple[str, str], int] = {}
        self.unflushed = 0
        self.last_flush = trio.current_time()
        self.sent = 0

    async def refill(self) -> None:
        def read() -> list[dict[str, Any]]:
            models = ReadModels(self.settings.readmodels_db)
            try:
                return models.pending_batches(PENDING_BATCH_LOOKAHEAD)
            finally:
                models.close()

        for row in await trio.to_thread.run_sync(read):
            if row["batch_id"] in self.known:
                continue
            self.known.add(row["batch_id"])
            self.accounts.setdefault(row["account"], AccountQueue()).batches.append(row)

    async def flush(self) -> None:
        if not self.dirty and not self.refunds:
            return
        logs, refunds = list(self.dirty.values()), dict(self.refunds)
        self.dirty.clear()
        self.refunds.clear()
        self.unflushed = 0
        self.last_flush = trio.current_time()
        await self.store.run(lambda s: save_progress(s, logs, refunds))

    async def _activate(self, queue: AccountQueue, now: datetime) -> ActiveBatch | None:
        if queue.active is not None:
            return queue.active
        for waiting in queue.scheduled:
            if waiting.not_before is None or waiting.not_before <= now:
                queue.scheduled.remove(waiting)
                queue.active = waiting
                return waiting
        while queue.batches:
            row = queue.batches.popleft()
            active = await self.store.run(partial(load_batch, row=row))
            if active.log.finished:
                continue
            if active.not_before is not None and active.not_before > now:
                queue.scheduled.append(active)
                continue
            queue.active = active
            return active
        return None

    async def _finish(self, queue: AccountQueue, active: ActiveBatch) -> None:
        active.log.finish()
        self.dirty[active.log.id] = active.log
        queue.active = None
        await self.flush()

    def _expire(self, active: ActiveBatch, now: datetime) -> None:
        while active.messages:
            message = active.messages.popleft()
            active.log.expired(message.index, message.parts, now.isoformat())
            key = (message.account, str(message.file_id))
            self.refunds[key] = self.refunds.get(key, 0) + message.parts
        self.dirty[active.log.id] = active.log

    async def step(self) -> bool:
        """Send at most one message per account with work. Returns whether anything happened."""
        progressed = False
        now = datetime.now(UTC)
        for account, queue in list(self.accounts.items()):
            active = await self._activate(queue, now)
            if active is None:
                if not queue.scheduled:
                    del self.accounts[account]
                continue
            if active.expires_at is not None and now >= active.expires_at:
                self._expire(active, now)
                await self._finish(queue, active)
                progressed = True
                continue
            if not active.messages:
                await self._finish(queue, active)
                progressed = True
                continue
            message = active.messages[0]
            bucket = self.account_buckets.get(account)
            if bucket is None:
                bucket = self.account_buckets[account] = TokenBucket(
                    self.settings.account_rate, now=trio.current_time()
                )
            wait = max(
                self.global_bucket.wait_time(message.parts, trio.current_time()),
                bucket.wait_time(message.parts, trio.current_time()),
            )
            if wait > 0:
                await trio.sleep(wait)
            self.global_bucket.take(message.parts, trio.current_time())
            bucket.take(message.parts, trio.current_time())
            gateway_id = await self.gateway.submit(message)
            active.messages.popleft()
            active.log.submitted(
                message.index, self.gateway.name, gateway_id, message.parts, datetime.now(UTC).isoformat()
            )
            self.dirty[active.log.id] = active.log
            self.unflushed += 1
            self.sent += 1
            progressed = True
        if self.unflushed >= FLUSH_EVERY or (
            self.dirty and trio.current_time() - self.last_flush >= FLUSH_INTERVAL
        ):
            await self.flush()
        return progressed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Dispatch until cancelled.

        Error handling: a store or gateway error is logged and the round is retried after a pause;
        unsaved progress stays in memory and is written with the next flush.
        """
        task_status.started()
        last_refill = -POLL_INTERVAL
        while True:
            try:
                if trio.current_time() - last_refill >= POLL_INTERVAL:
                    await self.refill()
                    last_refill = trio.current_time()
                if not await self.step():
                    await self.flush()
                    await trio.sleep(POLL_INTERVAL / 5)
            except Exception:
                log.exception("dispatch round failed; retrying")
                await trio.sleep(1)
