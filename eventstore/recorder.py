"""A faster SQLite application recorder: one `executemany` per save instead of one `execute` per
event, and `insert_rows` for rows built without domain-event objects (eventstore.contact_rows).
Selected through eventsourcing's own APPLICATION_RECORDER_TOPIC setting."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor

ORIGINATOR_CACHE = 4096


class BatchingSQLiteApplicationRecorder(SQLiteApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Shared by the threads that read; a dict's get/set/clear are safe under the GIL.
        self._originators: dict[str, UUID | str] = {}

    def convert_originator_id(self, originator_id: str) -> UUID | str:
        """The stored id as a UUID, from a small cache: a dispatch or delivery log's thousand events
        come in runs, and parsing the same id again each time was a tenth of a follower's work."""
        found = self._originators.get(originator_id)
        if found is not None:
            return found
        converted = super().convert_originator_id(originator_id)
        if len(self._originators) >= ORIGINATOR_CACHE:
            self._originators.clear()
        self._originators[originator_id] = converted
        return converted

    def _insert_events(
        self,
        c: SQLiteCursor,
        stored_events: Sequence[StoredEvent],
        **_: Any,
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        c.executemany(
            self.insert_events_statement,
            [
                (
                    s.originator_id.hex if isinstance(s.originator_id, UUID) else s.originator_id,
                    s.originator_version,
                    s.topic,
                    s.state,
                )
                for s in stored_events
            ],
        )
        # The rows' rowids are the notification ids. Inside one write transaction SQLite gives a
        # rowid table (no AUTOINCREMENT, no other writer) consecutive rowids: max(rowid) + 1 each.
        c.execute(f"SELECT MAX(rowid) FROM {self.events_table_name}")  # noqa: S608 - our table name
        last = int(c.fetchone()[0])
        return list(range(last - len(stored_events) + 1, last + 1))

    @property
    def database_file(self) -> str | None:
        """The SQLite file the events are in, or None for an in-memory store: a follower on the
        same machine may ATTACH it read-only and project in SQL (eventstore.history)."""
        pool = self.datastore.pool
        return None if pool.is_sqlite_memory_mode else str(pool.db_name)

    def insert_rows(self, rows: Sequence[tuple[str, int, str, bytes]]) -> None:
        """Insert ready-made rows (originator id, version, topic, state) in one transaction.
        Raises eventsourcing's IntegrityError when a (originator id, version) is taken, like a save."""
        with self.datastore.transaction(commit=True) as c:
            c.executemany(self.insert_events_statement, rows)

    def select_changes(
        self, after: int, limit: int, topics: Sequence[str], state_topics: Sequence[str]
    ) -> tuple[int, int, list[str], list[tuple[str, str, bytes]]]:
        """Which aggregates have events of `topics` among the next `limit` of them after `after`:
        (the last one's position, how many there were, the distinct originator ids in hex, and
        (originator, topic, state) of those of `state_topics`). Followers that need to know what
        changed, not how, get it without a Python object per event."""
        marks = ",".join("?" * len(topics))
        table = self.events_table_name
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT COUNT(*), MAX(id) FROM (SELECT rowid AS id FROM {table} "  # noqa: S608 - our table
                f"WHERE rowid>? AND topic IN ({marks}) ORDER BY rowid LIMIT ?)",
                [after, *topics, limit],
            )
            count, last = c.fetchone()
            if not count:
                return after, 0, [], []
            c.execute(
                f"SELECT DISTINCT originator_id FROM {table} WHERE rowid>? AND rowid<=? AND topic IN ({marks})",  # noqa: S608
                [after, last, *topics],
            )
            originators = [row[0] for row in c.fetchall()]
            states: list[tuple[str, str, bytes]] = []
            if state_topics:
                c.execute(
                    f"SELECT originator_id, topic, state FROM {table} WHERE rowid>? AND rowid<=? "  # noqa: S608
                    f"AND topic IN ({','.join('?' * len(state_topics))}) ORDER BY rowid",
                    [after, last, *state_topics],
                )
                states = [(row[0], row[1], row[2]) for row in c.fetchall()]
            return int(last), int(count), originators, states
