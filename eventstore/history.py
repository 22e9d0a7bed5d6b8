"""The message-level history: every message of every file, with its submission, final status,
refund and replies, followed from the notification log into its own SQLite database.

It is a read model like eventstore.projections, kept apart for two reasons: its rows are a million
per million-contact file, so it is written off the hot path (the projector catches it up when no
file is being ingested, a window of the log per transaction, never inside the catch-up a file
actor waits for), and its own database file keeps its long write transactions from holding the
lock of the read models the service decides on. Like every projection it writes its rows and its
position in one write transaction, re-reading the position inside it, so several processes may
catch it up at once.

A message's key is `fkey << 32 | contact index`, where `fkey` numbers the files in the order the
log received them: a file's messages are one range of the table's own key (a page of a file is a
range scan), its submission, final status and replies are rows of narrow tables under the same
key (following the log only appends), and a rebuild numbers everything the same.

Two paths write the same rows (tests/test_history.py holds them to identical digests): where the
store's events are plain JSON in an SQLite file, that file is attached read-only and each window
is projected by a few INSERT ... SELECT statements (no Python object per event; the target is
100 000 messages/s); elsewhere the notifications are read and applied a page at a time.

The queries (`History.page`, `History.iter_messages`, `History.files`) return plain dicts and page
by an opaque cursor, for the CLI today and a REST layer later.
"""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from eventstore.domain import (
    AutoReply,
    ContactBatch,
    DeliveryLog,
    DispatchLog,
    File,
    message_id_text,
)
from eventstore.recorder import BatchingSQLiteApplicationRecorder
from eventstore.store import SmsStore

HISTORY_FILE = "history.db"
TRACKING_NAME = "history"
READ_BATCH = 20_000  # notifications per transaction: big pages amortise the commit
FILE_SHIFT = 32  # a message's key is fkey << FILE_SHIFT | contact index
INDEX_MASK = (1 << FILE_SHIFT) - 1
CACHE_LIMIT = 4096  # ids → file keys kept between pages
STATUSES = ("queued", "submitted", "delivered", "failed", "expired")
MAX_PAGE = 10_000

RECEIVED = get_topic(File.FileReceived)
OPENED = get_topic(ContactBatch.BatchOpened)
QUEUED = get_topic(ContactBatch.MessageQueued)
DISPATCHING = get_topic(DispatchLog.DispatchStarted)
SUBMITTED = get_topic(DispatchLog.MessageSubmitted)
EXPIRED = get_topic(DispatchLog.MessageExpired)
REPORTED = get_topic(DeliveryLog.DeliveryReported)
REPLIED = get_topic(DeliveryLog.ReplyReceived)
# A HELP answer or STOP confirmation (issue 12) is a message of its own "file": the AutoReply's
# id, named `answer:help` / `answer:stop`, so what was sent to a number includes the answers.
ANSWERED = get_topic(AutoReply.AutoReplyQueued)
TOPICS = (RECEIVED, ANSWERED, OPENED, QUEUED, DISPATCHING, SUBMITTED, EXPIRED, REPORTED, REPLIED)

SCHEMA = """
CREATE TABLE IF NOT EXISTS tracking (name TEXT PRIMARY KEY, position INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    fkey INTEGER PRIMARY KEY, file_id TEXT NOT NULL UNIQUE, account TEXT NOT NULL, name TEXT NOT NULL,
    receipt INTEGER NOT NULL, received_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS files_name ON files (name, account, receipt);
CREATE INDEX IF NOT EXISTS files_account ON files (account, received_at);
CREATE TABLE IF NOT EXISTS batches (batch TEXT PRIMARY KEY, fkey INTEGER NOT NULL, sender_id TEXT) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs (log TEXT PRIMARY KEY, fkey INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, account TEXT NOT NULL, msisdn TEXT NOT NULL, customer_id TEXT,
    text TEXT NOT NULL, parts INTEGER NOT NULL, sender_id TEXT, queued_at TEXT NOT NULL);
{message_indexes};
CREATE TABLE IF NOT EXISTS sent (id INTEGER PRIMARY KEY, submitted_at TEXT, gateway TEXT, gateway_id TEXT);
CREATE TABLE IF NOT EXISTS outcomes (
    id INTEGER PRIMARY KEY, status TEXT NOT NULL, error TEXT, final_at TEXT, refunded INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS replies (
    id INTEGER PRIMARY KEY, message INTEGER NOT NULL, account TEXT NOT NULL, msisdn TEXT NOT NULL,
    text TEXT NOT NULL, at TEXT NOT NULL, opt_out INTEGER NOT NULL, gateway TEXT NOT NULL, reply_id TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS replies_message ON replies (message);
CREATE INDEX IF NOT EXISTS replies_account ON replies (account, id);
"""
# The indexes of the messages table by what a query asks for. A catch-up far behind the log
# (a rebuild, or the history of a big import that has just been followed) drops them, appends,
# and builds them once at the end: sorting a million keys at once is several times cheaper than
# inserting them one by one into three B-trees (scripts/bench_history). Until they are back a
# query is answered by a scan: slower, never wrong.
MESSAGE_INDEXES = {
    # A number's or a customerId's messages come in key order (the order their files arrived, then
    # contact order): the index holds the short value and the key alone, the cheapest to keep up.
    "messages_msisdn": "ON messages (msisdn)",
    "messages_customer": "ON messages (customer_id) WHERE customer_id IS NOT NULL",
    "messages_account": "ON messages (account, queued_at)",
}
SCHEMA = SCHEMA.replace(
    "{message_indexes}",
    ";\n".join(f"CREATE INDEX IF NOT EXISTS {name} {spec}" for name, spec in MESSAGE_INDEXES.items()),
)
DEFERRED_NAME = "history:indexes-deferred"  # a tracking row while the message indexes are dropped
DEFER_LAG = 1_000_000  # log positions behind, at least, to defer the message indexes ...
DEFER_RATIO = 2  # ... and at least this many times the messages the history holds already

# A message's row is written once; what happens to it later goes into narrow tables keyed like it
# (`sent`, `outcomes`, `replies`), so following the log only ever appends (no row is rewritten).
INSERT_FILE = "INSERT OR IGNORE INTO files (file_id, account, name, receipt, received_at) VALUES (?,?,?,?,?)"
INSERT_BATCH = "INSERT OR REPLACE INTO batches (batch, fkey, sender_id) VALUES (?,?,?)"
INSERT_LOG = "INSERT OR REPLACE INTO logs (log, fkey) VALUES (?,?)"
INSERT_MESSAGE = (
    "INSERT OR IGNORE INTO messages (id, account, msisdn, customer_id, text, parts, sender_id, queued_at)"
    " VALUES (?,?,?,?,?,?,?,?)"
)
INSERT_SENT = "INSERT OR IGNORE INTO sent (id, submitted_at, gateway, gateway_id) VALUES (?,?,?,?)"
# The first final status decides (as DeliveryLog.reported does); an expiry is final too.
INSERT_OUTCOME = "INSERT OR IGNORE INTO outcomes (id, status, error, final_at, refunded) VALUES (?,?,?,?,?)"
INSERT_REPLY = (
    "INSERT INTO replies (message, account, msisdn, text, at, opt_out, gateway, reply_id) VALUES (?,?,?,?,?,?,?,?)"
)

# The same rows in SQL, for a store whose events are plain JSON in an SQLite file this process can
# ATTACH (eventstore.recorder): a window of the log is projected without a Python object per event.
# `{events}` is the attached events table; each statement takes (after, until, topic).
_WINDOW = "SELECT rowid AS position, originator_id AS o, CAST(state AS TEXT) AS j FROM {events}" \
    " WHERE rowid > ? AND rowid <= ? AND topic = ? ORDER BY rowid"
_UUID = "substr(o,1,8)||'-'||substr(o,9,4)||'-'||substr(o,13,4)||'-'||substr(o,17,4)||'-'||substr(o,21)"
SQL_STEPS = (
    (RECEIVED, "INSERT OR IGNORE INTO files (file_id, account, name, receipt, received_at)"
     f" SELECT {_UUID}, j->>'account', j->>'name', j->>'receipt', j->>'received_at' FROM ({_WINDOW})"),
    (ANSWERED, "INSERT OR IGNORE INTO files (file_id, account, name, receipt, received_at)"
     f" SELECT {_UUID}, j->>'account', 'answer:' || (j->>'kind'), 0, j->>'timestamp' FROM ({_WINDOW})"),
    (OPENED, "INSERT OR REPLACE INTO batches (batch, fkey, sender_id)"
     f" SELECT o, f.fkey, j->>'sender_id' FROM ({_WINDOW}) JOIN files f ON f.file_id = j->>'file_id'"
     " ORDER BY position"),
    (DISPATCHING, "INSERT OR REPLACE INTO logs (log, fkey)"
     f" SELECT o, f.fkey FROM ({_WINDOW}) JOIN files f ON f.file_id = j->>'file_id' ORDER BY position"),
    (QUEUED, "INSERT OR IGNORE INTO messages (id, account, msisdn, customer_id, text, parts, sender_id, queued_at)"
     f" SELECT b.fkey << {FILE_SHIFT} | (j->>'index'), f.account, j->>'msisdn', j->>'customer_id', j->>'text',"
     f" j->>'parts', b.sender_id, j->>'timestamp' FROM ({_WINDOW}) JOIN batches b ON b.batch = o"
     " JOIN files f ON f.fkey = b.fkey ORDER BY position"),
    (SUBMITTED, "INSERT OR IGNORE INTO sent (id, submitted_at, gateway, gateway_id)"
     f" SELECT l.fkey << {FILE_SHIFT} | (j->>'index'), j->>'submitted_at', j->>'gateway', j->>'gateway_id'"
     f" FROM ({_WINDOW}) JOIN logs l ON l.log = o ORDER BY position"),
    (EXPIRED, "INSERT OR IGNORE INTO outcomes (id, status, error, final_at, refunded)"
     f" SELECT l.fkey << {FILE_SHIFT} | (j->>'index'), 'expired', NULL, j->>'at', j->>'parts'"
     f" FROM ({_WINDOW}) JOIN logs l ON l.log = o ORDER BY position"),
    (REPORTED, "INSERT OR IGNORE INTO outcomes (id, status, error, final_at, refunded)"
     f" SELECT f.fkey << {FILE_SHIFT} | (j->>'index'), j->>'status', j->>'error', j->>'at', 0"
     f" FROM ({_WINDOW}) JOIN files f ON f.file_id = j->>'file_id' ORDER BY position"),
    (REPLIED, "INSERT INTO replies (message, account, msisdn, text, at, opt_out, gateway, reply_id)"
     f" SELECT f.fkey << {FILE_SHIFT} | (j->>'index'), j->>'account', j->>'msisdn', j->>'text', j->>'at',"
     f" j->>'opt_out', j->>'gateway', j->>'reply_id' FROM ({_WINDOW}) JOIN files f ON f.file_id = j->>'file_id'"
     " ORDER BY position"),
)
SQL_WINDOW = 200_000  # log positions per transaction on the SQL path (4x 50 000: +20 % messages/s)
# Each step scans its window once; the five topics of a few events per thousand messages are
# copied out in one scan first and read from that copy (half the scans of the log).
HEAVY = (QUEUED, SUBMITTED, REPORTED)
RARE = tuple(topic for topic in TOPICS if topic not in HEAVY)

STATUS = "coalesce(o.status, CASE WHEN s.id IS NULL THEN 'queued' ELSE 'submitted' END)"
COLUMNS = (
    "m.id, f.file_id, f.name, f.receipt, m.account, m.msisdn, m.customer_id, m.text, m.parts, m.sender_id,"
    f" m.queued_at, s.submitted_at, s.gateway, s.gateway_id, {STATUS}, o.error, o.final_at,"
    " coalesce(o.refunded, 0), EXISTS (SELECT 1 FROM replies r WHERE r.message = m.id)"
)
JOINS = (
    f"JOIN files f ON f.fkey = m.id >> {FILE_SHIFT} LEFT JOIN sent s ON s.id = m.id LEFT JOIN outcomes o ON o.id = m.id"
)


class HistoryError(Exception):
    """A query the history cannot answer: a bad cursor, an unknown status, a page too big."""


@dataclass(frozen=True)
class HistoryQuery:
    """Which messages: at least one of msisdn, customer_id, file_id (a FileReceived id) and account,
    combined with AND; `since` (inclusive) and `until` (exclusive) compare with the time the
    message was queued (ISO-8601 UTC, as the events store it); `status` is one of STATUSES."""

    msisdn: str | None = None
    customer_id: str | None = None
    file_id: str | None = None
    account: str | None = None
    since: str | None = None
    until: str | None = None
    status: str | None = None


def message_key(fkey: int, index: int) -> int:
    return fkey << FILE_SHIFT | index


class History:
    """The history database of one data directory. Open one per thread (sqlite3 connections are
    used by the thread that made them)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # As a URI, so that the events file is attached read-only whatever SQLite's build default.
        self.conn = sqlite3.connect(path.resolve().as_uri(), isolation_level=None, timeout=30, uri=True)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA cache_size=-32768")  # 32 MB: the indexes of a big page stay in memory
        if not self.conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'replies'").fetchone():
            self.conn.execute("BEGIN IMMEDIATE")  # nothing is attached yet
            self._create_schema()
            self.conn.execute("COMMIT")
        else:
            self._upgrade()
        self._attached: str | None = None  # the events file attached as `log`, for the SQL path
        self._files: dict[str, int] = {}
        self._batches: dict[str, tuple[int, str | None]] = {}
        self._logs: dict[str, int] = {}
        self._accounts: dict[int, str] = {}

    def _upgrade(self) -> None:
        """Indexes of an older history.db brought to today's definitions (once; a read otherwise)."""
        found = dict(self.conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"))
        wanted = {name: f"CREATE INDEX {name} {spec}" for name, spec in MESSAGE_INDEXES.items()}
        wanted["replies_account"] = "CREATE INDEX replies_account ON replies (account, id)"
        stale = [name for name, sql in wanted.items() if name in found and found[name] != sql]
        missing = [name for name in wanted if name not in found and (name == "replies_account" or not self._deferred())]
        if not stale and not missing:
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for name in stale:
                self.conn.execute(f"DROP INDEX main.{name}")  # our own index names
            for name in [*stale, *missing]:
                self.conn.execute(wanted[name].replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS", 1))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def _create_schema(self) -> None:
        for statement in SCHEMA.split(";"):
            if statement.strip():
                self.conn.execute(statement)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A write transaction on the history alone. (BEGIN IMMEDIATE would also take the write
        lock of an attached events file: its first statement, a write, takes the history's.)"""
        self.conn.execute("BEGIN")
        try:
            self.conn.execute("INSERT OR IGNORE INTO tracking (name, position) VALUES (?, 0)", [TRACKING_NAME])
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            for cache in (self._files, self._batches, self._logs, self._accounts):
                cache.clear()  # they may hold keys of the rows rolled back
            raise
        self.conn.execute("COMMIT")

    # ---- following the log -----------------------------------------------------------------

    def position(self) -> int:
        row = self.conn.execute("SELECT position FROM tracking WHERE name = ?", [TRACKING_NAME]).fetchone()
        return int(row[0]) if row else 0

    def catch_up(
        self, store: SmsStore, until: int | None = None, max_pages: int | None = None, *, sql: bool = True
    ) -> tuple[int, bool]:
        """Apply the log up to `until` (default: its end), at most `max_pages` pages (default: all;
        a page is SQL_WINDOW log positions, or READ_BATCH relevant notifications where the events
        cannot be read in SQL). Returns the position reached and whether it is `until`. `sql=False`
        takes the general path even where the SQL one works (the tests compare the two)."""
        if until is None:
            until = store.last_position()
        in_sql = sql and self._attach(store)
        plain = store.writes_batch_rows  # states are plain transcoder output: read them as JSON
        pages = 0
        while True:
            with self._writing():
                position = self.position()
                if position >= until:
                    if self._deferred():
                        self._build_indexes()
                    return position, True
                if max_pages is not None and pages >= max_pages:
                    return position, False
                if pages == 0 and in_sql:
                    self._maybe_defer_indexes(until - position)
                if in_sql:
                    new_position = min(until, position + SQL_WINDOW)
                    self._apply_sql(position, new_position)
                else:
                    notifications = store.notifications(position, READ_BATCH, TOPICS, stop=until)
                    self._apply(store, notifications, plain)
                    # Fewer rows than asked for means nothing relevant is left up to `until`.
                    new_position = notifications[-1].id if len(notifications) == READ_BATCH else until
                self.conn.execute("UPDATE tracking SET position = ? WHERE name = ?", [new_position, TRACKING_NAME])
                pages += 1

    def _deferred(self) -> bool:
        return self.conn.execute("SELECT 1 FROM tracking WHERE name = ?", [DEFERRED_NAME]).fetchone() is not None

    def _maybe_defer_indexes(self, lag: int) -> None:
        """Drop the message indexes when the log is far enough ahead that building them at the end
        costs less than keeping them up row by row (inside the caller's write transaction)."""
        if lag < DEFER_LAG or self._deferred():
            return
        held = self.conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        if lag < DEFER_RATIO * held:
            return
        for name in MESSAGE_INDEXES:
            self.conn.execute(f"DROP INDEX IF EXISTS main.{name}")  # our own index names
        self.conn.execute("INSERT OR REPLACE INTO tracking (name, position) VALUES (?, 0)", [DEFERRED_NAME])

    def _build_indexes(self) -> None:
        for name, spec in MESSAGE_INDEXES.items():
            self.conn.execute(f"CREATE INDEX IF NOT EXISTS main.{name} {spec}")
        self.conn.execute("DELETE FROM tracking WHERE name = ?", [DEFERRED_NAME])

    def _index(self, name: str) -> str:
        """`INDEXED BY name`, or nothing while a catch-up has the index dropped."""
        present = self.conn.execute("SELECT 1 FROM main.sqlite_master WHERE type = 'index' AND name = ?", [name])
        return f"INDEXED BY {name}" if present.fetchone() else ""

    def _attach(self, store: SmsStore) -> bool:
        """Attach the store's SQLite file read-only when its events are plain JSON rows there."""
        recorder = store.recorder
        if not (store.writes_batch_rows and isinstance(recorder, BatchingSQLiteApplicationRecorder)):
            return False
        database = recorder.database_file
        if database is None or not Path(database).exists():
            return False
        if self._attached != database:
            if self._attached is not None:
                self.conn.execute("DETACH DATABASE log")
            uri = Path(database).resolve().as_uri() + "?mode=ro"
            self.conn.execute("ATTACH DATABASE ? AS log", [uri])
            self._attached = database
            self._events = f"log.{recorder.events_table_name}"
        return True

    def _apply_sql(self, after: int, until: int) -> None:
        conn = self.conn
        conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS rare (rowid INTEGER PRIMARY KEY, originator_id TEXT, topic TEXT, state TEXT)"
        )
        conn.execute("DELETE FROM temp.rare")
        conn.execute(
            f"INSERT INTO temp.rare SELECT rowid, originator_id, topic, CAST(state AS TEXT) FROM {self._events}"  # noqa: S608
            f" WHERE rowid > ? AND rowid <= ? AND topic IN ({','.join('?' * len(RARE))})",
            [after, until, *RARE],
        )
        for topic, statement in SQL_STEPS:
            source = self._events if topic in HEAVY else "temp.rare"
            conn.execute(statement.format(events=source), [after, until, topic])

    def rebuild(self, store: SmsStore, until: int | None = None) -> int:
        """Drop the history and follow the whole log again."""
        with self._writing():
            for (table,) in self.conn.execute(
                "SELECT name FROM main.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            ).fetchall():
                self.conn.execute(f"DROP TABLE main.{table}")  # our own table names
            self._create_schema()
            self.conn.execute("INSERT OR IGNORE INTO tracking (name, position) VALUES (?, 0)", [TRACKING_NAME])
        self._files.clear()
        self._batches.clear()
        self._logs.clear()
        self._accounts.clear()
        return self.catch_up(store, until)[0]

    def _apply(self, store: SmsStore, notifications: Sequence[Notification], plain: bool) -> None:
        """One page of notifications: the rows of each kind are collected and written with one
        executemany each, in the order of SQL_STEPS (each message's own events follow each other
        in that order in the log: queued, submitted, final status, replies)."""
        messages: list[tuple[Any, ...]] = []
        sent: list[tuple[Any, ...]] = []
        outcomes: list[tuple[Any, ...]] = []
        replies: list[tuple[Any, ...]] = []
        state = partial(notification_fields, store, plain=plain)

        for n in notifications:
            topic = n.topic
            if topic == QUEUED:
                batch = self._batch(originator_hex(n))
                if batch is None:
                    continue
                fkey, sender_id = batch
                e = state(n)
                messages.append(
                    (
                        fkey << FILE_SHIFT | e["index"],
                        self._account_of(fkey),
                        e["msisdn"],
                        e["customer_id"],
                        e["text"],
                        e["parts"],
                        sender_id,
                        e["timestamp"],
                    )
                )
            elif topic == SUBMITTED:
                fkey_or_none = self._log(originator_hex(n))
                if fkey_or_none is not None:
                    e = state(n)
                    key = fkey_or_none << FILE_SHIFT | e["index"]
                    sent.append((key, e["submitted_at"], e["gateway"], e["gateway_id"]))
            elif topic == REPORTED:
                e = state(n)
                fkey_or_none = self._file(e["file_id"])
                if fkey_or_none is not None:
                    key = fkey_or_none << FILE_SHIFT | e["index"]
                    outcomes.append((key, e["status"], e["error"], e["at"], 0))
            elif topic == EXPIRED:
                fkey_or_none = self._log(originator_hex(n))
                if fkey_or_none is not None:
                    e = state(n)
                    outcomes.append((fkey_or_none << FILE_SHIFT | e["index"], "expired", None, e["at"], e["parts"]))
            elif topic == REPLIED:
                e = state(n)
                fkey_or_none = self._file(e["file_id"])
                if fkey_or_none is not None:
                    key = fkey_or_none << FILE_SHIFT | e["index"]
                    replies.append(
                        (key, e["account"], e["msisdn"], e["text"], e["at"], int(e["opt_out"]), e["gateway"], e["reply_id"])
                    )
            elif topic == OPENED:
                e = state(n)
                fkey_or_none = self._file(e["file_id"])
                if fkey_or_none is not None:
                    batch_hex = originator_hex(n)
                    self.conn.execute(INSERT_BATCH, [batch_hex, fkey_or_none, e["sender_id"]])
                    self._remember(self._batches, batch_hex, (fkey_or_none, e["sender_id"]))
            elif topic == DISPATCHING:
                e = state(n)
                fkey_or_none = self._file(e["file_id"])
                if fkey_or_none is not None:
                    log_hex = originator_hex(n)
                    self.conn.execute(INSERT_LOG, [log_hex, fkey_or_none])
                    self._remember(self._logs, log_hex, fkey_or_none)
            elif topic in (RECEIVED, ANSWERED):
                e = state(n)
                file_id = str(UUID(originator_hex(n)))
                if topic == RECEIVED:
                    row = [file_id, e["account"], e["name"], e["receipt"], e["received_at"]]
                else:
                    row = [file_id, e["account"], f"answer:{e['kind']}", 0, e["timestamp"]]
                cursor = self.conn.execute(INSERT_FILE, row)
                if cursor.rowcount:
                    self._remember(self._files, file_id, int(cursor.lastrowid or 0))
        execute = self.conn.executemany
        for statement, rows in (
            (INSERT_MESSAGE, messages), (INSERT_SENT, sent), (INSERT_OUTCOME, outcomes), (INSERT_REPLY, replies)
        ):
            if rows:
                execute(statement, rows)

    @staticmethod
    def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        cache[key] = value

    def _file(self, file_id: str) -> int | None:
        found = self._files.get(file_id)
        if found is None:
            row = self.conn.execute("SELECT fkey FROM files WHERE file_id = ?", [file_id]).fetchone()
            if row is None:
                return None
            found = int(row[0])
            self._remember(self._files, file_id, found)
        return found

    def _batch(self, batch_hex: str) -> tuple[int, str | None] | None:
        found = self._batches.get(batch_hex)
        if found is None:
            row = self.conn.execute("SELECT fkey, sender_id FROM batches WHERE batch = ?", [batch_hex]).fetchone()
            if row is None:
                return None
            found = (int(row[0]), row[1])
            self._remember(self._batches, batch_hex, found)
        return found

    def _log(self, log_hex: str) -> int | None:
        found = self._logs.get(log_hex)
        if found is None:
            row = self.conn.execute("SELECT fkey FROM logs WHERE log = ?", [log_hex]).fetchone()
            if row is None:
                return None
            found = int(row[0])
            self._remember(self._logs, log_hex, found)
        return found

    def _account_of(self, fkey: int) -> str:
        account = self._accounts.get(fkey)
        if account is None:
            row = self.conn.execute("SELECT account FROM files WHERE fkey = ?", [fkey]).fetchone()
            account = str(row[0])
            self._remember(self._accounts, fkey, account)
        return account

    # ---- queries ---------------------------------------------------------------------------

    def files(
        self, *, name: str | None = None, account: str | None = None, file_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Files the history knows (every receipt), oldest first."""
        where, args = [], []
        for column, value in (("name", name), ("account", account), ("file_id", file_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT fkey, file_id, account, name, receipt, received_at FROM files"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.conn.execute(sql + " ORDER BY fkey", args).fetchall()
        return [
            {"file_id": r[1], "account": r[2], "name": r[3], "receipt": r[4], "received_at": r[5]} for r in rows
        ]

    def page(self, query: HistoryQuery, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
        """One page of messages: `{"messages": [...], "next": cursor or None}`. A file's messages
        come in contact order; a number's or a customerId's in the order their files arrived, then
        contact order; an account's in the order they were queued."""
        if not 0 < limit <= MAX_PAGE:
            raise HistoryError(f"a page holds 1 to {MAX_PAGE} messages")
        if query.status is not None and query.status not in STATUSES:
            raise HistoryError(f"a status is one of {', '.join(STATUSES)}")
        where: list[str] = []
        args: list[Any] = []
        by_file = query.file_id is not None
        by_key = by_file or query.msisdn is not None or query.customer_id is not None
        if by_file:
            row = self.conn.execute("SELECT fkey FROM files WHERE file_id = ?", [query.file_id]).fetchone()
            if row is None:
                return {"messages": [], "next": None}
            where.append("m.id BETWEEN ? AND ?")
            args += [message_key(int(row[0]), 0), message_key(int(row[0]), INDEX_MASK)]
            index = ""
        elif query.msisdn is not None:
            index = self._index("messages_msisdn")
        elif query.customer_id is not None:
            index = self._index("messages_customer")
        elif query.account is not None:
            index = self._index("messages_account")
        else:
            raise HistoryError("ask for a number, a customerId, a file or an account")
        for column, value in (
            ("m.msisdn", query.msisdn),
            ("m.customer_id", query.customer_id),
            ("m.account", query.account),
            (STATUS, query.status),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if query.since is not None:
            where.append("m.queued_at >= ?")
            args.append(query.since)
        if query.until is not None:
            where.append("m.queued_at < ?")
            args.append(query.until)
        if cursor is not None:
            after = _decode_cursor(cursor)
            if by_key:
                where.append("m.id > ?")
                args.append(after[1])
            else:
                where.append("(m.queued_at, m.id) > (?, ?)")
                args += after
        order = "m.id" if by_key else "m.queued_at, m.id"
        sql = (
            f"SELECT {COLUMNS} FROM messages m {index} {JOINS}"  # noqa: S608
            f" WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?"
        )
        rows = self.conn.execute(sql, [*args, limit + 1]).fetchall()
        more = len(rows) > limit
        rows = rows[:limit]
        messages = [_message(row) for row in rows]
        self._add_replies(messages, [int(row[0]) for row in rows if row[18]])
        last = rows[-1] if rows else None
        next_cursor = _encode_cursor(last[10], last[0]) if more and last is not None else None
        return {"messages": messages, "next": next_cursor}

    def file_counts(self, file_id: str) -> dict[str, int]:
        """How many of a file's messages are in each status (STATUSES), for live progress."""
        row = self.conn.execute("SELECT fkey FROM files WHERE file_id = ?", [file_id]).fetchone()
        counts = dict.fromkeys(STATUSES, 0)
        if row is None:
            return counts
        low, high = message_key(int(row[0]), 0), message_key(int(row[0]), INDEX_MASK)
        for status, count in self.conn.execute(
            f"SELECT {STATUS} AS status, count(*) FROM messages m"  # noqa: S608
            " LEFT JOIN sent s ON s.id = m.id LEFT JOIN outcomes o ON o.id = m.id"
            " WHERE m.id BETWEEN ? AND ? GROUP BY status",
            [low, high],
        ):
            counts[status] = int(count)
        return counts

    def activity(self, account: str, since: str, *, by: str = "hour") -> list[dict[str, Any]]:
        """Messages sent (submitted) per hour or day since `since` (ISO-8601 UTC, on the time
        queued), with how many of them were delivered and failed: the control panel's chart."""
        width = {"hour": 13, "day": 10}[by]
        rows = self.conn.execute(
            f"SELECT substr(s.submitted_at, 1, {width}) AS slot, count(*),"  # noqa: S608
            " sum(o.status = 'delivered'), sum(o.status = 'failed')"
            f" FROM messages m {self._index('messages_account')} JOIN sent s ON s.id = m.id"
            " LEFT JOIN outcomes o ON o.id = m.id WHERE m.account = ? AND m.queued_at >= ?"
            " GROUP BY slot ORDER BY slot",
            [account, since],
        ).fetchall()
        return [
            {"slot": row[0], "sent": int(row[1]), "delivered": int(row[2] or 0), "failed": int(row[3] or 0)}
            for row in rows
        ]

    def replies(self, account: str, *, after: int = 0, limit: int = 100, since: str | None = None) -> list[dict[str, Any]]:
        """An account's replies, oldest first, after the reply key `after` (a page's last `key`)."""
        where, args = ["r.account = ?", "r.id > ?"], [account, after]
        if since is not None:
            where.append("r.at >= ?")
            args.append(since)
        rows = self.conn.execute(
            "SELECT r.id, r.message, f.file_id, f.name, r.msisdn, r.text, r.at, r.opt_out, r.gateway"  # noqa: S608
            f" FROM replies r LEFT JOIN files f ON f.fkey = r.message >> {FILE_SHIFT}"
            f" WHERE {' AND '.join(where)} ORDER BY r.id LIMIT ?",
            [*args, limit],
        ).fetchall()
        return [
            {
                "key": row[0],
                "message_id": message_id_text(UUID(row[2]), row[1] & INDEX_MASK) if row[2] else None,
                "file_id": row[2], "file": row[3], "msisdn": row[4], "text": row[5], "at": row[6],
                "opt_out": bool(row[7]), "gateway": row[8],
            }
            for row in rows
        ]

    def iter_messages(self, query: HistoryQuery, page_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Every message of the query, a page at a time (memory stays flat on any range)."""
        cursor: str | None = None
        while True:
            page = self.page(query, page_size, cursor)
            yield from page["messages"]
            cursor = page["next"]
            if cursor is None:
                return

    def _add_replies(self, messages: list[dict[str, Any]], keys: list[int]) -> None:
        """Each message's replies, oldest first (one query for the page)."""
        by_key: dict[int, list[dict[str, Any]]] = {}
        if keys:
            marks = ",".join("?" * len(keys))
            for key, text, at, opt_out in self.conn.execute(
                f"SELECT message, text, at, opt_out FROM replies WHERE message IN ({marks}) ORDER BY id",  # noqa: S608
                keys,
            ):
                by_key.setdefault(key, []).append({"text": text, "at": at, "opt_out": bool(opt_out)})
        for message in messages:
            message["replies"] = by_key.get(message.pop("_key"), [])


def notification_fields(store: SmsStore, notification: Notification, *, plain: bool) -> dict[str, Any]:
    """An event's fields from its notification: the stored JSON itself where the store's states are
    plain transcoder output (`plain`, i.e. `store.writes_batch_rows`), else through the mapper, with
    the timestamp as ISO text either way. Shared by the history and the audit export."""
    if plain:
        return orjson.loads(notification.state)  # type: ignore[no-any-return]
    fields = dict(vars(store.mapper.to_domain_event(notification)))
    fields["timestamp"] = fields["timestamp"].isoformat()
    return fields


def originator_hex(notification: Notification) -> str:
    """The hex of a notification's originator id, whichever type the recorder gave it."""
    originator = notification.originator_id
    return originator.hex if isinstance(originator, UUID) else UUID(originator).hex


def _message(row: Sequence[Any]) -> dict[str, Any]:
    key = int(row[0])
    return {
        "_key": key,
        "message_id": message_id_text(UUID(row[1]), key & INDEX_MASK),
        "account": row[4],
        "file": row[2],
        "file_id": row[1],
        "receipt": row[3],
        "index": key & INDEX_MASK,
        "msisdn": row[5],
        "customer_id": row[6],
        "text": row[7],
        "parts": row[8],
        "sender_id": row[9],
        "queued_at": row[10],
        "submitted_at": row[11],
        "gateway": row[12],
        "gateway_id": row[13],
        "status": row[14],
        "error": row[15],
        "final_at": row[16],
        "refunded": row[17],
        "replies": [],
    }


def _encode_cursor(queued_at: str, key: int) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([queued_at, key])).decode().rstrip("=")


def _decode_cursor(cursor: str) -> list[Any]:
    try:
        value = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        raise HistoryError("not a cursor this history gave out") from None
    if not (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)):
        raise HistoryError("not a cursor this history gave out")
    return value


def table_digests(conn: sqlite3.Connection, skip: Sequence[str] = ("tracking",)) -> dict[str, tuple[int, str]]:
    """Each table's row count and SHA-256 over its rows in key order: two databases with the same
    content give the same digests (for `readmodels rebuild --verify`). Streams the rows."""
    import hashlib

    digests: dict[str, tuple[int, str]] = {}
    tables = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    for table in tables:
        if table in skip:
            continue
        info = conn.execute(f"PRAGMA table_info({table})").fetchall()  # our own table names
        keys = [row[1] for row in sorted(info, key=lambda r: r[5]) if row[5] > 0]
        columns = sorted(row[1] for row in info)  # by name: the same content whatever the column order
        order = ", ".join(f'"{k}"' for k in keys) if keys else "rowid"
        digest = hashlib.sha256()
        count = 0
        selected = ", ".join(f'"{c}"' for c in columns)
        for row in conn.execute(f'SELECT {selected} FROM "{table}" ORDER BY {order}'):  # noqa: S608
            digest.update(orjson.dumps(list(row)))
            digest.update(b"\n")
            count += 1
        digests[table] = (count, digest.hexdigest())
    return digests
