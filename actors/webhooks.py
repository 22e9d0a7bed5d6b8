"""The webhook sender: POSTs each DeliveryReported / ReplyReceived event to the account's webhook
URLs subscribed to its kind, signed per Standard Webhooks, at least once, in order per message.

A follower of the notification log. Webhook subscriptions come from the same log (WebhookAdded /
WebhookRemoved on the account), so an event goes to the webhooks the account had when it was
written. Each POST ends as WebhookDelivered (a 2xx, with the attempts it took) or WebhookFailed
(still failing `webhook_retry_for` seconds after the first try); both are events on the webhook's
WebhookLog, recorded in groups through the writer.

Several nodes (a PostgreSQL store): the node holding the lease `webhooks` sends, from the position
kept in the store (eventstore/webhook_tracking.py); a node that dies or loses its connection loses
the lease, and another takes it within LEASE_INTERVAL and resumes there. So each event is POSTed
once per URL across the cluster, and at least once (same `webhook-id`) around a crash.

Position: `DATA/webhooks.db` keeps the position below which every POST is settled, and which
(position, URL) pairs above it are settled already. A restart resumes there: nothing is lost,
a POST in flight at the crash is sent again (receivers de-duplicate by `webhook-id`).

Order and concurrency: one lane per (URL, message): a message's next event waits until its
previous one is settled; different messages go in parallel, at most `webhook_concurrency` POSTs
per URL at once. Bodies and ids derive from the event only, so a replay (`replay_webhooks`)
sends the same bytes with the same ids.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache, partial
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import h11
import trio
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from actors.faults import log_failure
from actors.http_client import HttpClient, HttpError
from actors.writer import StoreClient
from eventstore.domain import Account, DeliveryLog, account_id, webhook_message_id
from eventstore.leases import Leases
from eventstore.store import SmsStore, WebhookOutcome
from sftpsms import webhooks
from sftpsms.config import Settings

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5  # the admin CLI adds webhooks from another process: poll for its events too
READ_LIMIT = 1000
MAX_PENDING = 10_000  # POSTs read from the log and not yet settled; the reader waits beyond this
OUTCOMES_BUFFER = 1000
GROUP = 500
GROUP_WAIT = 0.1  # seconds to wait for more outcomes before recording a group
LEASE = "webhooks"  # several nodes: the one holding it sends every webhook
LEASE_INTERVAL = 0.5  # seconds between looks at the lease (taking it, or checking it is still ours)

SUBSCRIPTION_TOPICS = (
    get_topic(Account.WebhookAdded), get_topic(Account.WebhookRemoved), get_topic(Account.WebhookSecretRotated)
)
SOURCE_KINDS = {get_topic(DeliveryLog.DeliveryReported): "delivery", get_topic(DeliveryLog.ReplyReceived): "reply"}
TOPICS = (*SUBSCRIPTION_TOPICS, *SOURCE_KINDS)


@dataclass(frozen=True)
class Subscription:
    url: str
    secret: str
    events: frozenset[str]


@dataclass(frozen=True)
class Delivery:
    """One POST to make: everything in it derives from the source event and the subscription."""

    position: int
    account: str
    url: str
    secret: str
    kind: str
    webhook_id: str
    body: bytes
    source_id: UUID
    source_version: int
    message_id: str


@dataclass(frozen=True)
class Settled:
    delivery: Delivery
    outcome: WebhookOutcome


# Account name → aggregate id: a uuid5 for every delivery event otherwise.
_account_id = lru_cache(maxsize=10_000)(account_id)


class Subscriptions:
    """Each account's webhooks, as of the log position read so far."""

    def __init__(self) -> None:
        self.by_account: dict[UUID, dict[str, Subscription]] = {}

    def __bool__(self) -> bool:
        """Whether any account has a webhook."""
        return any(self.by_account.values())

    def apply(self, event: Any) -> None:
        hooks = self.by_account.setdefault(UUID(str(event.originator_id)), {})
        if isinstance(event, Account.WebhookAdded):
            hooks[event.url] = Subscription(event.url, event.secret, frozenset(event.events))
        elif isinstance(event, Account.WebhookRemoved):
            hooks.pop(event.url, None)
        elif isinstance(event, Account.WebhookSecretRotated) and event.url in hooks:
            old = hooks[event.url]
            hooks[event.url] = Subscription(old.url, event.secret, old.events)

    def of(self, account: str) -> list[Subscription]:
        return list(self.by_account.get(_account_id(account), {}).values())


def deliveries_for(
    notification: Notification, event: Any, subscriptions: Sequence[Subscription], url: str | None = None
) -> list[Delivery]:
    """The POSTs one source event makes: one per subscribed URL (only `url` when given)."""
    kind = SOURCE_KINDS[notification.topic]
    source_id = UUID(str(event.originator_id))
    version = int(event.originator_version)
    webhook_id = webhook_message_id(source_id, version)
    payload = webhooks.body(kind, event.__dict__)
    return [
        Delivery(
            position=notification.id,
            account=event.account,
            url=hook.url,
            secret=hook.secret,
            kind=kind,
            webhook_id=webhook_id,
            body=payload,
            source_id=source_id,
            source_version=version,
            message_id=event.message_id,
        )
        for hook in sorted(subscriptions, key=lambda h: h.url)
        if kind in hook.events and (url is None or hook.url == url)
    ]


class Poster:
    """POSTs one delivery until a 2xx, retrying with exponential backoff for `webhook_retry_for`."""

    def __init__(self, settings: Settings, client: HttpClient, clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.client = client
        self.clock = clock
        self._limiters: dict[str, trio.CapacityLimiter] = {}

    def limiter(self, url: str) -> trio.CapacityLimiter:
        if url not in self._limiters:
            self._limiters[url] = trio.CapacityLimiter(self.settings.webhook_concurrency)
        return self._limiters[url]

    async def post(self, delivery: Delivery) -> WebhookOutcome:
        settings = self.settings
        delays = webhooks.retry_delays(settings.webhook_backoff, settings.webhook_backoff_max)
        started = trio.current_time()
        attempts = 0
        while True:
            attempts += 1
            status: int | None = None
            error: str | None
            try:
                async with self.limiter(delivery.url):
                    headers = webhooks.signed_headers(delivery.secret, delivery.webhook_id, delivery.body, self.clock())
                    response = await self.client.post(delivery.url, delivery.body, headers)
                status = response.status
                error = None if 200 <= status < 300 else f"HTTP {status}"
            except trio.TooSlowError:
                error = f"no response within {settings.webhook_timeout:g}s"
            except (HttpError, OSError, h11.ProtocolError, trio.BrokenResourceError, ValueError) as failure:
                # Refused, reset, TLS handshake failed, malformed answer, a URL that cannot be used.
                error = f"{type(failure).__name__}: {failure}"
            if error is None:
                return self._outcome(delivery, attempts, status, None)
            delay = next(delays)
            if trio.current_time() + delay - started > settings.webhook_retry_for:
                log.warning(
                    "webhook account=%s url=%s id=%s given up after %d attempts: %s",
                    delivery.account, delivery.url, delivery.webhook_id, attempts, error,
                )
                return self._outcome(delivery, attempts, status, error)
            log.info(
                "webhook account=%s url=%s id=%s attempt %d failed (%s); retry in %gs",
                delivery.account, delivery.url, delivery.webhook_id, attempts, error, delay,
            )
            await trio.sleep(delay)

    def _outcome(self, delivery: Delivery, attempts: int, status: int | None, error: str | None) -> WebhookOutcome:
        return WebhookOutcome(
            account=delivery.account,
            url=delivery.url,
            webhook_id=delivery.webhook_id,
            kind=delivery.kind,
            source_id=delivery.source_id,
            source_version=delivery.source_version,
            message_id=delivery.message_id,
            attempts=attempts,
            status_code=status,
            error=error,
            at=self.clock().isoformat(),
        )


class Lanes:
    """One lane per (URL, message): its deliveries go one after the other, lanes in parallel."""

    def __init__(
        self, nursery: trio.Nursery, poster: Poster, on_settled: Callable[[Settled], Awaitable[None]]
    ) -> None:
        self.nursery = nursery
        self.poster = poster
        self.on_settled = on_settled
        self._lanes: dict[tuple[str, str], deque[Delivery]] = {}

    def add(self, delivery: Delivery) -> None:
        key = (delivery.url, delivery.message_id)
        lane = self._lanes.get(key)
        if lane is not None:
            lane.append(delivery)
            return
        self._lanes[key] = deque([delivery])
        self.nursery.start_soon(self._run, key)

    async def _run(self, key: tuple[str, str]) -> None:
        lane = self._lanes[key]
        try:
            while lane:
                outcome = await self.poster.post(lane[0])
                await self.on_settled(Settled(lane[0], outcome))
                lane.popleft()
        finally:
            del self._lanes[key]


class PositionStore(Protocol):
    """Where the sender keeps its position: `Tracking` (one node) or eventstore.webhook_tracking."""

    def load(self) -> tuple[int, set[tuple[int, str]]]: ...

    def save(self, position: int, settled: Sequence[tuple[int, str]]) -> None: ...

    def close(self) -> None: ...


class Tracking:
    """`DATA/webhooks.db`: the position up to which every POST is settled, and the (position, URL)
    pairs settled above it. Used from one worker thread at a time."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS position (id INTEGER PRIMARY KEY CHECK (id = 1), position INTEGER NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS settled (position INTEGER NOT NULL, url TEXT NOT NULL, PRIMARY KEY (position, url))")

    def load(self) -> tuple[int, set[tuple[int, str]]]:
        row = self.db.execute("SELECT position FROM position WHERE id = 1").fetchone()
        settled = {(int(p), str(u)) for p, u in self.db.execute("SELECT position, url FROM settled")}
        return (int(row[0]) if row else 0), settled

    def save(self, position: int, settled: Sequence[tuple[int, str]]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO position (id, position) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET position = excluded.position", [position])
            self.db.executemany("INSERT OR IGNORE INTO settled (position, url) VALUES (?, ?)", [(p, u) for p, u in settled if p > position])
            self.db.execute("DELETE FROM settled WHERE position <= ?", [position])

    def close(self) -> None:
        self.db.close()


class WebhookSender:
    """The follower. `poke()` after a write wakes it; it also polls (other processes write)."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: SmsStore,
        writer: StoreClient,
        clock: Callable[[], datetime],
        client: HttpClient | None = None,
        leases: Leases | None = None,
        open_tracking: Callable[[], PositionStore] | None = None,
    ) -> None:
        """Several nodes: `leases` and `open_tracking` (the position in the store, eventstore/webhook_tracking.py)."""
        self.settings = settings
        self.store = store
        self.writer = writer
        self.client = client or HttpClient(timeout=settings.webhook_timeout)
        self.poster = Poster(settings, self.client, clock)
        self.subscriptions = Subscriptions()
        self._wake = trio.Event()
        self._read_position = 0
        self._open: dict[int, int] = {}  # position -> POSTs not settled yet
        self._settled: set[tuple[int, str]] = set()
        self._room = trio.Semaphore(MAX_PENDING)
        self.leases = leases
        self.open_tracking = open_tracking

    def poke(self) -> None:
        self._wake.set()

    @property
    def committed(self) -> int:
        """Every POST at or below this position is settled."""
        return min(self._open) - 1 if self._open else self._read_position

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the log until cancelled. With `leases` (several nodes), only while this node
        holds the lease `webhooks`: it waits for it, sends from the position in the store, and
        stops the moment the lease is lost (POSTs in flight are sent again by the next holder).

        Resource handling: the tracking database and the HTTP connections close on exit.
        Error handling: a failing POST is retried, then recorded failed; a failing read or record
        is logged and tried again (the position only moves once outcomes are recorded).
        """
        try:
            if self.leases is None or self.open_tracking is None:
                await self._send(Tracking(self.settings.webhooks_db), task_status=task_status)
                return
            task_status.started()
            while True:
                while not await trio.to_thread.run_sync(self.leases.try_hold, LEASE):  # noqa: ASYNC110 - another node holds it
                    await trio.sleep(LEASE_INTERVAL)
                log.info("webhook sender: lease taken, sending from the position in the store")
                try:
                    tracking = await trio.to_thread.run_sync(self.open_tracking)
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._watch_lease, nursery.cancel_scope)
                        await nursery.start(self._send, tracking)
                except Exception:
                    log_failure(log, "webhook sender failed; trying again")
                    await trio.sleep(LEASE_INTERVAL)
        finally:
            with trio.CancelScope(shield=True):
                await self.client.aclose()

    async def _watch_lease(self, scope: trio.CancelScope) -> None:
        assert self.leases is not None
        while True:
            await trio.sleep(LEASE_INTERVAL)
            if not await trio.to_thread.run_sync(self.leases.check) or not self.leases.holds(LEASE):
                log.warning("webhook sender: lease lost; stopped")
                scope.cancel()
                return

    async def _send(self, tracking: PositionStore, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send from `tracking`'s position until cancelled; closes `tracking`."""
        self.subscriptions = Subscriptions()
        self._open = {}
        self._room = trio.Semaphore(MAX_PENDING)
        outcomes_send, outcomes_receive = trio.open_memory_channel[Settled](OUTCOMES_BUFFER)
        try:
            position, self._settled = await trio.to_thread.run_sync(tracking.load)
            self._read_position = position
            await trio.to_thread.run_sync(self._read_subscriptions, position)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._record, outcomes_receive, tracking)
                lanes = Lanes(nursery, self.poster, outcomes_send.send)
                task_status.started()
                while True:
                    try:
                        await self._follow(lanes)
                    except Exception:
                        log_failure(log, "webhook sender: reading the log failed")
                    with trio.move_on_after(POLL_INTERVAL):
                        await self._wake.wait()
                    self._wake = trio.Event()
        finally:
            tracking.close()

    def _read_subscriptions(self, stop: int) -> None:
        after = 0
        while after < stop:
            notifications = self.store.notifications(after, READ_LIMIT, SUBSCRIPTION_TOPICS, stop=stop)
            for notification in notifications:
                self.subscriptions.apply(self.store.mapper.to_domain_event(notification))
            if len(notifications) < READ_LIMIT:
                return
            after = notifications[-1].id

    def _read(self) -> tuple[list[tuple[Notification, Any]], int | None]:
        """The next relevant events, and how far the log was read when that was all of them (so
        the next read starts there: rows of other topics, such as a big file's MessageQueued,
        are scanned once, not again after every write)."""
        stop = self.store.last_position()
        if not self.subscriptions:
            # Nobody has a webhook: nothing up to `stop` makes a POST, but a subscription on the
            # way might. Read only those; from the first one on, everything again.
            found = self.store.notifications(self._read_position, 1, SUBSCRIPTION_TOPICS, stop=stop)
            if not found:
                return [], stop
            self._read_position = found[0].id - 1
        notifications = self.store.notifications(self._read_position, READ_LIMIT, TOPICS, stop=stop)
        events = [(n, self.store.mapper.to_domain_event(n)) for n in notifications]
        return events, stop if len(notifications) < READ_LIMIT else None

    async def _follow(self, lanes: Lanes) -> None:
        while True:
            batch, read_to = await trio.to_thread.run_sync(self._read)
            for notification, event in batch:
                if notification.topic in SUBSCRIPTION_TOPICS:
                    self.subscriptions.apply(event)
                elif subscriptions := self.subscriptions.of(event.account):
                    for delivery in deliveries_for(notification, event, subscriptions):
                        if (delivery.position, delivery.url) in self._settled:
                            continue  # settled before a restart
                        await self._room.acquire()
                        self._open[delivery.position] = self._open.get(delivery.position, 0) + 1
                        lanes.add(delivery)
                self._read_position = notification.id
            if read_to is not None:
                self._read_position = max(self._read_position, read_to)
                return

    async def _record(self, outcomes: trio.MemoryReceiveChannel[Settled], tracking: PositionStore) -> None:
        with outcomes:
            while True:
                group = [await outcomes.receive()]
                with trio.move_on_after(GROUP_WAIT):
                    while len(group) < GROUP:
                        group.append(await outcomes.receive())
                await self._record_group(group, tracking)

    async def _record_group(self, group: list[Settled], tracking: PositionStore) -> None:
        while True:
            try:
                await self.writer.run(
                    partial(SmsStore.record_webhook_outcomes, outcomes=[s.outcome for s in group])
                )
                break
            except Exception:
                log_failure(log, "webhook sender: recording %d outcomes failed; trying again", len(group))
                await trio.sleep(1.0)
        for settled in group:
            position = settled.delivery.position
            self._open[position] -= 1
            if not self._open[position]:
                del self._open[position]
            self._room.release()
        committed = self.committed
        pairs = [(s.delivery.position, s.delivery.url) for s in group]
        self._settled = {pair for pair in self._settled if pair[0] > committed}
        self._settled.update(pair for pair in pairs if pair[0] > committed)
        try:
            await trio.to_thread.run_sync(tracking.save, committed, pairs)
        except Exception:  # sqlite3.Error, psycopg.Error: the next group saves it
            log_failure(log, "webhook sender: saving the position failed (outcomes are recorded)")


# ---- replay -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayBound:
    """`--since` / `--until`: a notification position (digits) or an ISO time (the events' `at`)."""

    position: int | None = None
    time: datetime | None = None

    @classmethod
    def parse(cls, text: str) -> ReplayBound:
        if text.isdigit():
            return cls(position=int(text))
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return cls(time=moment)


@dataclass
class ReplaySummary:
    events: int = 0
    delivered: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"events": self.events, "delivered": self.delivered, "failed": self.failed}


def replay_pages(
    store: SmsStore, account: str, since: ReplayBound, until: ReplayBound | None, url: str | None
) -> Iterator[list[Delivery]]:
    """The POSTs a range makes, to the account's current webhooks (or `url` only), a page of the
    log at a time: a replay of millions of events never holds them all."""
    hooks = [
        Subscription(hook_url, hook["secret"], frozenset(hook["events"]))
        for hook_url, hook in store.account(account).webhooks.items()
    ]
    after = max(since.position - 1, 0) if since.position is not None else 0
    stop = until.position if until is not None and until.position is not None else None
    while True:
        notifications = store.notifications(after, READ_LIMIT, tuple(SOURCE_KINDS), stop=stop)
        page: list[Delivery] = []
        for notification in notifications:
            event = store.mapper.to_domain_event(notification)
            at = datetime.fromisoformat(event.at)  # type: ignore[attr-defined]
            if event.account != account:  # type: ignore[attr-defined]
                continue
            if since.time is not None and at < since.time:
                continue
            if until is not None and until.time is not None and at > until.time:
                continue
            page.extend(deliveries_for(notification, event, hooks, url))
        yield page
        if len(notifications) < READ_LIMIT:
            return
        after = notifications[-1].id


async def replay_webhooks(
    pages: Iterator[list[Delivery]],
    *,
    settings: Settings,
    clock: Callable[[], datetime],
    progress: Callable[[int, int], None] = lambda done, read: None,
    client: HttpClient | None = None,
) -> dict[str, ReplaySummary]:
    """POST every delivery again (same ids, same bodies, in order per message; retried like the
    sender does). Pages are read in a worker thread while earlier ones are being sent; `progress`
    gets (settled, read so far) about once a second. Returns a summary per URL; the caller
    records the WebhookReplay events."""
    client = client or HttpClient(timeout=settings.webhook_timeout)
    poster = Poster(settings, client, clock)
    summaries: dict[str, ReplaySummary] = {}
    done = read = 0
    last_shown = -math.inf
    room = trio.Semaphore(MAX_PENDING)

    async def on_settled(settled: Settled) -> None:
        nonlocal done, last_shown
        summary = summaries[settled.delivery.url]
        if settled.outcome.error is None:
            summary.delivered += 1
        else:
            summary.failed += 1
        done += 1
        room.release()
        if trio.current_time() - last_shown >= 1.0:
            last_shown = trio.current_time()
            progress(done, read)

    try:
        async with trio.open_nursery() as nursery:
            lanes = Lanes(nursery, poster, on_settled)
            while (page := await trio.to_thread.run_sync(next, pages, None)) is not None:
                for delivery in page:
                    summaries.setdefault(delivery.url, ReplaySummary()).events += 1
                    read += 1
                    await room.acquire()
                    lanes.add(delivery)
        progress(done, read)
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()
    return summaries


class ReplayRefused(Exception):
    """A replay that cannot start: bad bounds, no such webhook."""


def replay_range(
    settings: Settings,
    username: str,
    since: str,
    until: str | None,
    url: str | None,
    progress: Callable[[int, int], None] = lambda done, read: None,
) -> dict[str, Any]:
    """POST a range of an account's events again (the CLI's `webhook replay` and the REST API's),
    in this thread with its own store and trio loop; the run is recorded on each webhook's log.
    Returns {"webhooks": {url: counts}, "events", "delivered", "failed"}."""
    from eventstore.store import open_store

    try:
        since_bound = ReplayBound.parse(since)
        until_bound = ReplayBound.parse(until) if until else None
    except ValueError:
        raise ReplayRefused("since/until take a notification position (digits) or an ISO time") from None
    store = open_store(settings.data_dir, settings.store)
    try:
        hooks = store.account(username).webhooks
        if url is not None and url not in hooks:
            raise ReplayRefused(f"{username} has no webhook {url}")
        if not hooks:
            raise ReplayRefused(f"{username} has no webhooks")
        pages = replay_pages(store, username, since_bound, until_bound, url)
        summaries = trio.run(partial(replay_webhooks, pages, settings=settings, clock=_utc_now, progress=progress))
        at = _utc_now().isoformat()
        for hook_url in sorted(hooks if url is None else [url]):
            summary = summaries.get(hook_url)
            counts = summary.as_dict() if summary else {"events": 0, "delivered": 0, "failed": 0}
            store.record_webhook_replay(username, hook_url, since=since, until=until, at=at, **counts)
    finally:
        store.close()
    result = {hook_url: summary.as_dict() for hook_url, summary in sorted(summaries.items())}
    total = {key: sum(s[key] for s in result.values()) for key in ("events", "delivered", "failed")}
    return {"webhooks": result, **total}


def _utc_now() -> datetime:
    return datetime.now(UTC)
