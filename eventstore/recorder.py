"""A faster SQLite application recorder: one `executemany` per save instead of one `execute` per
event, and `insert_rows` for rows built without domain-event objects (eventstore.contact_rows).
Selected through eventsourcing's own APPLICATION_RECORDER_TOPIC setting."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteCursor


class BatchingSQLiteApplicationRecorder(SQLiteApplicationRecorder):
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

    def insert_rows(self, rows: Sequence[tuple[str, int, str, bytes]]) -> None:
        """Insert ready-made rows (originator id, version, topic, state) in one transaction.
        Raises eventsourcing's IntegrityError when a (originator id, version) is taken, like a save."""
        with self.datastore.transaction(commit=True) as c:
            c.executemany(self.insert_events_statement, rows)
