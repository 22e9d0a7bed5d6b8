"""The event store application: every command that changes state, as get → mutate → save.

Synchronous (the eventsourcing API is); trio code reaches it through the writer actor or
`trio.to_thread.run_sync`. Several processes may share one store (the server and the admin CLI):
commands on shared aggregates retry on a version conflict.

The store boundary (issue 10 §1). `eventstore/` is the only package that speaks to the event store,
and SmsStore offers *intents*: what happened, never how to store it. The hot path's intents write
the rows themselves where the backend takes rows, else through aggregates and save():

- `queue_batches(batches)`: pass 2's contact batches (spool lines, eventstore.contact_rows
  SpooledBatch) as ContactBatch events, batches already stored skipped;
- `record_submissions(rows, events, refunds)`: the dispatcher's progress: MessageSubmitted and
  MessageExpired as rows-to-be (eventstore.dispatch_rows PendingRow, backend-neutral: an event's
  state before encoding), the dispatch logs' other events, then `refund_expired(refunds)`;
- `refund_expired(refunds)`: expired or cancelled parts back to their accounts (CreditsRefunded);
- `record_reports(reports, optout_words=...)`: receipts and replies already matched to their
  messages (eventstore.reports) as DeliveryReported / ReplyReceived, with the opt-outs and the
  automatic answers they bring, in one transaction.

Which path a store takes is decided here (`writes_batch_rows`): rows on SQLite
(eventstore.recorder) and on PostgreSQL (eventstore.pg_recorder: COPY under eventsourcing's own
table lock), each held byte-identical to the aggregate path by tests/test_contact_rows.py and
tests/test_dispatch_rows.py on both backends; the aggregate path for stores that compress or
encrypt. Actors hold actors.writer.StoreClient, whose methods are these intents.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Notification, Transcoder
from eventsourcing.utils import EnvType

from eventstore import dispatch_rows
from eventstore.contact_rows import (
    BatchRows,
    QueuedBatch,
    QueuedMessage,
    Row,
    SpooledBatch,
    batch_aggregate,
    read_queued_batch,
)
from eventstore.dispatch_rows import PendingRow
from eventstore.domain import (
    ROUTES_ID,
    Account,
    AccountName,
    ApiKey,
    ContactBatch,
    DispatchLog,
    DomainError,
    File,
    FileName,
    LoginRecord,
    Routes,
    Validation,
    WebhookLog,
    account_id,
    account_name_id,
    api_key_id,
    batch_id,
    dispatch_log_id,
    file_id,
    file_name_id,
    login_record_id,
    validation_id,
    webhook_log_id,
)
from eventstore.pg_connection import connect
from eventstore.pg_recorder import RowsPostgresApplicationRecorder
from eventstore.recorder import BatchingSQLiteApplicationRecorder
from eventstore.reports import DeliveryRecorder, Report, ReportsRecorded
from eventstore.transcoder import OrjsonTranscoder
from sftpsms.names import BadName, check_account_name

T = TypeVar("T")
A = TypeVar("A", bound=Aggregate)
Refund = tuple[str, str, str]  # (account, file id, reason): credits given back for expired parts

DUPLICATE_WINDOW = timedelta(hours=48)
CONFLICT_RETRIES = 20


class UnknownAccount(DomainError):
    pass


class AccountExists(DomainError):
    pass


class InvalidAccountName(DomainError):
    pass


class UnknownApiKey(DomainError):
    pass


@dataclass(frozen=True)
class WebhookOutcome:
    """How one webhook POST ended: delivered (status_code 2xx, error None) or given up (error)."""

    account: str
    url: str
    webhook_id: str
    kind: str
    source_id: UUID
    source_version: int
    message_id: str
    attempts: int
    status_code: int | None
    error: str | None
    at: str


@dataclass(frozen=True)
class Receipt:
    """The outcome of recording that a file arrived."""

    file_id: UUID
    duplicate_of: str | None  # set when the name was processed within 48 h (or is still in flight)
    resumed: bool  # the same receipt was already recorded (a restart picks it up again)


@dataclass(frozen=True)
class Attempt:
    """What SmsStore.start_processing decided: run attempt `number`, or (None) stop trying."""

    number: int | None
    failed_attempts: int
    last_failure: str | None


STORE_VARIABLE = "SFTPSMS_STORE"  # the event store's URL; empty: SQLite in the data directory


class StoreUrlError(ValueError):
    """A --store / SFTPSMS_STORE that names no store we can open."""


def postgres_env(url: str) -> dict[str, str]:
    """eventsourcing's postgres settings from `postgresql://USER[:PASSWORD]@HOST[:PORT]/DB[?schema=S]`."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres") or not parts.hostname or not parts.path.strip("/"):
        raise StoreUrlError(f"{url!r} is not postgresql://USER@HOST:PORT/DATABASE")
    query = parse_qs(parts.query)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": unquote(parts.path.strip("/")),
        "POSTGRES_HOST": parts.hostname,
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_CONNECT_TIMEOUT": "10",
        "POSTGRES_LOCK_TIMEOUT": "30",
        "POSTGRES_POOL_SIZE": "4",
        "POSTGRES_MAX_OVERFLOW": "8",
        "APPLICATION_RECORDER_TOPIC": "eventstore.pg_recorder:RowsPostgresApplicationRecorder",
    }
    if query.get("schema"):
        env["POSTGRES_SCHEMA"] = query["schema"][0]
    return env


PER_DATA_DIR = "per-data-dir"  # ?schema=per-data-dir[-TAG]: a schema named after the data directory (test suites)


def store_env(data_dir: Path, store: str | None = None) -> dict[str, str]:
    """Environment of the event store: `store` is a PostgreSQL URL (several nodes share it), or
    empty for the embedded default, one SQLite file in the data directory."""
    if store:
        env = postgres_env(store)
        schema = env.get("POSTGRES_SCHEMA", "")
        if schema == PER_DATA_DIR or schema.startswith(PER_DATA_DIR + "-"):
            # per-data-dir-TAG: the tag (letters, digits) names one test run's schemas, so a run
            # drops its own and never another's
            tag = "".join(c for c in schema[len(PER_DATA_DIR) + 1:] if c.isalnum())[:16]
            digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:20]
            env["POSTGRES_SCHEMA"] = f"sftpsms_t_{tag}_{digest}" if tag else f"sftpsms_t_{digest}"
        return env
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(data_dir / "events.db"),
        "SQLITE_LOCK_TIMEOUT": "30",
        "APPLICATION_RECORDER_TOPIC": "eventstore.recorder:BatchingSQLiteApplicationRecorder",
    }


@dataclass(frozen=True)
class Changes:
    """What SmsStore.changes found: read up to `position`, `count` events, by these aggregates
    (ids in hex, in no particular order), and the state of the events asked for in full."""

    position: int
    count: int
    originators: list[str]
    states: list[tuple[str, str, dict[str, Any]]]  # (originator, topic, state), in log order


def _state(event: Any) -> dict[str, Any]:
    """An event's stored state: its attributes but the originator's id and version."""
    return {k: v for k, v in vars(event).items() if k not in ("originator_id", "originator_version")}


def name_duplicate_of(index: FileName, now: datetime) -> str | None:
    """Why a new upload of the name `index` counts is a duplicate: a receipt still in flight (never
    send both), or one processed within DUPLICATE_WINDOW of `now`; None when it is not."""
    if index.pending is not None:
        return index.pending
    if index.last_processed_at is not None:
        last = datetime.fromisoformat(index.last_processed_at)
        if now - last < DUPLICATE_WINDOW:
            return index.last_processed_at
    return None


def open_store(data_dir: Path, store: str | None = None) -> SmsStore:
    """The event store: `store`'s URL, else SFTPSMS_STORE's, else SQLite in the data directory
    (created if missing)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    url = store if store is not None else os.environ.get(STORE_VARIABLE, "")
    env = store_env(data_dir, url)
    if env["PERSISTENCE_MODULE"] != "eventsourcing.postgres":
        return SmsStore(env=env)
    with creating_tables(env):
        return SmsStore(env=env)


@contextmanager
def creating_tables(env: Mapping[str, str]) -> Iterator[None]:
    """Hold PostgreSQL's lock on making the store's schema and tables: nodes starting at the same
    moment would otherwise race in CREATE TABLE IF NOT EXISTS (a duplicate pg_type row, "tuple
    concurrently updated"). eventsourcing makes its tables in POSTGRES_SCHEMA but not the schema
    itself: made here first."""
    from psycopg import sql

    from eventstore.leases import lock_id

    schema = env.get("POSTGRES_SCHEMA", "")
    with connect(env, "sftpsms-tables") as connection:
        lock = lock_id(f"{schema}:store-tables")
        connection.execute("SELECT pg_advisory_lock(%s)", (lock,))
        try:
            if schema:
                connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            yield
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (lock,))


def ensure_schema(env: Mapping[str, str]) -> None:
    """The store's PostgreSQL schema, made if missing."""
    with creating_tables(env):
        pass


class SmsStore(Application[UUID]):
    """Commands over the aggregates of eventstore.domain."""

    name = "sftpsms"
    snapshotting_intervals = {Account: 100, Routes: 100, WebhookLog: 100}  # noqa: RUF012 - eventsourcing's API

    def __init__(self, env: EnvType | None = None) -> None:
        super().__init__(env)
        self._deliveries = DeliveryRecorder()  # record_reports' delivery logs, kept warm

    def construct_transcoder(self) -> Transcoder:
        return OrjsonTranscoder()

    # ---- generic helpers -------------------------------------------------------------------

    def _retrying(self, command: Callable[[], T]) -> T:
        """Run get → mutate → save again when another process saved the same aggregate first."""
        for _ in range(CONFLICT_RETRIES):
            try:
                return command()
            except IntegrityError:
                continue
        return command()

    def get(self, kind: type[A], aggregate_id: UUID) -> A:
        aggregate: Aggregate = self.repository.get(aggregate_id)
        if not isinstance(aggregate, kind):
            raise DomainError(f"{aggregate_id} is a {type(aggregate).__name__}, not a {kind.__name__}")
        return aggregate

    def exists(self, aggregate_id: UUID) -> bool:
        try:
            self.repository.get(aggregate_id)
        except AggregateNotFoundError:
            return False
        return True

    def notifications(
        self, after: int, limit: int, topics: Sequence[str] = (), stop: int | None = None
    ) -> Sequence[Notification]:
        return self.recorder.select_notifications(
            start=after, limit=limit, stop=stop, topics=topics, inclusive_of_start=False
        )

    def changes(
        self, after: int, limit: int, topics: Sequence[str], state_topics: Sequence[str] = ()
    ) -> Changes:
        """Which aggregates have events of `topics` among the next `limit` of them after `after`,
        with the (decoded) state of those of `state_topics`: for followers that need to know what
        changed, not how. On SQLite the database answers it (no object per event); elsewhere it
        is read from the notifications."""
        recorder = self.recorder
        decode = self.mapper.transcoder.decode
        if self.writes_batch_rows and isinstance(recorder, BatchingSQLiteApplicationRecorder):
            last, count, originators, states = recorder.select_changes(after, limit, topics, state_topics)
            return Changes(last, count, originators, [(o, t, decode(state)) for o, t, state in states])
        notifications = self.notifications(after, limit, topics)
        wanted = set(state_topics)
        return Changes(
            notifications[-1].id if notifications else after,
            len(notifications),
            list(dict.fromkeys(UUID(str(n.originator_id)).hex for n in notifications)),
            [(UUID(str(n.originator_id)).hex, n.topic, _state(self.mapper.to_domain_event(n)))
             for n in notifications if n.topic in wanted],
        )

    def last_position(self) -> int:
        return self.recorder.max_notification_id() or 0

    # ---- accounts --------------------------------------------------------------------------

    def create_account(
        self,
        *,
        username: str,
        password_hash: str,
        email: str | None,
        country: str,
        created_at: datetime,
        parent: str | None = None,
    ) -> Account:
        try:
            check_account_name(username)
        except BadName as bad:
            raise InvalidAccountName(str(bad)) from None
        if self.exists(account_id(username)):
            raise AccountExists(f"account {username!r} exists already")
        if self.exists(account_name_id(username)):
            taken = self.get(AccountName, account_name_id(username)).username
            raise AccountExists(f"account {username!r} exists already, spelt {taken!r} (names ignore case)")
        if username != username.lower() and self.exists(account_id(username.lower())):  # made before the index
            raise AccountExists(f"account {username!r} exists already, spelt {username.lower()!r} (names ignore case)")
        account = Account.create(
            username=username,
            password_hash=password_hash,
            email=email,
            country=country,
            created_at=created_at.isoformat(),
            parent=parent,
        )
        aggregates: list[Aggregate] = [account, AccountName.create(username)]
        if parent is not None:
            owner = self.account(parent)
            if owner.parent is not None:
                raise DomainError(f"{parent!r} is a sub-account itself; sub-accounts belong to an account")
            owner.add_sub_account(username)
            aggregates.append(owner)
        try:
            self.save(*aggregates)
        except IntegrityError:
            raise AccountExists(f"account {username!r} exists already") from None
        return account

    def transfer_credits(self, parent: str, sub: str, amount: int) -> tuple[int, int]:
        """From an account to one of its sub-accounts, one event on each side, one transaction."""

        def command() -> tuple[int, int]:
            source, target = self.account(parent), self.account(sub)
            if target.parent != parent:
                raise DomainError(f"{sub!r} is not a sub-account of {parent!r}")
            source.transfer_out(sub, amount)
            target.transfer_in(parent, amount)
            self.save(source, target)
            return int(source.balance), int(target.balance)

        return self._retrying(command)

    def account(self, username: str) -> Account:
        try:
            account = self.get(Account, account_id(username))
        except AggregateNotFoundError:
            raise UnknownAccount(f"no account {username!r}") from None
        return account

    def ledger(self, username: str) -> list[dict[str, Any]]:
        """Every change of an account's credit balance, oldest first, each with the balance after
        it: additions, reservations for files, refunds, transfers (the account's own events)."""
        self.account(username)  # UnknownAccount
        signs: dict[type, tuple[str, int]] = {
            Account.CreditsAdded: ("added", +1), Account.CreditsReserved: ("reserved", -1),
            Account.CreditsRefunded: ("refunded", +1), Account.CreditsTransferredOut: ("transferred_out", -1),
            Account.CreditsTransferredIn: ("transferred_in", +1),
        }
        entries, balance = [], 0
        for stored in self.recorder.select_events(account_id(username)):
            event: Any = self.mapper.to_domain_event(stored)
            kind = signs.get(type(event))
            if kind is None:
                continue
            entry, sign = kind
            amount = sign * int(event.amount)
            balance += amount
            entries.append({
                "version": event.originator_version, "at": event.timestamp.isoformat(), "entry": entry,
                "amount": amount, "balance": balance, "file_id": getattr(event, "file_id", None),
                "counterparty": getattr(event, "to_account", None) or getattr(event, "from_account", None),
                "reason": getattr(event, "reason", None),
            })
        return entries

    def add_credits(self, username: str, amount: int, reason: str = "manual") -> int:
        def command() -> int:
            account = self.account(username)
            account.add_credits(amount, reason)
            self.save(account)
            return int(account.balance)

        return self._retrying(command)

    def change_optouts(self, username: str, add: Iterable[str], remove: Iterable[str] = ()) -> None:
        def command() -> None:
            account = self.account(username)
            account.add_optouts(list(add))
            account.remove_optouts(list(remove))
            self.save(account)

        self._retrying(command)

    def set_sender_policy(self, username: str, allow_custom: bool) -> None:
        def command() -> None:
            account = self.account(username)
            account.set_sender_policy(allow_custom)
            self.save(account)

        self._retrying(command)

    def allow_sender_id(self, username: str, sender_id: str) -> None:
        def command() -> None:
            account = self.account(username)
            account.allow_sender_id(sender_id)
            self.save(account)

        self._retrying(command)

    def set_send_rate(self, username: str, rate: float | None) -> None:
        def command() -> None:
            account = self.account(username)
            account.set_send_rate(rate)
            self.save(account)

        self._retrying(command)

    def set_quiet_hours(self, username: str, window: str | None, days: list[str] | None = None) -> None:
        """QuietHoursSet (window and days as sftpsms.quiet.QuietHours.describe() gives them) or,
        with None, QuietHoursCleared."""

        def command() -> None:
            account = self.account(username)
            account.set_quiet_hours(window, days)
            self.save(account)

        self._retrying(command)

    def set_unicode(self, username: str, enabled: bool) -> bool:
        """Whether the account may send UCS-2; returns whether it changed (UnicodeSet)."""

        def command() -> bool:
            account = self.account(username)
            changed = account.set_unicode(enabled)
            if changed:
                self.save(account)
            return changed

        return self._retrying(command)

    def set_auto_replies(
        self, username: str, help_text: str | None, stop_text: str | None, help_keywords: Sequence[str]
    ) -> bool:
        """The account's HELP/STOP answers; returns whether they changed (AutoRepliesSet)."""

        def command() -> bool:
            account = self.account(username)
            changed = account.set_auto_replies(help_text, stop_text, list(help_keywords))
            if changed:
                self.save(account)
            return changed

        return self._retrying(command)

    def add_ssh_key(self, username: str, public_key: str, fingerprint: str) -> None:
        def command() -> None:
            account = self.account(username)
            account.add_ssh_key(public_key, fingerprint)
            self.save(account)

        self._retrying(command)

    def record_failed_login(
        self, username: str, peer: str, reason: str, now: datetime, locked: Sequence[tuple[str, datetime]] = ()
    ) -> None:
        def command() -> None:
            try:
                record = self.get(LoginRecord, login_record_id(username))
            except AggregateNotFoundError:
                record = LoginRecord.start(username)
            record.failed(peer, reason, now.isoformat())
            for key, until in locked:
                record.locked_out(key, until.isoformat())
            self.save(record)

        self._retrying(command)

    def add_webhook(self, username: str, url: str, secret: str, events: list[str]) -> None:
        def command() -> None:
            account = self.account(username)
            if url in account.webhooks:
                raise DomainError(f"{username} has a webhook {url} already; remove it first")
            account.add_webhook(url, secret, events)
            self.save(account)

        self._retrying(command)

    def rotate_webhook_secret(self, username: str, url: str, secret: str) -> None:
        def command() -> None:
            account = self.account(username)
            account.rotate_webhook_secret(url, secret)
            self.save(account)

        self._retrying(command)

    def webhook_deliveries(self, account: str, url: str, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """The settled POSTs to one webhook, oldest first, after the log version `after`: each
        delivered (with the answer's status) or failed (with the last error), and replay runs."""
        rows = []
        for stored in self.recorder.select_events(webhook_log_id(account, url), gt=after or None, limit=limit):
            event = self.mapper.to_domain_event(stored)
            fields = {k: v for k, v in event.__dict__.items() if k not in ("originator_id", "originator_version", "timestamp")}
            kind = type(event).__name__
            if kind == "WebhookLogStarted":
                continue
            rows.append({"version": event.originator_version, "event": kind, **fields})
        return rows

    def remove_webhook(self, username: str, url: str) -> None:
        def command() -> None:
            account = self.account(username)
            account.remove_webhook(url)
            self.save(account)

        self._retrying(command)

    # ---- webhooks --------------------------------------------------------------------------

    def webhook_log(self, account: str, url: str) -> WebhookLog:
        try:
            return self.get(WebhookLog, webhook_log_id(account, url))
        except AggregateNotFoundError:
            return WebhookLog.start(account=account, url=url)

    def record_webhook_outcomes(self, outcomes: Sequence[WebhookOutcome]) -> None:
        """WebhookDelivered / WebhookFailed for a group of POSTs, one transaction."""

        def command() -> None:
            logs: dict[tuple[str, str], WebhookLog] = {}
            for outcome in outcomes:
                key = (outcome.account, outcome.url)
                if key not in logs:
                    logs[key] = self.webhook_log(outcome.account, outcome.url)
                logs[key].settled(
                    webhook_id=outcome.webhook_id,
                    kind=outcome.kind,
                    source_id=outcome.source_id,
                    source_version=outcome.source_version,
                    message_id=outcome.message_id,
                    attempts=outcome.attempts,
                    status_code=outcome.status_code,
                    error=outcome.error,
                    at=outcome.at,
                )
            if logs:
                self.save(*logs.values())

        self._retrying(command)

    def record_webhook_replay(
        self, account: str, url: str, *, since: str, until: str | None, events: int, delivered: int, failed: int, at: str
    ) -> None:
        def command() -> None:
            log = self.webhook_log(account, url)
            log.replayed(since=since, until=until, events=events, delivered=delivered, failed=failed, at=at)
            self.save(log)

        self._retrying(command)

    # ---- API keys --------------------------------------------------------------------------

    def create_api_key(self, username: str, *, key_id: str, channel: str, secret_hash: str, now: datetime) -> ApiKey:
        """The key and the account's record of it, in one transaction."""

        def command() -> ApiKey:
            account = self.account(username)
            key = ApiKey.create(
                key_id=key_id, account=username, channel=channel, secret_hash=secret_hash, created_at=now.isoformat()
            )
            account.add_api_key(key_id, channel)
            self.save(key, account)
            return key

        return self._retrying(command)

    def api_key(self, key_id: str) -> ApiKey:
        try:
            return self.get(ApiKey, api_key_id(key_id))
        except AggregateNotFoundError:
            raise UnknownApiKey(f"no API key {key_id!r}") from None

    def revoke_api_key(self, key_id: str, now: datetime) -> ApiKey:
        def command() -> ApiKey:
            key = self.api_key(key_id)
            account = self.account(key.account)
            key.revoke(now.isoformat())
            account.remove_api_key(key_id)
            self.save(key, account)
            return key

        return self._retrying(command)

    # ---- routes ----------------------------------------------------------------------------

    def routes(self) -> Mapping[str, str]:
        try:
            routes = self.get(Routes, ROUTES_ID)
        except AggregateNotFoundError:
            return {}
        return dict(routes.prefixes)

    def add_route(self, prefix: str, gateway: str = "simulator") -> None:
        def command() -> None:
            try:
                routes = self.get(Routes, ROUTES_ID)
            except AggregateNotFoundError:
                routes = Routes.create()
            routes.add(prefix, gateway)
            self.save(routes)

        self._retrying(command)

    # ---- files -----------------------------------------------------------------------------

    def receive_file(
        self,
        *,
        account: str,
        name: str,
        size: int,
        fingerprint: str,
        now: datetime,
        envelope: str | None = None,
    ) -> Receipt:
        """Record a file's arrival. A name still in flight resumes that receipt (a restart); a name
        processed within 48 h is recorded and reported as a duplicate."""

        def command() -> Receipt:
            try:
                index = self.get(FileName, file_name_id(account, name))
            except AggregateNotFoundError:
                index = FileName.create(account, name)
            if index.pending is not None:
                pending = self.get(File, UUID(index.pending))
                if pending.fingerprint == fingerprint:
                    return Receipt(UUID(index.pending), duplicate_of=None, resumed=True)
            duplicate_of = name_duplicate_of(index, now)
            receipt = index.receipts + 1
            file = File.create(
                account=account,
                name=name,
                receipt=receipt,
                size=size,
                fingerprint=fingerprint,
                received_at=now.isoformat(),
                envelope=envelope,
            )
            if duplicate_of is None:
                index.receive(file.id, now.isoformat())
            else:
                # A duplicate keeps the in-flight marker of the original untouched.
                index.receive_duplicate(file.id, now.isoformat())
            self.save(index, file)
            return Receipt(file.id, duplicate_of=duplicate_of, resumed=False)

        return self._retrying(command)

    def file(self, file: UUID) -> File:
        return self.get(File, file)

    def would_be_duplicate(self, account: str, name: str, now: datetime) -> str | None:
        """What a new upload of `name` now would be reported a duplicate of (as `receive_file`
        decides it), or None. Reads only: a validation takes no name (issue 12)."""
        try:
            index = self.get(FileName, file_name_id(account, name))
        except AggregateNotFoundError:
            return None
        return name_duplicate_of(index, now)

    def record_validation(self, *, account: str, name: str, received_at: str, **fields: Any) -> bool:
        """FileValidated, once per upload into Validate (a resumed validation records nothing
        again). Returns whether it was recorded now."""
        if self.exists(validation_id(account, name, received_at)):
            return False
        try:
            self.save(Validation.record(account=account, name=name, received_at=received_at, **fields))
        except IntegrityError:
            return False  # recorded meanwhile (another node took the same working folder)
        return True

    def validation(self, account: str, name: str, received_at: str) -> Validation:
        return self.get(Validation, validation_id(account, name, received_at))

    def reject_file(
        self,
        file: UUID,
        code: str,
        detail: str,
        *,
        parse: bool,
        now: datetime,
        contacts: int = 0,
        contact_errors: list[dict[str, Any]] | None = None,
        optouts: int = 0,
    ) -> File:
        """Fail a file as a whole: FileRejected / ParseFailed, FileCompleted, and the name freed."""

        def command() -> File:
            aggregate = self.file(file)
            if aggregate.status == "completed":
                return aggregate
            if aggregate.status == "accepted":
                # Credits are reserved and messages may be queued: finishing is the only way on.
                raise DomainError(f"file {file} is accepted and cannot fail as a whole now")
            if aggregate.status == "received":
                aggregate.reject(
                    code, detail, parse=parse, contacts=contacts, contact_errors=contact_errors, optouts=optouts
                )
            aggregate.complete(now.isoformat())
            index = self.get(FileName, file_name_id(aggregate.account, aggregate.name))
            index.settle(file, processed=False, at=now.isoformat())
            self.save(aggregate, index)
            return aggregate

        return self._retrying(command)

    def accept_file(self, file: UUID, *, credits: int, summary: Mapping[str, Any]) -> File:
        """Accept a file and reserve its credits in one transaction; raises InsufficientBalance."""

        def command() -> File:
            aggregate = self.file(file)
            if aggregate.status != "received":
                return aggregate  # accepted before a restart
            account = self.account(aggregate.account)
            account.reserve_credits(file, credits)
            aggregate.accept(credits=credits, **summary)
            self.save(aggregate, account)
            return aggregate

        return self._retrying(command)

    def save_batches(self, batches: Sequence[ContactBatch]) -> int:
        """Save contact batches in one transaction; batches already stored (a resumed file) are
        skipped, so nothing is queued twice. Returns how many were new. Checked before saving:
        a failed save would already have taken the aggregates' pending events."""
        fresh = [b for b in batches if not self.recorder.select_events(b.id, limit=1)]
        if fresh:
            self.save(*fresh)
        return len(fresh)

    @property
    def writes_batch_rows(self) -> bool:
        """Whether the intents write rows directly (eventstore.contact_rows, dispatch_rows): rows
        are plain output of our JSON transcoder (no compressor, no cipher; contact_rows joins JSON
        bytes) and the recorder inserts rows (SQLite's, or PostgreSQL's with uuid originator ids).
        Asked inside eventstore/ only (and by tests and scripts/chaos.py)."""
        mapper = self.mapper
        return (
            mapper.compressor is None
            and mapper.cipher is None
            and isinstance(mapper.transcoder, OrjsonTranscoder)
            and self._row_recorder() is not None
        )

    def _row_recorder(self) -> BatchingSQLiteApplicationRecorder | RowsPostgresApplicationRecorder | None:
        recorder = self.recorder
        if isinstance(recorder, BatchingSQLiteApplicationRecorder):
            return recorder
        if isinstance(recorder, RowsPostgresApplicationRecorder) and recorder.takes_rows:
            return recorder
        return None

    def row_encoder(self) -> Callable[[Any], bytes]:
        """What turns an event's state dict into stored bytes (for eventstore.contact_rows)."""
        return self.mapper.transcoder.encode

    def save_batch_rows(self, batches: Sequence[BatchRows]) -> int:
        """`save_batches` for batches built as rows (eventstore.contact_rows): one transaction,
        batches already stored are skipped. Returns how many were new."""
        fresh = [b for b in batches if not self.recorder.select_events(b.batch_id, limit=1)]
        if fresh:
            self.save_rows([row for batch in fresh for row in batch.rows])
        return len(fresh)

    def save_rows(self, rows: Sequence[Row]) -> None:
        """Insert ready-made stored-event rows in one transaction (only where `writes_batch_rows`).
        A taken (originator id, version) raises IntegrityError, and nothing is stored."""
        recorder = self._row_recorder()
        assert recorder is not None, "check writes_batch_rows first"
        recorder.insert_rows(rows)

    # ---- the hot path's intents (see the module docstring) -----------------------------------

    def queue_batches(self, batches: Sequence[SpooledBatch]) -> int:
        """Store contact batches from their spool lines in one transaction: as rows where the
        store takes them, else as ContactBatch aggregates; the same events either way. Batches
        already stored (a resumed file) are skipped, so nothing is queued twice. Returns how many
        were new."""
        if self.writes_batch_rows:
            encode = self.row_encoder()
            return self.save_batch_rows([batch.rows(encode) for batch in batches])
        return self.save_batches([batch_aggregate(batch) for batch in batches])

    def record_submissions(
        self, rows: Sequence[PendingRow], events: Sequence[Any] = (), refunds: Mapping[Refund, int] | None = None
    ) -> None:
        """The dispatcher's progress in one transaction: MessageSubmitted / MessageExpired built
        as rows-to-be (eventstore.dispatch_rows) and the dispatch logs' ordinary events
        (DispatchStarted, MessagesHeld, BatchDispatched, ...); then `refund_expired(refunds)`.
        A (log, version) taken already raises IntegrityError and stores nothing of them."""
        if rows and self.writes_batch_rows:
            self.save_rows(dispatch_rows.encode_rows(rows, events, self.mapper, self.row_encoder()))
        elif rows or events:
            self.save(*dispatch_rows.as_events(rows, events))
        if refunds:
            self.refund_expired(refunds)

    def refund_expired(self, refunds: Mapping[Refund, int]) -> None:
        """Give expired parts back: (account, file id, reason) → parts, a CreditsRefunded each
        (sftpsms.credits names the reasons)."""
        for (account, file, reason), parts in refunds.items():

            def command(account: str = account, file: str = file, parts: int = parts, reason: str = reason) -> None:
                aggregate = self.account(account)
                aggregate.refund_credits(UUID(file), parts, reason)
                self.save(aggregate)

            self._retrying(command)

    def record_reports(self, reports: Sequence[Report], *, optout_words: Sequence[str]) -> ReportsRecorded:
        """Receipts and replies matched to their messages (eventstore.reports), in one transaction:
        DeliveryReported (as rows where the store takes them) and ReplyReceived, each message's
        first status only; opt-out replies on their account's list; HELP / STOP answers queued."""
        return self._deliveries.record(self, reports, optout_words=tuple(optout_words))

    def batch_exists(self, file: UUID, number: int) -> bool:
        return self.exists(batch_id(file, number))

    def sealed_batches(self, file: UUID, count: int) -> Iterator[ContactBatch.BatchSealed]:
        """The last event of each batch of a file: counts and contact errors, cheap to read."""
        for number in range(count):
            events = self.events.get(batch_id(file, number), desc=True, limit=1)
            for event in events:
                if isinstance(event, ContactBatch.BatchSealed):
                    yield event

    def complete_file(self, file: UUID, now: datetime) -> File:
        def command() -> File:
            aggregate = self.file(file)
            if aggregate.status == "completed":
                return aggregate
            aggregate.complete(now.isoformat())
            index = self.get(FileName, file_name_id(aggregate.account, aggregate.name))
            index.settle(file, processed=aggregate.outcome == "processed", at=now.isoformat())
            self.save(aggregate, index)
            return aggregate

        return self._retrying(command)

    def record_notification(
        self, file: UUID, to: str, via: str, now: datetime, *, attempts: int = 1, error: str | None = None
    ) -> None:
        def command() -> None:
            aggregate = self.file(file)
            if error is None:
                aggregate.notification_sent(to, via, now.isoformat(), attempts)
            else:
                aggregate.notification_failed(to, via, now.isoformat(), attempts, error)
            self.save(aggregate)

        self._retrying(command)

    def start_processing(self, file: UUID, *, position: int, now: datetime, max_failures: int) -> Attempt:
        """Record a new attempt at a file before any work on it (an attempt a crash left open is
        ended first, counted as failed unless it made progress). A file that failed
        `max_failures` times gets no new attempt (number None): it is to be quarantined."""

        def command() -> Attempt:
            aggregate = self.file(file)
            aggregate.end_crashed_attempt(position)
            number = None
            if aggregate.failed_attempts < max_failures:
                number = aggregate.start_processing(position, now.isoformat())
            self.save(aggregate)
            return Attempt(number, aggregate.failed_attempts, aggregate.last_failure)

        return self._retrying(command)

    def end_processing(self, ends: Sequence[tuple[UUID, int]], *, failed: bool, reason: str) -> None:
        """End attempts (file id, attempt number) that did not finish their file, in one transaction."""

        def command() -> None:
            aggregates = []
            for file, attempt in ends:
                aggregate = self.file(file)
                aggregate.end_processing(attempt, failed=failed, reason=reason)
                aggregates.append(aggregate)
            self.save(*aggregates)

        self._retrying(command)

    def release_processing(self, file: UUID, now: datetime) -> File:
        """Forgive a held file's failed attempts, so recovery tries it again."""

        def command() -> File:
            aggregate = self.file(file)
            aggregate.release_processing(now.isoformat())
            self.save(aggregate)
            return aggregate

        return self._retrying(command)

    def file_by_name(self, account: str, name: str, receipt: int | None = None) -> File:
        if receipt is None:
            receipt = self.get(FileName, file_name_id(account, name)).receipts
        return self.file(file_id(account, name, receipt))

    # ---- dispatch --------------------------------------------------------------------------

    def batch(self, batch: UUID) -> ContactBatch:
        return self.get(ContactBatch, batch)

    def queued_batch(self, batch: UUID) -> QueuedBatch:
        """A batch's opening fields and queued messages, for sending. Read from the stored rows
        where they are plain JSON (eventstore.contact_rows.read_queued_batch), else through the
        aggregate and its events. Raises AggregateNotFoundError for an unknown batch."""
        if self.writes_batch_rows:
            stored = self.recorder.select_events(batch)
            if not stored:
                raise AggregateNotFoundError(batch)
            return read_queued_batch(batch, [(s.topic, s.state) for s in stored])
        aggregate = self.batch(batch)
        return QueuedBatch(
            batch_id=batch,
            file_id=aggregate.file_id,
            account=aggregate.account,
            sender_id=aggregate.sender_id,
            not_before=aggregate.not_before,
            expires_at=aggregate.expires_at,
            messages=[
                QueuedMessage(e.index, e.msisdn, e.customer_id, e.text, e.parts)
                for e in self.events.get(batch)
                if isinstance(e, ContactBatch.MessageQueued)
            ],
            gateway=aggregate.gateway,
        )

    def dispatch_log(self, batch: ContactBatch | QueuedBatch) -> DispatchLog:
        batch_id = batch.id if isinstance(batch, ContactBatch) else batch.batch_id
        try:
            return self.get(DispatchLog, dispatch_log_id(batch_id))
        except AggregateNotFoundError:
            return DispatchLog.start(batch=batch_id, file=UUID(batch.file_id), account=batch.account)

    def record_dispatch(self, log: DispatchLog, account: Account | None = None) -> None:
        """Save a dispatch log's pending events (and a refunding account) in one transaction."""
        if account is None:
            self.save(log)
        else:
            self.save(log, account)
