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

Cancel, pause, resume (issue 12). Requests are FileControl events, written by whoever asked (the
CLI, a control file); the `file_controls` read model lists the files paused, cancelled or with a
request not yet honoured, read with each refill. A cancel takes the file out of the rounds at
once, waits for the messages a gateway is submitting now (their MessageSubmitted are flushed:
they are reported as they end), expires every other message of the file with its credits
refunded (MessageExpired reason "cancelled", CreditsRefunded reason "cancelled"; the batches not
in memory are read from the store) and records ControlApplied. A pause keeps the file's batches
but offers them nothing until resumed, except End: its messages still expire at End. A message
of a paused or cancelled file that waits in a gateway lane goes back to its batch instead. Each
ControlApplied is recorded only once nothing of the file is being submitted and its submissions
are flushed, so after it the log holds no further MessageSubmitted of a cancelled or paused file.
The state is in the events and the read model: a restart honours it before its first round.

Quiet hours (an account's `sftpsms account quiet-hours`, sftpsms/quiet.py): a message is not taken
while it is quiet time at its recipient's location. Before a file's turn, the messages at the head
of its active batch that are in quiet time are set aside (held) with the time their zones open;
the rest of the batch goes on. A batch left with held messages only is parked: its messages are
dropped from memory and only its read-model row is kept with a wake-up time (the earliest opening
among them, or End), so a million held messages cost a thousand rows; at the wake-up it is loaded
again from the store (messages submitted meanwhile are skipped as after a restart) and its held
messages go, or expire at End with their refund. The quiet state is computed per (window, zone
set) and kept until it next changes, the zones of a number are cached by prefix: a message costs
two dictionary look-ups, and nothing at all for an account without quiet hours. The first time a
message is held is recorded (MessagesHeld), so reports can say how many were held and how many of
those expired.

Several nodes (a PostgreSQL store): the dispatcher takes in only the batches of the accounts in
`admitted`, which actors/dispatch_leases.py keeps to the accounts whose lease this node holds; it
also puts the service's and gateways' buckets in PostgreSQL. With `admitted` None (one node) every
account is taken in, as before.

Restart safety: MessageSubmitted events are written in small groups after the gateway accepted the
messages. After a crash, messages without MessageSubmitted are sent again with the same
deterministic message id, and the gateway de-duplicates them where it can.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
from eventstore import controls, dispatch_rows
from eventstore.dispatch_rows import PendingRow
from eventstore.domain import DispatchLog, message_id
from eventstore.domain import batch_id as batch_uuid
from eventstore.projections import ReadModels
from eventstore.store import Refund, SmsStore
from sftpsms import credits
from sftpsms.config import Settings
from sftpsms.quiet import HORIZON, QuietHours, QuietState, quiet_state, zone_infos, zones_for_number
from sftpsms.ratelimit import TokenBucket

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.25  # seconds between looks at the read model for new batches, routes, rates
IDLE_WAIT = 0.25  # seconds to wait when nothing can go and nothing says when it can (Start, End)
FLUSH_EVERY = 200  # messages between MessageSubmitted writes
FLUSH_INTERVAL = 0.25  # seconds between them at most
PENDING_BATCH_LOOKAHEAD = 500
PENDING_PAGES = 100  # pages of PENDING_BATCH_LOOKAHEAD read at most per look (see _pending)
LANE_BUFFER = 64  # messages waiting for a gateway's sender tasks
ROUNDS_PER_YIELD = 32  # scheduling rounds run back to back (each one message per account at most)
PAUSE_MIN, PAUSE_MAX = 1.0, 60.0  # seconds a gateway is left alone after it said "unavailable"
CANCEL_SAVE_EVERY = 5000  # MessageExpired events per transaction when a cancel expires stored batches
SETTLE_POLL = 0.005  # seconds between looks while a controlled file's submissions finish
NEVER = datetime.max.replace(tzinfo=UTC)  # a held message whose zones do not open within a week
EARLIEST = datetime.min.replace(tzinfo=UTC)
QUIET_RECHECK = 3600.0  # seconds before a "not open within a week" answer is asked again


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ActiveBatch:
    row: dict[str, Any]
    log: DispatchLog
    messages: deque[OutboundMessage]
    not_before: datetime | None
    expires_at: datetime | None
    in_flight: int = 0  # handed to a gateway lane, not yet answered
    # Quiet hours: messages set aside while their recipients' zones are quiet, in order; the
    # earliest time one of them may go; the indexes held since MessagesHeld was last recorded.
    held: deque[OutboundMessage] = field(default_factory=deque)
    opens_at: datetime = NEVER
    new_held: list[int] = field(default_factory=list)

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
    expires_at: datetime | None = None  # the file's End (every batch of a file has the same)
    # Batches with held messages only (quiet hours), out of memory: (wake-up time, read-model row).
    parked: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.active or self.loaded or self.loading or self.scheduled or self.batches or self.parked)


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


Refunds = dict[Refund, int]  # (account, file id, reason) → parts (SmsStore.refund_expired)


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
        on_control: Callable[[UUID], Awaitable[None]] | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """`on_control` is called once a cancel, pause or resume of a file is honoured (the
        supervisor rewrites the file's report). `store` takes the dispatcher's writes (through the event writer); `reader` is the store
        itself, for loading batches in a thread of the dispatcher's own rather than in the
        writer's queue, behind receipts and progress. `clock`: the wall-clock time (UTC) of
        Start, End, quiet hours and the submission times (tests pass virtual time)."""
        if settings.default_gateway not in gateways:
            raise ValueError(f"default gateway {settings.default_gateway!r} is not configured")
        self.store = store
        self.reader = reader
        self.clock = clock
        # account → (its quiet hours, its country for numbers without a known zone)
        self.quiet: dict[str, tuple[QuietHours, str]] = {}
        self._quiet_parsed: dict[tuple[str, str], QuietHours] = {}
        # (quiet hours, zone names) → the state and when to compute it again
        self._quiet_states: dict[tuple[QuietHours, tuple[str, ...]], tuple[QuietState, datetime]] = {}
        self.holding: dict[UUID, ActiveBatch] = {}  # batches with new_held to record
        self.held = 0  # messages held (first time), for logs and benchmarks
        self._flush_lock = trio.Lock()
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
        # MessageSubmitted events built as rows-to-be (eventstore.dispatch_rows); the store
        # writes them as rows or as events (SmsStore.record_submissions).
        self.rows: list[PendingRow] = []
        self.refunds: Refunds = {}
        self.on_control = on_control
        self.cancelled: set[str] = set()  # files cancelled: never offered again
        self.paused: set[str] = set()  # files paused: offered nothing but End
        self.honoured: dict[str, int] = {}  # file → the FileControl version this process honoured
        self.controlling: set[str] = set()  # files whose request is being honoured now
        self._nursery: trio.Nursery | None = None
        self._flush_lock = trio.Lock()
        # Several nodes (actors/dispatch_leases.py): the accounts this node holds the dispatch lease
        # of (None: every account, one node), the batch ids taken in for each, and the accounts
        # being handed over (their messages waiting in a lane go back instead of out).
        self.admitted: set[str] | None = None
        self.batches_of: dict[str, set[str]] = {}
        self.stopping: set[str] = set()
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
        def read() -> tuple[
            list[dict[str, Any]], dict[str, str], dict[str, float], list[dict[str, Any]], dict[str, tuple[str, str, str]]
        ]:
            models = ReadModels(self.settings.readmodels_db)
            try:
                # Controls first: a batch row read after them is never of a file cancelled
                # before them that this refill does not know as cancelled.
                file_controls = models.file_controls()
                return (
                    self._pending(models),
                    models.routes(),
                    models.account_rates(),
                    file_controls,
                    models.quiet_hours(),
                )
            finally:
                models.close()

        rows, routes, rates, file_controls, quiet = await trio.to_thread.run_sync(read)
        self.routes = sorted(routes.items(), key=lambda item: (-len(item[0]), item[0]))
        self.account_rates = rates
        self._control(file_controls)
        before, self.quiet = self.quiet, {}
        for name, (window, days, country) in quiet.items():
            hours = self._quiet_parsed.get((window, days))
            if hours is None:
                try:
                    hours = self._quiet_parsed[(window, days)] = QuietHours.parse(window, days)
                except ValueError:
                    log.warning("account=%s quiet hours %s (%s) cannot be read; ignored", name, window, days)
                    continue
            self.quiet[name] = (hours, country)
        for name in {*before, *self.quiet}:
            if before.get(name) != self.quiet.get(name) and name in self.accounts:
                # Quiet hours changed or went off: parked batches are looked at again now.
                for file_queue in self.accounts[name].files.values():
                    file_queue.parked = [(EARLIEST, row) for _, row in file_queue.parked]
                self._wake.set()
        for row in rows:
            if row["batch_id"] in self.known:
                continue
            if self.admitted is not None:
                if row["account"] not in self.admitted:
                    continue  # another node's, or not ours yet
                self.batches_of.setdefault(row["account"], set()).add(row["batch_id"])
            self.known.add(row["batch_id"])
            if row["file_id"] in self.cancelled:
                continue  # its cancel expires it (or did)
            account = self.accounts.setdefault(row["account"], AccountQueue())
            queue = account.files.setdefault(row["file_id"], FileQueue())
            queue.batches.append(row)
            if queue.expires_at is None:
                queue.expires_at = _parse(row["expires_at"])
            self._load_wanted.set()

    # ---- cancel, pause, resume ------------------------------------------------------------------

    def _control(self, rows: list[dict[str, Any]]) -> None:
        """Take the read model's controlled files: synchronously, so no round after this refill
        offers a message of a file it shows cancelled or paused; the requests not yet honoured
        are honoured in tasks of their own."""
        paused: set[str] = set()
        for row in rows:
            file_id, state = row["file_id"], row["state"]
            if state == "paused":
                paused.add(file_id)
            elif state == "cancelled" and file_id not in self.cancelled:
                self.cancelled.add(file_id)
                self.paused.discard(file_id)
            pending = row["applied"] < row["requested"] and self.honoured.get(file_id, 0) < row["requested"]
            if pending and file_id not in self.controlling and self._nursery is not None and self._admits(row["account"]):
                self.controlling.add(file_id)
                queue = None
                if state == "cancelled":
                    queue = self.accounts.get(row["account"], AccountQueue()).files.pop(file_id, None)
                self._nursery.start_soon(self._honour, row, queue)
        paused -= self.cancelled
        if paused != self.paused:  # a resume lets messages go (a pause or cancel needs no round)
            self.paused = paused
            self._wake.set()

    def _held(self, message: OutboundMessage) -> bool:
        """A message of a paused or cancelled file, or of an account being handed to another node:
        not to be submitted now."""
        if not (self.cancelled or self.paused or self.stopping):
            return False
        file_id = str(message.file_id)
        return file_id in self.cancelled or file_id in self.paused or message.account in self.stopping

    async def _honour(self, row: dict[str, Any], queue: FileQueue | None) -> None:
        """Honour a file's latest request (row: its `file_controls` row) and record ControlApplied.

        Error handling: a failure is logged and the request tried again at a later refill (it is
        still pending in the read model); what was saved stays saved, and expiring again what is
        expired adds nothing."""
        file_id, account, state, version = row["file_id"], row["account"], row["state"], row["requested"]
        action = {"cancelled": "cancel", "paused": "pause"}.get(state, "resume")
        try:
            cancelled = refunded = 0
            if action == "cancel":
                cancelled, refunded = await self._cancel(file_id, account, queue)
            else:
                await self._settle(self._in_memory(self.accounts.get(account, AccountQueue()).files.get(file_id)))
                await self.flush()
            now = self.clock()
            await self.store.run(
                partial(
                    controls.record_applied,
                    file=UUID(file_id),
                    action=action,
                    requested_version=version,
                    messages_cancelled=cancelled,
                    credits_refunded=refunded,
                    now=now,
                )
            )
            self.honoured[file_id] = version
            log.info("file_id=%s account=%s %s honoured (%d messages cancelled)", file_id, account, action, cancelled)
            if self.on_control is not None:
                await self.on_control(UUID(file_id))
        except Exception:
            log_failure(log, f"honouring the {action} of file_id={file_id} failed; tried again")
        finally:
            self.controlling.discard(file_id)
            self._wake.set()

    @staticmethod
    def _in_memory(queue: FileQueue | None) -> list[ActiveBatch]:
        if queue is None:
            return []
        return [batch for batch in (queue.active, queue.loaded, *queue.scheduled) if batch is not None]

    async def _settle(self, batches: list[ActiveBatch]) -> None:
        """Wait until no message of these batches is being submitted (a held message in a lane
        goes back to its batch; one at the gateway is answered)."""
        # Polled: a rare moment, a few milliseconds long; an Event would cost every message a set.
        while any(batch.in_flight for batch in batches):  # noqa: ASYNC110
            await trio.sleep(SETTLE_POLL)

    async def _cancel(self, file_id: str, account: str, queue: FileQueue | None) -> tuple[int, int]:
        """Expire every unsent message of the file with its credits refunded; returns (messages,
        parts). `queue` is the file's queue, already out of the rounds."""
        started = trio.current_time()
        while queue is not None and queue.loading:  # noqa: ASYNC110 - as in _settle
            await trio.sleep(SETTLE_POLL)  # the loader finishes the batch it reads
        held = self._in_memory(queue)
        if queue is not None:
            queue.batches.clear()
            queue.active = queue.loaded = None
            queue.scheduled = []
        await self._settle(held)
        at = self.clock().isoformat()
        key = (account, file_id, credits.CANCELLED)
        messages = parts = 0
        for batch in held:
            count, batch_parts = self._cancel_batch(batch, at)
            messages, parts = messages + count, parts + batch_parts
            batch.log.finish()
            self.dirty[batch.log.id] = batch.log
            if batch_parts:
                self.refunds[key] = self.refunds.get(key, 0) + batch_parts
        await self.flush()  # the held batches' submissions and expiries: the store is now current
        settled = trio.current_time()
        # Every other batch of the file, as stored (not loaded yet, beyond the look-ahead, or
        # left part-sent by a restart).
        done = {str(batch.log.batch_id) for batch in held}
        file = UUID(file_id)
        count = await trio.to_thread.run_sync(lambda: int(self.reader.file(file).summary.get("batches", 0)))
        events: list[Any] = []
        rows: list[PendingRow] = []
        refund = 0
        for number in range(count):
            bid = str(batch_uuid(file, number))
            self.known.add(bid)
            if bid in done:
                continue
            # As rows-to-be (eventstore.dispatch_rows), read and built in a thread.
            expired = await trio.to_thread.run_sync(self._expire_stored, UUID(bid), datetime.fromisoformat(at))
            if expired is None:
                continue
            dispatch, batch_rows = expired
            rows += batch_rows
            batch_count, batch_parts = len(batch_rows), sum(row.state["parts"] for row in batch_rows)
            dispatch.finish()
            messages, parts, refund = messages + batch_count, parts + batch_parts, refund + batch_parts
            events += dispatch.collect_events()
            if len(events) + len(rows) >= CANCEL_SAVE_EVERY:
                await self._save_cancelled(events, rows, {key: refund} if refund else {})
                events, rows, refund = [], [], 0
        if events or rows or refund:
            await self._save_cancelled(events, rows, {key: refund} if refund else {})
        log.info(
            "file_id=%s cancel: held batches settled and flushed in %.3f s, %d stored batches expired in %.3f s",
            file_id, settled - started, count - len(done), trio.current_time() - settled,
        )
        return messages, parts

    async def _save_cancelled(self, events: list[Any], rows: list[PendingRow], refunds: Refunds) -> None:
        await self.store.record_submissions(rows, events, refunds)

    def _expire_stored(self, batch: UUID, at: datetime) -> tuple[DispatchLog, list[PendingRow]] | None:
        """A stored batch's unsent messages as MessageExpired rows (reason "cancelled"), with its
        dispatch log; None when the batch was dispatched already. In a worker thread."""
        queued = self.reader.queued_batch(batch)
        dispatch = self.reader.dispatch_log(queued)
        if dispatch.finished:
            return None
        messages = ((message.index, message.parts) for message in queued.messages)
        return dispatch, dispatch_rows.expired_all(dispatch, messages, at=at, reason="cancelled")

    @staticmethod
    def _cancel_batch(batch: ActiveBatch, at: str) -> tuple[int, int]:
        count = parts = 0
        while batch.messages:
            message = batch.messages.popleft()
            batch.log.expired(message.index, message.parts, at, reason="cancelled")
            count, parts = count + 1, parts + message.parts
        return count, parts
    def _pending(self, models: ReadModels) -> list[dict[str, Any]]:
        """The first PENDING_BATCH_LOOKAHEAD pending batches, and further pages while a page
        holds only batches known already: batches that wait (parked for quiet hours, or for
        their Start) must not hide the files queued after them. (In the caller's thread.)"""
        rows: list[dict[str, Any]] = []
        after = 0
        for _ in range(PENDING_PAGES):
            page = models.pending_batches(PENDING_BATCH_LOOKAHEAD, after)
            rows += page
            if len(page) < PENDING_BATCH_LOOKAHEAD or any(
                row["batch_id"] not in self.known and self._admits(row["account"]) for row in page
            ):
                break
            after = page[-1]["rowid"]
        return rows

    def _admits(self, account: str) -> bool:
        return self.admitted is None or account in self.admitted

    # ---- writing progress ---------------------------------------------------------------------

    async def flush(self) -> None:
        """Write the progress collected so far. One flush at a time: one that returns has
        everything collected before it was called in the store (a cancel relies on it)."""
        async with self._flush_lock:
            await self._flush()

    async def _flush(self) -> None:
        for active in self.holding.values():
            self._note_held(active)
        self.holding.clear()
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
            await self.store.record_submissions(rows, events, refunds)
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
                if row.get("parked"):
                    await self._settle_parked()
                batch = await trio.to_thread.run_sync(load_batch, self.reader, row)
                queue.batches.popleft()
                if batch.log.finished:
                    continue
                if batch.not_before is not None and batch.not_before > self.clock():
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

    async def _settle_parked(self) -> None:
        """Before a parked batch is loaded again: every event of its log is in the store (its
        MessageSubmitted, MessagesHeld), so the log read back is the one in memory."""
        await self.flush()

    def _note_held(self, active: ActiveBatch) -> None:
        if active.new_held:
            until = None if active.opens_at == NEVER else active.opens_at.isoformat()
            active.log.held(active.new_held, self.clock().isoformat(), until)
            active.new_held = []
            self.dirty[active.log.id] = active.log

    def _quiet_state(self, hours: QuietHours, country: str, msisdn: str, now: datetime) -> QuietState:
        zones = zones_for_number(msisdn, country)
        key = (hours, zones)
        known = self._quiet_states.get(key)
        if known is not None and now < known[1]:
            return known[0]
        state = quiet_state(hours, zone_infos(zones), now)
        recheck = state.until if state.until is not None else now + timedelta(seconds=QUIET_RECHECK)
        if len(self._quiet_states) >= 4096:
            self._quiet_states.clear()
        self._quiet_states[key] = (state, min(recheck, now + HORIZON))
        return state

    def _hold_quiet(self, active: ActiveBatch, hours: QuietHours, country: str, now: datetime) -> bool:
        """Set aside the messages at the head of the batch whose recipients are in quiet time;
        whether any was."""
        held = False
        messages = active.messages
        while messages:
            state = self._quiet_state(hours, country, messages[0].msisdn, now)
            if not state.quiet:
                break
            message = messages.popleft()
            active.held.append(message)
            if message.index not in active.log.held_indexes:
                active.new_held.append(message.index)
                self.held += 1
            opens = state.until or NEVER
            if opens < active.opens_at:
                active.opens_at = opens
            held = True
        if active.new_held:
            self.holding[active.log.id] = active
        return held

    def _release(self, active: ActiveBatch) -> None:
        """The held messages go back to the batch's head (each is looked at again)."""
        self._note_held(active)
        active.held.extend(active.messages)
        active.messages, active.held = active.held, deque()
        active.opens_at = NEVER

    def _park(self, queue: FileQueue, active: ActiveBatch) -> None:
        """Only held messages left: out of memory until the earliest opening (or End)."""
        self._note_held(active)
        self.holding.pop(active.log.id, None)
        wake = min(active.opens_at, active.expires_at or NEVER)
        queue.parked.append((wake, {**active.row, "parked": True}))
        queue.active = None

    def _wake_parked(self, queue: FileQueue, now: datetime) -> float:
        """Parked batches whose time has come go back to the head of the file's batches; returns
        the seconds until the next one's (inf when none)."""
        due = [row for wake, row in queue.parked if wake <= now]
        if due:
            queue.parked = [(wake, row) for wake, row in queue.parked if wake > now]
            queue.batches.extendleft(reversed(due))
            self._load_wanted.set()
        return min(((wake - now).total_seconds() for wake, _ in queue.parked), default=float("inf"))

    def _finish(self, queue: FileQueue, active: ActiveBatch) -> None:
        active.log.finish()
        self.dirty[active.log.id] = active.log
        queue.active = None

    def _expire(self, active: ActiveBatch, now: datetime) -> None:
        self._note_held(active)
        self._release(active)
        while active.messages:
            message = active.messages.popleft()
            active.log.expired(message.index, message.parts, now.isoformat())
            key = (message.account, str(message.file_id), credits.EXPIRED)
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

    def _next_for_file(
        self, queue: FileQueue, now: datetime, quiet: tuple[QuietHours, str] | None = None
    ) -> tuple[ActiveBatch | None, bool]:
        """The file's active batch with a message ready, or None; and whether anything happened
        (a batch finished, expired or was parked). `quiet`: the account's quiet hours."""
        progressed = False
        while True:
            active = self._activate(queue, now)
            if active is None:
                return None, progressed
            if active.expires_at is not None and now >= active.expires_at:
                self._expire(active, now)
            if quiet is not None and active.messages:
                self._hold_quiet(active, quiet[0], quiet[1], now)
            if not active.messages:
                if active.held and (quiet is None or active.opens_at <= now):
                    self._release(active)  # the window opened (or quiet hours were turned off)
                    continue
                if active.in_flight:
                    return None, progressed  # wait for the gateway's answers before finishing
                if active.held:
                    self._park(queue, active)
                else:
                    self._finish(queue, active)
                progressed = True
                continue
            return active, progressed

    def step(self) -> float | None:
        """One scheduling round: offer each account with work one message. Returns None when
        something happened, else how long to wait before anything can (IDLE_WAIT if unknown)."""
        now = self.clock()
        progressed = False
        wait = float("inf")
        for account in list(self.accounts):
            queue = self.accounts[account]
            quiet = self.quiet.get(account)
            sent = False
            for file_id in list(queue.files):
                file_queue = queue.files[file_id]
                if file_id in self.cancelled:
                    continue  # its cancel holds it now
                if file_id in self.paused and not (file_queue.expires_at is not None and now >= file_queue.expires_at):
                    continue  # paused: nothing but End (below, once it has passed)
                if file_queue.parked:
                    wait = min(wait, self._wake_parked(file_queue, now))
                active, changed = self._next_for_file(file_queue, now, quiet)
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
        now = self.clock()
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
        # Dirty too: a new log's DispatchStarted is an ordinary pending event and must be written
        # in the same flush as its first row (rows sort after it by version).
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
        if self._held(message):  # its file was paused or cancelled while it waited in the lane
            self._put_back(message, active)
            self._wake.set()
            return True
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
                    at=self.clock(),
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
            self._nursery = nursery
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
