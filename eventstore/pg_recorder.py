"""A PostgreSQL application recorder that also takes ready-made rows: the PostgreSQL side of the
row fast paths (eventstore.contact_rows, eventstore.dispatch_rows), as
eventstore.recorder.BatchingSQLiteApplicationRecorder is SQLite's. Selected through eventsourcing's
own APPLICATION_RECORDER_TOPIC setting (eventstore.store.store_env).

`insert_rows` writes the rows with one COPY in one transaction, under the very lock eventsourcing's
own insert takes (`LOCK TABLE ... IN EXCLUSIVE MODE`, with its lock timeout, and its NOTIFY): the
notification ids of one transaction are then consecutive and commit in the order they were
issued, so a follower tailing the log never passes a gap that fills later. The rows are the
(originator id, version, topic, state) eventsourcing's insert would store for the same events;
tests/test_contact_rows.py and tests/test_dispatch_rows.py hold the two to byte equality here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

# A stored-event row: originator id (hex), version, topic, state (as eventstore.contact_rows.Row).
Row = tuple[str, int, str, bytes]


class RowsPostgresApplicationRecorder(PostgresApplicationRecorder):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.copy_rows_statement = SQL(
            "COPY {schema}.{table} (originator_id, originator_version, topic, state) FROM STDIN (FORMAT BINARY)"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))

    @property
    def takes_rows(self) -> bool:
        """Whether `insert_rows` may be used: the originator ids are stored as uuid (the default;
        POSTGRES_ORIGINATOR_ID_TYPE=text stores them otherwise)."""
        return self.datastore.originator_id_type == "uuid"

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_rows(self, rows: Sequence[Row]) -> None:
        """Insert ready-made rows (originator id in hex, version, topic, state) in one transaction.
        Raises eventsourcing's IntegrityError when a (originator id, version) is taken, like a save
        (the datastore translates psycopg's errors), and then nothing of the rows is stored."""
        if not rows:
            return
        with self.datastore.transaction(commit=True) as cursor:
            self._lock_table(cursor)
            self._notify_channel(cursor)
            with cursor.copy(self.copy_rows_statement) as copy:
                copy.set_types(["uuid", "int8", "text", "bytea"])
                write = copy.write_row
                ids: dict[str, UUID] = {}  # a batch's rows share one originator: parse it once
                for originator, version, topic, state in rows:
                    uuid = ids.get(originator)
                    if uuid is None:
                        uuid = ids[originator] = UUID(originator)
                    write((uuid, version, topic, state))
