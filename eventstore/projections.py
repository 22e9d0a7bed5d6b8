"""Read models: sqlite-utils tables projected from the notification log, rebuildable at will.

A projection follows the log from its stored position and writes its rows and its new position in
one transaction (`BEGIN IMMEDIATE`), so any number of processes and threads may catch it up
concurrently: each one re-reads the position inside the transaction, and an already-applied
position is simply not selected again. Queueing events (MessageQueued, ...) are not projected
here; they stay in their batch aggregates, which the dispatcher and reports read directly. Each
MessageSubmitted is, into `gateway_ids` and `last_sent`: receipts and replies are matched there.
`deliveries` counts, per batch, messages submitted and final statuses reported (and when the
first was submitted): a batch with fewer reported than submitted has messages awaiting their
receipts, which actors/expiry.py looks at once their validity period may have passed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import sqlite_utils
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from eventstore.domain import (
    Account,
    ApiKey,
    ContactBatch,
    DeliveryLog,
    DispatchLog,
    File,
    FileControl,
    Routes,
    Validation,
    message_id_text,
)
from eventstore.optouts import find_optouts
from eventstore.store import SmsStore
from sftpsms.errors import ErrorCode
from sftpsms.gatewayids import lookup_keys, stored_key

READ_BATCH = 2000
TRACKING_NAME = "readmodels"
NEWEST_TABLE = "deliveries"  # the schema is created (idempotently) when this table is missing
NEWER_TABLES = ("validations", "file_controls", "quiet_hours", "quiet_counts")  # ... or one of these (added since)

Handler = Callable[[sqlite_utils.Database, Any], None]


def _account_created(db: sqlite_utils.Database, e: Account.AccountCreated) -> None:
    db.table("accounts").insert(
        {
            "username": e.username,
            "email": e.email,
            "country": e.country,
            "created_at": e.created_at,
            "parent": e.parent,
            "balance": 0,
            "allow_custom_sender": 0,
        },
        replace=True,
    )


def _balance_change(sign: int) -> Handler:
    def apply(db: sqlite_utils.Database, e: Any) -> None:
        db.execute(
            "UPDATE accounts SET balance = balance + ? WHERE username = "
            "(SELECT username FROM account_ids WHERE id = ?)",
            [sign * e.amount, str(e.originator_id)],
        )

    return apply


def _optouts_added(db: sqlite_utils.Database, e: Account.OptOutsAdded) -> None:
    account = _username(db, e)
    db.table("optouts").insert_all(
        ({"account": account, "msisdn": m} for m in e.msisdns), replace=True, batch_size=1000
    )


def _optouts_removed(db: sqlite_utils.Database, e: Account.OptOutsRemoved) -> None:
    account = _username(db, e)
    for msisdn in e.msisdns:
        db.execute("DELETE FROM optouts WHERE account = ? AND msisdn = ?", [account, msisdn])


def _sender_policy(db: sqlite_utils.Database, e: Account.SenderPolicyChanged) -> None:
    db.execute(
        "UPDATE accounts SET allow_custom_sender = ? WHERE username = ?",
        [int(e.allow_custom), _username(db, e)],
    )


def _username(db: sqlite_utils.Database, e: Any) -> str:
    row = db.execute("SELECT username FROM account_ids WHERE id = ?", [str(e.originator_id)]).fetchone()
    return str(row[0])


def _account_id(db: sqlite_utils.Database, e: Account.AccountCreated) -> None:
    db.table("account_ids").insert({"id": str(e.originator_id), "username": e.username}, replace=True)


def _route_added(db: sqlite_utils.Database, e: Routes.RouteAdded) -> None:
    db.table("routes").insert({"prefix": e.prefix, "gateway": e.gateway}, replace=True)


def _route_removed(db: sqlite_utils.Database, e: Routes.RouteRemoved) -> None:
    db.execute("DELETE FROM routes WHERE prefix = ?", [e.prefix])


def _api_key_created(db: sqlite_utils.Database, e: ApiKey.ApiKeyCreated) -> None:
    db.table("api_keys").insert(
        {
            "id": str(e.originator_id),
            "key_id": e.key_id,
            "account": e.account,
            "channel": e.channel,
            "created_at": e.created_at,
            "revoked_at": None,
        },
        replace=True,
    )


def _api_key_revoked(db: sqlite_utils.Database, e: ApiKey.ApiKeyRevoked) -> None:
    db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", [e.at, str(e.originator_id)])


def _file_received(db: sqlite_utils.Database, e: File.FileReceived) -> None:
    db.table("files").insert(
        {
            "file_id": str(e.originator_id),
            "account": e.account,
            "name": e.name,
            "receipt": e.receipt,
            "envelope": e.envelope,
            "status": "received",
            "error_code": None,
            "detail": None,
            "contacts": 0,
            "messages_queued": 0,
            "optouts_skipped": 0,
            "contact_errors": 0,
            "parts": 0,
            "credits_used": 0,
            "received_at": e.received_at,
            "completed_at": None,
        },
        replace=True,
    )


def _file_failed(db: sqlite_utils.Database, e: Any) -> None:
    # The counts a failed file's report gives (its contacts, the opt-outs skipped before it failed,
    # its contact errors), so `sftpsms files` says what the report says.
    listed_optouts = sum(1 for error in e.contact_errors if error.get("code") == ErrorCode.OPTOUT)
    db.table("files").update(
        str(e.originator_id),
        {
            "status": "failed",
            "error_code": e.code,
            "detail": e.detail,
            "contacts": e.contacts,
            "optouts_skipped": e.optouts or listed_optouts,
            "contact_errors": len(e.contact_errors) - listed_optouts,
        },
    )


def _file_accepted(db: sqlite_utils.Database, e: File.FileAccepted) -> None:
    db.table("files").update(
        str(e.originator_id),
        {
            "status": "accepted",
            "contacts": e.contacts,
            "messages_queued": e.messages,
            "optouts_skipped": e.optouts,
            "contact_errors": e.rejected,
            "parts": e.parts,
            "credits_used": e.credits,
        },
    )


def _file_completed(db: sqlite_utils.Database, e: File.FileCompleted) -> None:
    db.table("files").update(str(e.originator_id), {"status": e.status, "completed_at": e.completed_at})


def _file_validated(db: sqlite_utils.Database, e: Validation.FileValidated) -> None:
    db.table("validations").insert(
        {
            "validation_id": str(e.originator_id),
            "account": e.account,
            "name": e.name,
            "envelope": e.envelope,
            "sha256": e.sha256,
            "size": e.size,
            "status": e.status,
            "error_code": e.error_code,
            "contacts": e.contacts,
            "would_queue": e.would_queue,
            "optouts_skipped": e.optouts_skipped,
            "contact_errors": e.contact_errors,
            "parts": e.parts,
            "credits_needed": e.credits_needed,
            "received_at": e.received_at,
            "validated_at": e.validated_at,
        },
        replace=True,
    )


def _batch_opened(db: sqlite_utils.Database, e: ContactBatch.BatchOpened) -> None:
    db.table("batches").insert(
        {
            "batch_id": str(e.originator_id),
            "file_id": e.file_id,
            "account": e.account,
            "number": e.number,
            "queued": 0,
            "parts": 0,
            "not_before": e.not_before,
            "expires_at": e.expires_at,
            "sealed": 0,
            "dispatched": 0,
        },
        replace=True,
    )


def _batch_sealed(db: sqlite_utils.Database, e: ContactBatch.BatchSealed) -> None:
    db.table("batches").update(str(e.originator_id), {"queued": e.queued, "parts": e.parts, "sealed": 1})


def _batch_dispatched(db: sqlite_utils.Database, e: DispatchLog.BatchDispatched) -> None:
    db.execute(
        "UPDATE batches SET dispatched = 1 WHERE batch_id = "
        "(SELECT batch_id FROM dispatch_logs WHERE id = ?)",
        [str(e.originator_id)],
    )
    if e.quiet_expired:
        _count_quiet(db, e, 0, e.quiet_expired)


def _messages_held(db: sqlite_utils.Database, e: DispatchLog.MessagesHeld) -> None:
    _count_quiet(db, e, len(e.indexes), 0)


def _count_quiet(db: sqlite_utils.Database, e: Any, held: int, expired: int) -> None:
    """`quiet_counts`: per file, messages held for quiet hours and how many of them expired."""
    db.execute(
        "INSERT INTO quiet_counts (file_id, held, expired) SELECT b.file_id, ?, ? FROM dispatch_logs d"
        " JOIN batches b USING (batch_id) WHERE d.id = ?"
        " ON CONFLICT (file_id) DO UPDATE SET held = held + excluded.held, expired = expired + excluded.expired",
        [held, expired, str(e.originator_id)],
    )


def _dispatch_started(db: sqlite_utils.Database, e: DispatchLog.DispatchStarted) -> None:
    db.table("dispatch_logs").insert({"id": str(e.originator_id), "batch_id": e.batch_id}, replace=True)


def _delivery_started(db: sqlite_utils.Database, e: DeliveryLog.DeliveryStarted) -> None:
    db.table("delivery_logs").insert({"id": str(e.originator_id), "batch_id": e.batch_id}, replace=True)


def _send_rate(db: sqlite_utils.Database, e: Account.SendRateSet) -> None:
    db.execute(
        "UPDATE accounts SET send_rate = ? WHERE username = (SELECT username FROM account_ids WHERE id = ?)",
        [e.rate, str(e.originator_id)],
    )


def _control_started(db: sqlite_utils.Database, e: FileControl.FileControlStarted) -> None:
    db.table("file_controls").insert(
        {"file_id": e.file_id, "account": e.account, "name": e.name, "state": "running", "requested": 0, "applied": 0},
        replace=True,
    )


def _control_requested(state: str) -> Handler:
    def apply(db: sqlite_utils.Database, e: Any) -> None:
        db.execute(
            "UPDATE file_controls SET state = ?, requested = ? WHERE file_id = ?",
            [state, e.originator_version, _control_file(db, e)],
        )

    return apply


def _control_file(db: sqlite_utils.Database, e: Any) -> str | None:
    # A control's id is uuid5(file, "control"): its file is looked up by the id kept at start.
    row = db.execute("SELECT file_id FROM file_control_ids WHERE id = ?", [str(e.originator_id)]).fetchone()
    return None if row is None else str(row[0])


def _control_id(db: sqlite_utils.Database, e: FileControl.FileControlStarted) -> None:
    db.table("file_control_ids").insert({"id": str(e.originator_id), "file_id": e.file_id}, replace=True)


def _control_applied(db: sqlite_utils.Database, e: FileControl.ControlApplied) -> None:
    db.execute(
        "UPDATE file_controls SET applied = MAX(applied, ?) WHERE file_id = ?",
        [e.requested_version, _control_file(db, e)],
    )


def _quiet_hours_set(db: sqlite_utils.Database, e: Account.QuietHoursSet) -> None:
    db.table("quiet_hours").insert(
        {"account": _username(db, e), "quiet_window": e.window, "days": ",".join(e.days)}, replace=True
    )


def _quiet_hours_cleared(db: sqlite_utils.Database, e: Account.QuietHoursCleared) -> None:
    db.execute("DELETE FROM quiet_hours WHERE account = ?", [_username(db, e)])


# Dispatch log id → (batch, file, account): fixed once the log exists, and asked for by every one of
# its MessageSubmitted events (a thousand per batch), so kept instead of queried each time.
_dispatch_origins: dict[UUID, tuple[str, str, str, UUID]] = {}


class Submissions:
    """MessageSubmitted, projected a page at a time: into `gateway_ids` (every id the gateway
    returned, under sftpsms.gatewayids.stored_key) and `last_sent` (the recipient's latest
    message), so receipts and replies that arrive long after the submission still find their
    message. One of these per message sent: the rows are collected and written with one
    executemany per table, and the events are read as plain state dicts where the store allows."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self.ids: list[tuple[Any, ...]] = []
        self.last: list[tuple[Any, ...]] = []
        self.submitted: dict[str, list[Any]] = {}  # batch → [messages submitted, first submitted_at]
        self.reported: dict[str, int] = {}  # delivery log id → final statuses reported

    def add(self, log_id: UUID, e: dict[str, Any]) -> None:
        found = _dispatch_origins.get(log_id)
        if found is None:
            origin = self.db.execute(
                "SELECT b.batch_id, b.file_id, b.account FROM dispatch_logs d JOIN batches b USING (batch_id) "
                "WHERE d.id = ?",
                [str(log_id)],
            ).fetchone()
            if origin is None:  # cannot happen: a batch is projected before it is dispatched
                return
            if len(_dispatch_origins) >= 4096:
                _dispatch_origins.clear()
            found = _dispatch_origins[log_id] = (*origin, UUID(origin[1]))
        batch, file, account, file_uuid = found
        index, gateway, msisdn = e["index"], e["gateway"], e["msisdn"]
        message = message_id_text(file_uuid, index)
        common = (message, batch, file, index, account)
        for key in {f"{gateway}:{stored_key(gateway_id)}" for gateway_id in e["gateway_ids"]}:
            self.ids.append((key, *common, msisdn, e["customer_id"], gateway, e["gateway_id"]))
        self.last.append((msisdn, *common, e["customer_id"], gateway, e["gateway_id"], e["submitted_at"]))
        counted = self.submitted.get(batch)
        if counted is None:
            self.submitted[batch] = [1, e["submitted_at"]]
        else:
            counted[0] += 1
            counted[1] = min(counted[1], e["submitted_at"])

    def add_reported(self, log_id: UUID) -> None:
        """A DeliveryReported (one per message: DeliveryLog records a message's status once)."""
        key = str(log_id)
        self.reported[key] = self.reported.get(key, 0) + 1

    def write(self) -> None:
        if self.ids:
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO gateway_ids (key, message_id, batch_id, file_id, idx, account, msisdn,"
                " customer_id, gateway, gateway_id) VALUES (?,?,?,?,?,?,?,?,?,?)",
                self.ids,
            )
        if self.last:
            self.db.conn.executemany(
                "INSERT OR REPLACE INTO last_sent (msisdn, message_id, batch_id, file_id, idx, account,"
                " customer_id, gateway, gateway_id, submitted_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                self.last,
            )
        if self.submitted:
            self.db.conn.executemany(
                "INSERT INTO deliveries (batch_id, submitted, reported, first_at) VALUES (?, ?, 0, ?)"
                " ON CONFLICT (batch_id) DO UPDATE SET submitted = submitted + excluded.submitted,"
                " first_at = CASE WHEN first_at IS NULL OR excluded.first_at < first_at"
                " THEN excluded.first_at ELSE first_at END",
                [(batch, count, first) for batch, (count, first) in self.submitted.items()],
            )
        if self.reported:
            # A receipt may be recorded before its MessageSubmitted (it overtook the dispatcher's
            # flush): the batch's row may not exist yet.
            self.db.conn.executemany(
                "INSERT INTO deliveries (batch_id, submitted, reported, first_at)"
                " SELECT batch_id, 0, ?, NULL FROM delivery_logs WHERE id = ?"
                " ON CONFLICT (batch_id) DO UPDATE SET reported = reported + excluded.reported",
                [(count, log_id) for log_id, count in self.reported.items()],
            )
        self.ids, self.last, self.submitted, self.reported = [], [], {}, {}


HANDLERS: dict[type[Any], list[Handler]] = {
    Account.AccountCreated: [_account_id, _account_created],
    Account.CreditsAdded: [_balance_change(+1)],
    Account.CreditsReserved: [_balance_change(-1)],
    Account.CreditsRefunded: [_balance_change(+1)],
    Account.CreditsTransferredOut: [_balance_change(-1)],
    Account.CreditsTransferredIn: [_balance_change(+1)],
    Account.OptOutsAdded: [_optouts_added],
    Account.OptOutsRemoved: [_optouts_removed],
    Account.SenderPolicyChanged: [_sender_policy],
    ApiKey.ApiKeyCreated: [_api_key_created],
    ApiKey.ApiKeyRevoked: [_api_key_revoked],
    Routes.RouteAdded: [_route_added],
    Routes.RouteRemoved: [_route_removed],
    File.FileReceived: [_file_received],
    File.FileRejected: [_file_failed],
    File.ParseFailed: [_file_failed],
    File.FileAccepted: [_file_accepted],
    File.FileCompleted: [_file_completed],
    ContactBatch.BatchOpened: [_batch_opened],
    ContactBatch.BatchSealed: [_batch_sealed],
    DispatchLog.DispatchStarted: [_dispatch_started],
    DispatchLog.BatchDispatched: [_batch_dispatched],
    DispatchLog.MessagesHeld: [_messages_held],
    DispatchLog.MessageSubmitted: [],  # Submissions, a page at a time
    DeliveryLog.DeliveryStarted: [_delivery_started],
    DeliveryLog.DeliveryReported: [],  # Submissions.add_reported, a page at a time
    Account.SendRateSet: [_send_rate],
    Validation.FileValidated: [_file_validated],
    FileControl.FileControlStarted: [_control_id, _control_started],
    FileControl.FileCancelled: [_control_requested("cancelled")],
    FileControl.FilePaused: [_control_requested("paused")],
    FileControl.FileResumed: [_control_requested("running")],
    FileControl.ControlApplied: [_control_applied],
    Account.QuietHoursSet: [_quiet_hours_set],
    Account.QuietHoursCleared: [_quiet_hours_cleared],
}
TOPICS = [get_topic(cls) for cls in HANDLERS]
SUBMITTED_TOPIC = get_topic(DispatchLog.MessageSubmitted)
REPORTED_TOPIC = get_topic(DeliveryLog.DeliveryReported)


def _create_schema(db: sqlite_utils.Database) -> None:
    db.table("tracking").create({"name": str, "position": int}, pk="name", if_not_exists=True)
    db.table("account_ids").create({"id": str, "username": str}, pk="id", if_not_exists=True)
    db.table("accounts").create(
        {
            "username": str,
            "email": str,
            "country": str,
            "created_at": str,
            "parent": str,
            "balance": int,
            "allow_custom_sender": int,
            "send_rate": float,
        },
        pk="username",
        if_not_exists=True,
    )
    db.table("optouts").create({"account": str, "msisdn": str}, pk=("account", "msisdn"), if_not_exists=True)
    db.table("routes").create({"prefix": str, "gateway": str}, pk="prefix", if_not_exists=True)
    db.table("files").create(
        {
            "file_id": str,
            "account": str,
            "name": str,
            "receipt": int,
            "envelope": str,
            "status": str,
            "error_code": str,
            "detail": str,
            "contacts": int,
            "messages_queued": int,
            "optouts_skipped": int,
            "contact_errors": int,
            "parts": int,
            "credits_used": int,
            "received_at": str,
            "completed_at": str,
        },
        pk="file_id",
        if_not_exists=True,
    )
    db.table("files").create_index(["account", "received_at"], if_not_exists=True)
    db.table("batches").create(
        {
            "batch_id": str,
            "file_id": str,
            "account": str,
            "number": int,
            "queued": int,
            "parts": int,
            "not_before": str,
            "expires_at": str,
            "sealed": int,
            "dispatched": int,
        },
        pk="batch_id",
        if_not_exists=True,
    )
    db.table("batches").create_index(["dispatched", "sealed", "account"], if_not_exists=True)
    db.table("dispatch_logs").create({"id": str, "batch_id": str}, pk="id", if_not_exists=True)
    db.table("api_keys").create(
        {"id": str, "key_id": str, "account": str, "channel": str, "created_at": str, "revoked_at": str},
        pk="id",
        if_not_exists=True,
    )
    submission = {
        "message_id": str,
        "batch_id": str,
        "file_id": str,
        "idx": int,
        "account": str,
        "msisdn": str,
        "customer_id": str,
        "gateway": str,
        "gateway_id": str,
    }
    db.table("gateway_ids").create({"key": str, **submission}, pk="key", if_not_exists=True)
    db.table("last_sent").create({**submission, "submitted_at": str}, pk="msisdn", if_not_exists=True)
    db.table("delivery_logs").create({"id": str, "batch_id": str}, pk="id", if_not_exists=True)
    db.table("deliveries").create(
        {"batch_id": str, "submitted": int, "reported": int, "first_at": str}, pk="batch_id", if_not_exists=True
    )
    db.table("file_control_ids").create({"id": str, "file_id": str}, pk="id", if_not_exists=True)
    db.table("file_controls").create(
        {"file_id": str, "account": str, "name": str, "state": str, "requested": int, "applied": int},
        pk="file_id",
        if_not_exists=True,
    )
    db.execute(
        "CREATE INDEX IF NOT EXISTS deliveries_awaited ON deliveries (first_at) WHERE reported < submitted"
    )
    db.table("validations").create(
        {
            "validation_id": str,
            "account": str,
            "name": str,
            "envelope": str,
            "sha256": str,
            "size": int,
            "status": str,
            "error_code": str,
            "contacts": int,
            "would_queue": int,
            "optouts_skipped": int,
            "contact_errors": int,
            "parts": int,
            "credits_needed": int,
            "received_at": str,
            "validated_at": str,
        },
        pk="validation_id",
        if_not_exists=True,
    )
    db.table("validations").create_index(["account", "received_at"], if_not_exists=True)
    db.table("quiet_hours").create({"account": str, "quiet_window": str, "days": str}, pk="account", if_not_exists=True)
    db.table("quiet_counts").create({"file_id": str, "held": int, "expired": int}, pk="file_id", if_not_exists=True)


class ReadModels:
    """The read-model database of one data directory. Open one per thread (sqlite3 connections
    are used by the thread that made them), or with `any_thread` for a user that runs in one
    thread at a time but not always the same one (the event writer's commands: trio's worker
    threads take turns)."""

    def __init__(self, path: Path, *, any_thread: bool = False) -> None:
        self.path = path
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=30, check_same_thread=not any_thread)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        self.db = sqlite_utils.Database(conn)
        # Creating (or checking) the schema costs a dozen introspection queries: only when new.
        wanted = (NEWEST_TABLE, *NEWER_TABLES)
        marks = ",".join("?" * len(wanted))
        present = conn.execute(f"SELECT count(*) FROM sqlite_master WHERE name IN ({marks})", wanted).fetchone()[0]
        if present < len(wanted):
            with self._immediate():
                _create_schema(self.db)

    def close(self) -> None:
        self.db.conn.close()

    @contextmanager
    def _immediate(self) -> Iterator[None]:
        self.db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.conn.execute("ROLLBACK")
            raise
        self.db.conn.execute("COMMIT")

    def position(self) -> int:
        row = self.db.execute("SELECT position FROM tracking WHERE name = ?", [TRACKING_NAME]).fetchone()
        return int(row[0]) if row else 0

    def catch_up(self, store: SmsStore, until: int | None = None) -> int:
        """Apply every relevant event up to `until` (default: the log's end). Returns the position."""
        if until is None:
            until = store.last_position()
        if store.writes_batch_rows:  # states are plain transcoder output
            decode = store.mapper.transcoder.decode

            def state(notification: Notification) -> dict[str, Any]:
                return decode(notification.state)  # type: ignore[no-any-return]
        else:

            def state(notification: Notification) -> dict[str, Any]:
                return vars(store.mapper.to_domain_event(notification))

        while True:
            with self._immediate():
                position = self.position()
                if position >= until:
                    return position
                notifications = store.notifications(position, READ_BATCH, TOPICS, stop=until)
                submissions = Submissions(self.db)
                for notification in notifications:
                    if notification.topic == SUBMITTED_TOPIC:
                        submissions.add(notification.originator_id, state(notification))  # type: ignore[arg-type]
                        continue
                    if notification.topic == REPORTED_TOPIC:
                        submissions.add_reported(notification.originator_id)  # type: ignore[arg-type]
                        continue
                    event: DomainEventProtocol[Any] = store.mapper.to_domain_event(notification)
                    for handler in HANDLERS[type(event)]:
                        handler(self.db, event)
                submissions.write()
                # Fewer rows than asked for means nothing relevant is left up to `until`.
                new_position = notifications[-1].id if len(notifications) == READ_BATCH else until
                self.db.execute(
                    "INSERT OR REPLACE INTO tracking (name, position) VALUES (?, ?)",
                    [TRACKING_NAME, new_position],
                )

    def rebuild(self, store: SmsStore) -> int:
        """Drop every read-model table and project the whole log again."""
        with self._immediate():
            for table in self.db.table_names():
                self.db.table(table).drop()
            _create_schema(self.db)
        return self.catch_up(store)

    # ---- queries ---------------------------------------------------------------------------

    def opted_out(self, account: str, msisdns: list[str]) -> set[str]:
        return find_optouts(self.db.conn, account, msisdns)

    def files(self, account: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        where, args = [], []
        if account is not None:
            where.append("account = ?")
            args.append(account)
        if name is not None:
            where.append("name = ?")
            args.append(name)
        return list(
            self.db.table("files").rows_where(
                " AND ".join(where) or None, args, order_by="received_at, receipt"
            )
        )

    def file_row(self, file_id: str) -> dict[str, Any] | None:
        rows = list(self.db.table("files").rows_where("file_id = ?", [file_id], limit=1))
        return rows[0] if rows else None

    def files_page(
        self, account: str, *, name: str | None = None, before: list[Any] | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """An account's files, newest first, after the (received_at, receipt) `before` of the last
        page (the REST API's pages)."""
        where, args = ["account = ?"], [account]
        if name is not None:
            where.append("name = ?")
            args.append(name)
        if before is not None:
            where.append("(received_at, receipt) < (?, ?)")
            args += before
        return list(
            self.db.table("files").rows_where(
                " AND ".join(where), args, order_by="received_at DESC, receipt DESC", limit=limit
            )
        )

    def api_keys(self, account: str) -> list[dict[str, Any]]:
        return list(
            self.db.table("api_keys").rows_where(
                "account = ?", [account], order_by="created_at", select="key_id, channel, created_at, revoked_at"
            )
        )

    def optouts_page(self, account: str, *, after: str = "", limit: int = 1000) -> list[str]:
        rows = self.db.execute(
            "SELECT msisdn FROM optouts WHERE account = ? AND msisdn > ? ORDER BY msisdn LIMIT ?", [account, after, limit]
        )
        return [row[0] for row in rows.fetchall()]

    def validations(self, account: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        """Uploads into Validate and their outcomes (issue 12), oldest first."""
        where, args = [], []
        if account is not None:
            where.append("account = ?")
            args.append(account)
        if name is not None:
            where.append("name = ?")
            args.append(name)
        return list(
            self.db.table("validations").rows_where(
                " AND ".join(where) or None, args, order_by="received_at, name"
            )
        )

    def pending_batches(self, limit: int, after: int = 0) -> list[dict[str, Any]]:
        """Sealed batches not dispatched yet, in the order they were opened (from the row after
        the `after` row id: each row has its `rowid`)."""
        return list(
            self.db.table("batches").rows_where(
                "dispatched = 0 AND sealed = 1 AND queued > 0 AND rowid > ?",
                [after],
                order_by="rowid",
                limit=limit,
                select="rowid, *",
            )
        )

    def file_controls(self) -> list[dict[str, Any]]:
        """Files whose dispatch is paused or cancelled, or has a request not yet honoured."""
        return list(
            self.db.table("file_controls").rows_where("state != 'running' OR applied < requested", order_by="rowid")
        )

    def submission(self, gateway: str, gateway_id: str) -> dict[str, Any] | None:
        """The submitted message a gateway id names, in any spelling (sftpsms.gatewayids)."""
        for key in lookup_keys(gateway_id):
            rows = list(self.db.table("gateway_ids").rows_where("key = ?", [f"{gateway}:{key}"]))
            if rows:
                return rows[0]
        return None

    def awaited_batches(self, submitted_before: str) -> list[dict[str, Any]]:
        """Batches with messages that have no final status yet, whose first message was
        submitted before the given time (ISO 8601, UTC)."""
        return [
            dict(row)
            for row in self.db.query(
                "SELECT batch_id, submitted, reported, first_at FROM deliveries"
                " WHERE reported < submitted AND first_at <= ? ORDER BY first_at",
                [submitted_before],
            )
        ]

    def last_sent_to(self, msisdn: str) -> dict[str, Any] | None:
        rows = list(self.db.table("last_sent").rows_where("msisdn = ?", [msisdn]))
        return rows[0] if rows else None

    def routes(self) -> dict[str, str]:
        return {row["prefix"]: row["gateway"] for row in self.db.table("routes").rows}

    def account_rates(self) -> dict[str, float]:
        return {
            row["username"]: row["send_rate"]
            for row in self.db.table("accounts").rows_where("send_rate IS NOT NULL")
        }

    def quiet_hours(self) -> dict[str, tuple[str, str, str]]:
        """Accounts with quiet hours: account → (window, days "mon,tue,...", default country)."""
        return {
            row[0]: (row[1], row[2], row[3] or "ZA")
            for row in self.db.execute(
                "SELECT q.account, q.quiet_window, q.days, a.country FROM quiet_hours q LEFT JOIN accounts a"
                " ON a.username = q.account"
            )
        }

    def quiet_counts(self, file_ids: list[str]) -> dict[str, tuple[int, int]]:
        """file → (messages held for quiet hours, of those expired), for files that had any."""
        found: dict[str, tuple[int, int]] = {}
        for start in range(0, len(file_ids), 500):
            chunk = file_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self.db.execute(
                f"SELECT file_id, held, expired FROM quiet_counts WHERE file_id IN ({marks})", chunk  # noqa: S608
            ):
                found[row[0]] = (row[1], row[2])
        return found

    def dump(self) -> dict[str, list[dict[str, Any]]]:
        """Every table's rows in key order: two dumps compare equal when content is identical."""
        return {
            table: [dict(row) for row in self.db.table(table).rows_where(order_by=",".join(self.db.table(table).pks))]
            for table in sorted(self.db.table_names())
            if table != "tracking"
        }
