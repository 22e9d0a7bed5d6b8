"""The rate-limited dispatcher: sends queued messages to their gateways, fairly, within Start and End.

Scheduling. It follows the `batches` read model for sealed batches not yet dispatched. Each account
has one active batch per file; a scheduling round offers every account with work one message, and
within an account its files take turns — so a million-contact file delays a ten-contact file (of
the same account or another) by at most one round. An account that sent goes to the back of the
line, so when capacity is short the accounts that waited longest go first.

Rates are token buckets in SMS parts per second (a 5-part message costs 5): one for the service,
one per gateway (gateways file), one per account (`sftpsms account rate`, else the default). A
message goes only when all three have its parts; otherwise its account waits for a later round
and the others go on, so a slow gateway or a throttled account never holds back the rest.

Gateways. A message goes to the gateway of the longest route prefix matching its number, else the
default gateway. Each gateway has a lane: a bounded channel and as many sender tasks as the
gateway takes concurrent submissions. A gateway that says it is unavailable gets its message back
at the head of its batch and a pause (doubling up to a minute); one that rejects a message for good
gets it recorded as submitted and failed (a "failed" receipt with the reason).

Start/End: no message before its file's Start; one still unsent at End expires and its credits are
refunded.

Restart safety: MessageSubmitted events are written in small groups after the gateway accepted the
messages. After a crash, messages without MessageSubmitted are sent again with the same
deterministic message id, and the gateway de-duplicates them where it can.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any
from uuid import UUID

import trio

from actors.faults import log_failure
from actors.gateway import (
    Gateway,
    GatewayReceipt,
    GatewayRejected,
    GatewayReport,
    GatewayUnavailable,
    OutboundMessage,
)
from actors.submissions import RecentSubmissions, SubmissionRef
from actors.writer import StoreClient
from eventstore import dispatch_rows
from eventstore.dispatch_rows import PendingRow
from eventstore.domain import DispatchLog, message_id
from eventstore.projections import ReadModels
from eventstore.store import SmsStore
from sftpsms.config import Settings
from sftpsms.ratelimit import TokenBucket

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.25  # seconds between looks at the read model for new batches, routes, rates
IDLE_WAIT = 0.25  # seconds to wait when nothing can go and nothing says when it can (Start, End)
FLUSH_EVERY = 200  # messages between MessageSubmitted writes
FLUSH_INTERVAL = 0.25  # seconds between them at most
PENDING_BATCH_LOOKAHEAD = 500
LANE_BUFFER = 64  # messages waiting for a gateway's sender tasks
ROUNDS_PER_YIELD = 32  # scheduling rounds run back to back (each one message per account at most)
PAUSE_MIN, PAUSE_MAX = 1.0, 60.0  # seconds a gateway is left alone after it said "unavailable"


@dataclass
class ActiveBatch:
    row: dict[str, Any]
    log: DispatchLog
    messages: deque[OutboundMessage]
    not_before: datetime | None
    expires_at: datetime | None
    in_flight: int = 0  # handed to a gateway lane, not yet answered

    @property
    def file_id(self) -> str:
        return str(self.row["file_id"])


@dataclass
class FileQueue:
    batches: deque[dict[str, Any]] = field(default_factory=deque)  # read-model rows, not loaded yet
    active: ActiveBatch | None = None
    # The next batch, loaded ahead by the loader task while `active` sends, so the scheduling
    # round never waits for the store.
    loaded: ActiveBatch | None = None
    loading: bool = False
    # A loaded batch whose Start is still ahead, set aside: the file's later batches (same Start)
    # are loaded only once it goes, so a big file scheduled for tomorrow holds one batch in memory.
    scheduled: list[ActiveBatch] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.active or self.loaded or self.loading or self.scheduled or self.batches)


@dataclass
class AccountQueue:
    files: dict[str, FileQueue] = field(default_factory=dict)  # insertion order = turn order


@dataclass
class Lane:
    """One gateway's way out: its bucket, its queue of messages for the sender tasks, its pause."""

    gateway: Gateway
    bucket: TokenBucket | None
    send: trio.MemorySendChannel[tuple[OutboundMessage, ActiveBatch]]
    receive: trio.MemoryReceiveChannel[tuple[OutboundMessage, ActiveBatch]]
    paused_until: float = 0.0
    pause: float = PAUSE_MIN


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def load_batch(store: SmsStore, row: dict[str, Any]) -> ActiveBatch:
    batch_id = UUID(row["batch_id"])
    batch = store.queued_batch(batch_id)
    dispatch = store.dispatch_log(batch)
    file_id = UUID(batch.file_id)
    submitted, expired = dispatch.submitted_indexes, dispatch.expired_indexes
    messages: deque[OutboundMessage] = deque(
        OutboundMessage(
            message_id=message_id(file_id, queued.index),
            batch_id=batch_id,
            file_id=file_id,
            index=queued.index,
            account=batch.account,
            msisdn=queued.msisdn,
            sender_id=batch.sender_id,
            text=queued.text,
            parts=queued.parts,
            customer_id=queued.customer_id,
            gateway=batch.gateway,
        )
        for queued in batch.messages
        if queued.index not in submitted and queued.index not in expired
    )
    return ActiveBatch(
        row=row,
        log=dispatch,
        messages=messages,
        not_before=_parse(batch.not_before),
        expires_at=_parse(batch.expires_at),
    )


def save_progress(
    store: SmsStore, events: list[Any], refunds: dict[tuple[str, str], int], rows: list[PendingRow] | None = None
) -> None:
    """MessageSubmitted / MessageExpired / BatchDispatched events (some as rows, see
    eventstore.dispatch_rows), then refunds for expired parts."""
    if rows:
        store.save_rows(dispatch_rows.encode_rows(rows, events, store.mapper, store.row_encoder()))
    elif events:
        store.save(*events)
    for (account, file_id), parts in refunds.items():

        def command(account: str = account, file_id: str = file_id, parts: int = parts) -> None:
            aggregate = store.account(account)
            aggregate.refund_credits(UUID(file_id), parts, "expired")
            store.save(aggregate)

        store._retrying(command)


def route_for(msisdn: str, routes: list[tuple[str, str]], default: str) -> str:
    """The gateway of the longest matching prefix (`routes` sorted longest first), else `default`."""
    for prefix, gateway in routes:
        if msisdn.startswith(prefix):
            return gateway
    return default


class Dispatcher:
    def __init__(
        self,
        *,
        store: StoreClient,
        gateways: Mapping[str, Gateway],
        settings: Settings,
        recent: RecentSubmissions,
        reports: trio.MemorySendChannel[GatewayReport],
        reader: SmsStore,
        gateway_rates: Mapping[str, float | None] | None = None,
    ) -> None:
        """`store` takes the dispatcher's writes (through the event writer); `reader` is the store
        itself, for loading batches in a thread of the dispatcher's own rather than in the
        writer's queue, behind receipts and progress."""
        if settings.default_gateway not in gateways:
            raise ValueError(f"default gateway {settings.default_gateway!r} is not configured")
        self.store = store
        self.reader = reader
        self.settings = settings
        self.recent = recent
        self.reports = reports
        now = trio.current_time()
        self.lanes: dict[str, Lane] = {}
        for name, gateway in gateways.items():
            send, receive = trio.open_memory_channel[tuple[OutboundMessage, ActiveBatch]](LANE_BUFFER)
            rate = (gateway_rates or {}).get(name)
            self.lanes[name] = Lane(gateway, TokenBucket(rate, now=now) if rate else None, send, receive)
        self.accounts: dict[str, AccountQueue] = {}  # insertion order = the line of accounts
        self.known: set[str] = set()
        self.routes: list[tuple[str, str]] = []
        self.account_rates: dict[str, float] = {}
        self.global_bucket = TokenBucket(settings.send_rate, now=now)
        self.account_buckets: dict[str, TokenBucket] = {}
        self.dirty: dict[UUID, DispatchLog] = {}
        self.unsaved: list[Any] = []  # events collected for a flush that failed
        # MessageSubmitted events built as rows (eventstore.dispatch_rows), where the store takes
        # rows (decided in run()); else they are ordinary pending events of the dispatch logs.
        self.fast_rows = False
        self.rows: list[PendingRow] = []
        self.refunds: dict[tuple[str, str], int] = {}
        self.unflushed = 0
        self.last_flush = now
        self.sent = 0
        self.sent_by_account: dict[str, int] = {}
        self.parts_by_account: dict[str, int] = {}
        self._unknown_routes: set[str] = set()
        self._flush_wanted = trio.Event()
        self._load_wanted = trio.Event()
        # Set when something may let a message go: a refill brought batches, a sender finished one
        # (its lane has room again, its batch may be done). The loop sleeps on it, never spins.
        self._wake = trio.Event()

    # ---- reading the read model ---------------------------------------------------------------

    async def refill(self) -> None:
        def read() -> tuple[list[dict[str, Any]], dict[str, str], dict[str, float]]:
            models = ReadModels(self.settings.readmodels_db)
            try:
                return models.pending_batches(PENDING_BATCH_LOOKAHEAD), models.routes(), models.account_rates()
            finally:
                models.close()

        rows, routes, rates = await trio.to_thread.run_sync(read)
        self.routes = sorted(routes.items(), key=lambda item: (-len(item[0]), item[0]))
        self.account_rates = rates
        for row in rows:
            if row["batch_id"] in self.known:
                continue
            self.known.add(row["batch_id"])
            account = self.accounts.setdefault(row["account"], AccountQueue())
            account.files.setdefault(row["file_id"], FileQueue()).batches.append(row)
            self._load_wanted.set()

    # ---- writing progress ---------------------------------------------------------------------

    async def flush(self) -> None:
        if not self.dirty and not self.refunds and not self.unsaved and not self.rows:
            return
        # Collect the events here, on the trio side: sender tasks keep adding to these aggregates
        # while the writer thread saves.
        events = self.unsaved + [event for dispatch in self.dirty.values() for event in dispatch.collect_events()]
        rows, self.rows = self.rows, []
        refunds = dict(self.refunds)
        self.dirty.clear()
        self.refunds.clear()
        self.unsaved = []
        self.unflushed = 0
        self.last_flush = trio.current_time()
        try:
            await self.store.run(lambda s: save_progress(s, events, refunds, rows))
        except BaseException:
            self.unsaved = events + self.unsaved
            self.rows = rows + self.rows
            for key, parts in refunds.items():
                self.refunds[key] = self.refunds.get(key, 0) + parts
            raise

    # ---- the scheduling round -----------------------------------------------------------------

    def _activate(self, queue: FileQueue, now: datetime) -> ActiveBatch | None:
        if queue.active is not None:
            return queue.active
        for waiting in queue.scheduled:
            if waiting.not_before is None or waiting.not_before <= now:
                queue.scheduled.remove(waiting)
                queue.active = waiting
                break
        else:
            queue.active, queue.loaded = queue.loaded, None
        if queue.loaded is None and queue.batches:
            self._load_wanted.set()
        return queue.active

    async def _load_next(self, queue: FileQueue) -> None:
        """Load the file's next unfinished batch into `loaded` (or `scheduled`, when its Start is
        ahead)."""
        queue.loading = True
        try:
            while queue.batches and queue.loaded is None and not queue.scheduled:
                row = queue.batches[0]
                batch = await trio.to_thread.run_sync(load_batch, self.reader, row)
                queue.batches.popleft()
                if batch.log.finished:
                    continue
                if batch.not_before is not None and batch.not_before > datetime.now(UTC):
                    queue.scheduled.append(batch)
                    continue
                queue.loaded = batch
        finally:
            queue.loading = False
        self._wake.set()

    async def _loader(self) -> None:
        """Keep one batch loaded ahead for every file (store reads off the scheduling loop)."""
        while True:
            await self._load_wanted.wait()
            self._load_wanted = trio.Event()
            for account in list(self.accounts.values()):
                for queue in list(account.files.values()):
                    if queue.loaded is None and queue.batches and not queue.loading and not queue.scheduled:
                        try:
                            await self._load_next(queue)
                        except Exception:
                            log_failure(log, "loading a batch failed; retrying")
                            await trio.sleep(1)
                            self._load_wanted.set()

    def _finish(self, queue: FileQueue, active: ActiveBatch) -> None:
        active.log.finish()
        self.dirty[active.log.id] = active.log
        queue.active = None

    def _expire(self, active: ActiveBatch, now: datetime) -> None:
        while active.messages:
            message = active.messages.popleft()
            active.log.expired(message.index, message.parts, now.isoformat())
            key = (message.account, str(message.file_id))
            self.refunds[key] = self.refunds.get(key, 0) + message.parts
        self.dirty[active.log.id] = active.log

    def _lane_for(self, message: OutboundMessage) -> Lane:
        name = message.gateway or route_for(message.msisdn, self.routes, self.settings.default_gateway)
        lane = self.lanes.get(name)
        if lane is None:
            if name not in self._unknown_routes:
                self._unknown_routes.add(name)
                log.warning("route names gateway=%s which is not configured; using %s", name, self.settings.default_gateway)
            lane = self.lanes[self.settings.default_gateway]
        return lane

    def _account_bucket(self, account: str, clock: float) -> TokenBucket:
        rate = self.account_rates.get(account) or self.settings.account_rate
        bucket = self.account_buckets.get(account)
        if bucket is None or bucket.rate != rate:
            bucket = self.account_buckets[account] = TokenBucket(rate, now=clock)
        return bucket

    def _next_for_file(self, queue: FileQueue, now: datetime) -> tuple[ActiveBatch | None, bool]:
        """The file's active batch with a message ready, or None; and whether anything happened
        (a batch finished or expired)."""
        progressed = False
        while True:
            active = self._activate(queue, now)
            if active is None:
                return None, progressed
            if active.expires_at is not None and now >= active.expires_at:
                self._expire(active, now)
            if not active.messages:
                if active.in_flight:
                    return None, progressed  # wait for the gateway's answers before finishing
                self._finish(queue, active)
                progressed = True
                continue
            return active, progressed

    def step(self) -> float | None:
        """One scheduling round: offer each account with work one message. Returns None when
        something happened, else how long to wait before anything can (IDLE_WAIT if unknown)."""
        now = datetime.now(UTC)
        progressed = False
        wait = float("inf")
        for account in list(self.accounts):
            queue = self.accounts[account]
            sent = False
            for file_id in list(queue.files):
                file_queue = queue.files[file_id]
                active, changed = self._next_for_file(file_queue, now)
                progressed = progressed or changed
                if active is None:
                    if file_queue.empty:
                        del queue.files[file_id]
                    continue
                message = active.messages[0]
                lane = self._lane_for(message)
                clock = trio.current_time()
                if lane.paused_until > clock:
                    wait = min(wait, lane.paused_until - clock)
                    continue
                shared = [self.global_bucket, self._account_bucket(account, clock)]
                need = max(b.wait_time(message.parts, clock) for b in shared)
                if need > 0:
                    wait = min(wait, need)
                    break  # the account's (or the service's) capacity: its turn is over this round
                if lane.bucket is not None:
                    need = lane.bucket.wait_time(message.parts, clock)
                    if need > 0:  # only this gateway is full: the account's other files may go
                        wait = min(wait, need)
                        continue
                try:
                    lane.send.send_nowait((message, active))
                except trio.WouldBlock:
                    continue  # the gateway's senders are busy: each one wakes the loop when done
                buckets = shared + ([lane.bucket] if lane.bucket else [])
                for b in buckets:
                    b.take(message.parts, clock)
                active.messages.popleft()
                active.in_flight += 1
                # The file goes to the back of its account's turn order.
                queue.files[file_id] = queue.files.pop(file_id)
                sent = True
                break
            if sent:
                progressed = True
                self.accounts[account] = self.accounts.pop(account)  # to the back of the line
            elif not queue.files:
                del self.accounts[account]
        if self.unflushed >= FLUSH_EVERY:
            self._flush_wanted.set()
        if progressed:
            return None
        return wait if wait != float("inf") else IDLE_WAIT

    # ---- the gateways' side --------------------------------------------------------------------

    def _submitted(self, message: OutboundMessage, active: ActiveBatch, gateway: str, ids: tuple[str, ...]) -> None:
        active.in_flight -= 1
        now = datetime.now(UTC)
        if self.fast_rows:
            row = dispatch_rows.submitted(
                active.log,
                index=message.index,
                gateway=gateway,
                gateway_ids=ids,
                parts=message.parts,
                at=now,
                msisdn=message.msisdn,
                customer_id=message.customer_id,
            )
            if row is not None:
                self.rows.append(row)
        else:
            active.log.submitted(
                message.index,
                gateway,
                ids,
                message.parts,
                now.isoformat(),
                msisdn=message.msisdn,
                customer_id=message.customer_id,
                timestamp=now,
            )
        # Dirty on the row path too: a new log's DispatchStarted is an ordinary pending event and
        # must be written in the same flush as its first row (rows sort after it by version).
        self.dirty[active.log.id] = active.log
        self.recent.add(SubmissionRef.of(message, gateway, ids[0]), ids)
        self.unflushed += 1
        self.sent += 1
        self.sent_by_account[message.account] = self.sent_by_account.get(message.account, 0) + 1
        self.parts_by_account[message.account] = self.parts_by_account.get(message.account, 0) + message.parts

    async def _sender(
        self, lane: Lane, receive: trio.MemoryReceiveChannel[tuple[OutboundMessage, ActiveBatch]], *, drain: bool = False
    ) -> None:
        """Submit the lane's messages one by one. `drain` (a gateway with one sender task): take
        everything waiting after each wake-up, instead of one message per trip through trio's
        scheduler; with several tasks each takes one, so they share the work."""
        gateway = lane.gateway
        with receive:
            async for first in receive:
                batch = [first]
                if drain:
                    while True:
                        try:
                            batch.append(receive.receive_nowait())
                        except trio.WouldBlock:
                            break
                for position, (message, active) in enumerate(batch):
                    if not await self._submit(lane, gateway, message, active):
                        # Unavailable: this one and the rest go back to the heads of their
                        # batches, in their order, ahead of the messages never taken.
                        for back, back_batch in reversed(batch[position:]):
                            self._put_back(back, back_batch)
                        break

    async def _submit(self, lane: Lane, gateway: Gateway, message: OutboundMessage, active: ActiveBatch) -> bool:
        """Submit one message; False when the gateway was unavailable (the lane is paused; the
        caller puts the message back)."""
        try:
            ids = await gateway.submit(message)
            if not ids:
                raise GatewayRejected(gateway.name, "no message id in the answer")
        except GatewayRejected as rejected:
            log.warning("gateway=%s message=%s rejected: %s", gateway.name, message.message_id, rejected.reason)
            rejected_id = f"rejected-{message.message_id}"
            self._submitted(message, active, gateway.name, (rejected_id,))
            await self.reports.send(
                GatewayReceipt(
                    gateway=gateway.name,
                    gateway_id=rejected_id,
                    status="failed",
                    at=datetime.now(UTC),
                    error=rejected.reason[:200],
                    message_id=message.message_id,
                )
            )
        except (GatewayUnavailable, OSError, trio.TooSlowError) as error:
            clock = trio.current_time()
            if lane.paused_until <= clock:
                log.warning("gateway=%s unavailable, pausing %.0f s: %s", gateway.name, lane.pause, error)
                lane.paused_until = clock + lane.pause
                lane.pause = min(PAUSE_MAX, lane.pause * 2)
            return False
        else:
            lane.pause = PAUSE_MIN
            self._submitted(message, active, gateway.name, ids)
        finally:
            self._wake.set()
        return True

    def _put_back(self, message: OutboundMessage, active: ActiveBatch) -> None:
        active.in_flight -= 1
        active.messages.appendleft(message)

    async def _refiller(self) -> None:
        while True:
            try:
                await self.refill()
            except Exception:
                log_failure(log, "reading pending batches failed; retrying")
            await trio.sleep(POLL_INTERVAL)

    async def _flusher(self) -> None:
        while True:
            with trio.move_on_after(FLUSH_INTERVAL):
                await self._flush_wanted.wait()
            self._flush_wanted = trio.Event()
            try:
                await self.flush()
            except Exception:
                log_failure(log, "recording dispatch progress failed; retrying")
                await trio.sleep(1)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Dispatch until cancelled: the scheduling loop, each gateway's sender tasks, and two
        helpers that keep the store work off the loop (reading new batches, writing progress).

        Error handling: a store error is logged and retried after a pause; unsaved progress stays
        in memory and is written with the next flush. A gateway error is the gateway's message's
        business (see the module docstring), never the loop's.
        """
        async with trio.open_nursery() as nursery:
            for lane in self.lanes.values():
                with lane.receive:
                    tasks = max(1, int(getattr(lane.gateway, "concurrency", 1)))
                    for _ in range(tasks):
                        nursery.start_soon(partial(self._sender, lane, lane.receive.clone(), drain=tasks == 1))
            self.fast_rows = await self.store.run(lambda s: s.writes_batch_rows)
            await self.refill()
            nursery.start_soon(self._refiller)
            nursery.start_soon(self._flusher)
            nursery.start_soon(self._loader)
            task_status.started()
            while True:
                self._wake = trio.Event()  # before the round: what happens during it wakes the next
                try:
                    # Several rounds before yielding to the senders: a trio checkpoint per
                    # message was most of the loop's cost at thousands of messages a second.
                    for _ in range(ROUNDS_PER_YIELD):
                        wait = self.step()
                        if wait is not None:
                            break
                except Exception:
                    log_failure(log, "dispatch round failed; retrying")
                    await trio.sleep(1)
                    continue
                if wait is None:  # a message went or a batch finished: next round at once
                    await trio.lowlevel.checkpoint()
                    continue
                with trio.move_on_after(wait):
                    await self._wake.wait()
