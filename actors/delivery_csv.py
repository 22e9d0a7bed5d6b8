"""Delivery statuses for SFTP users, without webhooks: `Processed/<name>.delivery.csv`, one row per
message (index, msisdn, customerId, message id, parts, submitted_at, status, status_at, held; status
one of queued, submitted, held, delivered, failed, expired, cancelled), rewritten while a file's
messages are in flight and a last time once every one of them is final. `held` is `quiet_hours` for
a message held for the account's quiet hours (its status `held` while it waits; `expired` when End
came first).

A follower of the notification log: it notes which files' dispatch or delivery logs changed and
rebuilds their CSV from the events, in a thread of its own (a big file at most every 10 s per
10 000 messages while in flight, up to 300 s).

Position. What it has read is kept in `<node dir>/delivery_csv.db` (Settings.local_dir): the log
position, which file each log belongs to, the files whose CSV is due and the files already final,
all saved in one transaction after each read and after each rewrite. A restart resumes there (it
never reads the log from 0 again), and a file noted as due before a crash is rewritten after it: a
CSV is rebuilt from the events, so writing it again is harmless. Several nodes: one writes the
CSVs at a time, the holder of the lease `delivery-csv` (eventstore/leases.py); a node that takes
it over resumes from its own saved position, rewriting what changed since.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import sqlite3
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import trio
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.utils import get_topic

from actors.faults import is_disk_full
from eventstore.domain import (
    ContactBatch,
    DeliveryLog,
    DispatchLog,
    DomainError,
    File,
    batch_id,
    delivery_log_id,
    dispatch_log_id,
    message_id,
)
from eventstore.leases import Leases, LocalLeases
from eventstore.store import SmsStore
from sftpsms import filing, folders
from sftpsms.config import Settings
from sftpsms.gsm import text_encoding
from sftpsms.report import temporary_beside

log = logging.getLogger(__name__)

POLL_INTERVAL = 1.0
LEASE = "delivery-csv"  # one node writes the CSVs of every account at a time
MIN_REWRITE = 10.0  # seconds between rewrites of a big file's CSV while it is still changing...
BIG_FILE = 10_000  # ...per this many messages (a rewrite reads all of the file's events); smaller
MAX_REWRITE = 300.0  # files are rewritten every round, and none waits longer than this
READ_LIMIT = 5000
FINAL = frozenset({"delivered", "failed", "expired", "cancelled"})
COLUMNS = [
    "index", "msisdn", "customerId", "message_id", "parts", "submitted_at", "status", "status_at", "held", "encoding",
]
TOPICS = [
    get_topic(cls)
    for cls in (
        DispatchLog.DispatchStarted,
        DispatchLog.MessageSubmitted,
        DispatchLog.MessageExpired,
        DeliveryLog.DeliveryStarted,
        DeliveryLog.DeliveryReported,
        DispatchLog.MessagesHeld,
    )
]
STARTED_TOPICS = [TOPICS[0], TOPICS[3]]  # a log's first event names its file


def delivery_rows(store: SmsStore, file_id: UUID, batches: int | None = None) -> tuple[list[dict[str, Any]], bool]:
    """Every queued message of a file with its latest status; and whether all are final.
    `batches`: how many the file has (default: as its File aggregate says)."""
    if batches is None:
        batches = int(store.file(file_id).summary.get("batches", 0))
    rows: list[dict[str, Any]] = []
    for number in range(batches):
        batch = batch_id(file_id, number)
        by_index: dict[int, dict[str, Any]] = {}
        for event in store.events.get(batch):
            if isinstance(event, ContactBatch.MessageQueued):
                by_index[event.index] = {
                    "index": event.index,
                    "msisdn": event.msisdn,
                    "customerId": event.customer_id or "",
                    "message_id": str(message_id(file_id, event.index)),
                    "parts": event.parts,
                    "submitted_at": "",
                    "status": "queued",
                    "status_at": "",
                    "held": "",
                    "encoding": text_encoding(event.text),
                }
        for event in store.events.get(dispatch_log_id(batch)):
            if isinstance(event, DispatchLog.MessagesHeld):
                for index in event.indexes:
                    held = by_index.get(index)
                    if held is not None:
                        held["held"] = event.reason
                        if held["status"] == "queued":
                            held.update(status="held", status_at=event.at)
                continue
            row = by_index.get(getattr(event, "index", -1))
            if row is None:
                continue
            if isinstance(event, DispatchLog.MessageSubmitted):
                row.update(submitted_at=event.submitted_at, status="submitted", status_at=event.submitted_at)
            elif isinstance(event, DispatchLog.MessageExpired):
                # Unsent at End: expired; unsent when its file was cancelled: cancelled.
                row.update(status="cancelled" if event.reason == "cancelled" else "expired", status_at=event.at)
        for event in store.events.get(delivery_log_id(batch)):
            row = by_index.get(getattr(event, "index", -1))
            if row is not None and isinstance(event, DeliveryLog.DeliveryReported):
                row.update(status=event.status, status_at=event.at)
        rows.extend(by_index[index] for index in sorted(by_index))
    return rows, all(row["status"] in FINAL for row in rows)


def _file(store: SmsStore, file_id: UUID) -> File | None:
    """The file a log's messages came from; None for an auto-reply's batch (no file, no CSV)."""
    try:
        return store.file(file_id)
    except (AggregateNotFoundError, DomainError):
        return None


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    temporary = temporary_beside(path)  # never another writer's half-written one
    temporary.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(temporary, path)


class FollowerState:
    """`delivery_csv.db`: the follower's position and what it knows at that position, saved in one
    transaction. Used from one worker thread at a time."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(
            "CREATE TABLE IF NOT EXISTS position (id INTEGER PRIMARY KEY CHECK (id = 1), position INTEGER NOT NULL);"
            "CREATE TABLE IF NOT EXISTS logs (log TEXT PRIMARY KEY, file TEXT NOT NULL) WITHOUT ROWID;"
            "CREATE TABLE IF NOT EXISTS files (file TEXT PRIMARY KEY, state TEXT NOT NULL) WITHOUT ROWID;"
        )

    def load(self) -> tuple[int, dict[str, UUID], set[UUID], set[UUID]]:
        row = self.db.execute("SELECT position FROM position WHERE id = 1").fetchone()
        logs = {log_id: UUID(file) for log_id, file in self.db.execute("SELECT log, file FROM logs")}
        pending: set[UUID] = set()
        final: set[UUID] = set()
        for file, state in self.db.execute("SELECT file, state FROM files"):
            (final if state == "final" else pending).add(UUID(file))
        return (int(row[0]) if row else 0), logs, pending, final

    def save(self, position: int, logs: dict[str, UUID], files: dict[UUID, str]) -> None:
        """The new position, the logs first seen, and each changed file's state (pending, final,
        or written: no longer due)."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT INTO position (id, position) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET position = excluded.position",
                [position],
            )
            self.db.executemany("INSERT OR IGNORE INTO logs (log, file) VALUES (?, ?)", [(k, str(v)) for k, v in logs.items()])
            self.db.executemany("DELETE FROM files WHERE file = ?", [(str(f),) for f, state in files.items() if state == "written"])
            self.db.executemany(
                "INSERT INTO files (file, state) VALUES (?, ?) ON CONFLICT(file) DO UPDATE SET state = excluded.state",
                [(str(f), state) for f, state in files.items() if state != "written"],
            )

    def close(self) -> None:
        self.db.close()


@dataclass
class _Follower:
    settings: Settings
    position: int = 0

    def __post_init__(self) -> None:
        self.log_to_file: dict[str, UUID] = {}  # dispatch / delivery log id (hex) → file
        self.pending: set[UUID] = set()
        self.final: set[UUID] = set()
        self.written: dict[UUID, float] = {}
        self.sizes: dict[UUID, int] = {}
        self.state: FollowerState | None = None

    def open(self) -> None:
        """Resume from the saved position (settings.local_dir/delivery_csv.db)."""
        self.state = FollowerState(self.settings.local_dir / "delivery_csv.db")
        self.position, self.log_to_file, self.pending, self.final = self.state.load()

    def close(self) -> None:
        if self.state is not None:
            self.state.close()
            self.state = None

    def read(self, store: SmsStore) -> None:
        while True:
            changes = store.changes(self.position, READ_LIMIT, TOPICS, STARTED_TOPICS)
            new_logs: dict[str, UUID] = {}
            due: dict[UUID, str] = {}
            for originator, _, state in changes.states:  # a log started: which file it belongs to
                new_logs[originator] = self.log_to_file[originator] = UUID(state["file_id"])
            for originator in changes.originators:
                file_id = self.log_to_file.get(originator)
                if file_id is not None and file_id not in self.final and file_id not in self.pending:
                    self.pending.add(file_id)
                    due[file_id] = "pending"
            if self.state is not None and changes.position != self.position:
                self.state.save(changes.position, new_logs, due)
            self.position = changes.position
            if changes.count < READ_LIMIT:
                return

    def settled(self, file_id: UUID, final: bool) -> None:
        """The file's CSV is written (and, when `final`, never needs writing again)."""
        self.pending.discard(file_id)
        if final:
            self.final.add(file_id)
        if self.state is not None:
            self.state.save(self.position, {}, {file_id: "final" if final else "written"})

    def interval(self, store: SmsStore, file_id: UUID) -> float:
        """Seconds between rewrites of the file's CSV while it changes: 0 for a small file, longer
        the bigger it is (a rewrite reads every event of the file)."""
        size = self.sizes.get(file_id)
        if size is None:
            file = _file(store, file_id)
            size = self.sizes[file_id] = int(file.summary.get("messages", 0)) if file is not None else 0
        return min(MAX_REWRITE, MIN_REWRITE * size / BIG_FILE) if size > BIG_FILE else 0.0

    def rewrite(self, store: SmsStore, file_id: UUID) -> bool:
        file = _file(store, file_id)
        if file is None or file.outcome != "processed":
            return True
        rows, final = delivery_rows(store, file_id)
        self.sizes[file_id] = len(rows)
        folder = self.settings.account_root(file.account) / folders.PROCESSED
        if folder.is_dir():
            name = folders.outputs_name(folder, filing.filed_name(file.name), str(file_id))
            write_csv(folders.delivery_path(folder, name), rows)
        return final


async def run_delivery_csv(
    *,
    settings: Settings,
    store: SmsStore,
    leases: Leases | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep every processed file's delivery CSV current until cancelled. Errors are logged and
    the round retried: the CSV is a view, rebuilt from the events each time.

    It only reads the store, in a thread of its own (never the writer's: rebuilding a big file's
    CSV takes seconds, which would hold up every write behind it). A big file is first written
    one interval after its first change, then each interval, and a last time once final."""
    leases = leases if leases is not None else LocalLeases()
    follower = _Follower(settings)
    task_status.started()
    try:
        while True:
            await _round(follower, store, leases)
            await trio.sleep(POLL_INTERVAL)
    finally:
        follower.close()


async def _round(follower: _Follower, store: SmsStore, leases: Leases) -> None:
    try:
        if not await trio.to_thread.run_sync(leases.try_hold, LEASE):
            follower.close()  # another node writes the CSVs; take up again from the saved state
            return
        if follower.state is None:
            await trio.to_thread.run_sync(follower.open)
        await trio.to_thread.run_sync(follower.read, store)
        now = trio.current_time()
        for file_id in sorted(follower.pending):
            interval = await trio.to_thread.run_sync(follower.interval, store, file_id)
            if interval and now - follower.written.setdefault(file_id, now) < interval:
                continue
            final = await trio.to_thread.run_sync(partial(follower.rewrite, store, file_id))
            follower.written[file_id] = now
            await trio.to_thread.run_sync(follower.settled, file_id, final)
    except Exception as error:
        if is_disk_full(error):  # a full disk: one line, and the next round tries again
            log.warning("delivery CSV round paused, the disk is full (%s)", error)
        else:
            log.exception("delivery CSV round failed")
