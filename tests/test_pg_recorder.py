"""PostgreSQL's row fast path (eventstore.pg_recorder): rows commit under eventsourcing's own table
lock, so notification ids are consecutive per transaction and in commit order; a taken version
stores nothing. Runs on the PostgreSQL store (SFTPSMS_TEST_STORE); the byte equality of the rows
is tests/test_contact_rows.py's and tests/test_dispatch_rows.py's."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError
from psycopg import sql

from eventstore.pg_recorder import RowsPostgresApplicationRecorder
from eventstore.store import SmsStore, open_store
from tests.backends import BACKEND, stored_rows

pytestmark = pytest.mark.skipif(BACKEND != "postgresql", reason="PostgreSQL's own fast path")
WAIT = 30.0  # seconds at most for another session's state to show


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[SmsStore]:
    store = open_store(tmp_path)
    assert isinstance(store.recorder, RowsPostgresApplicationRecorder) and store.writes_batch_rows
    yield store
    store.close()


def _connect(store: SmsStore) -> psycopg.Connection[tuple[object, ...]]:
    env = store.env
    return psycopg.connect(
        dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"], password=env.get("POSTGRES_PASSWORD") or None,
    )


def _rows(originator: str, versions: range) -> list[tuple[str, int, str, bytes]]:
    return [(originator, v, "tests:Event", b'{"n":%d}' % v) for v in versions]


def test_rows_wait_for_the_table_lock_and_take_the_ids_after_the_holders(pg: SmsStore) -> None:
    recorder = pg.recorder
    assert isinstance(recorder, RowsPostgresApplicationRecorder)
    table = sql.Identifier(recorder.datastore.schema, recorder.events_table_name)
    first, second = uuid4().hex, uuid4().hex
    with _connect(pg) as holder:
        # Another writer inside its transaction, with a plain INSERT (ROW EXCLUSIVE): a COPY alone
        # would not wait for it, the EXCLUSIVE table lock eventsourcing's inserts take does.
        holder.execute(
            sql.SQL("INSERT INTO {} (originator_id, originator_version, topic, state) VALUES (%s, 1, 't', '')").format(table),
            [first],
        )
        done = threading.Event()
        writer = threading.Thread(target=lambda: (recorder.insert_rows(_rows(second, range(1, 4))), done.set()))
        writer.start()
        with _connect(pg) as watcher:
            watcher.autocommit = True
            for _ in range(int(WAIT * 100)):
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = %s::regclass",
                    [f"{recorder.datastore.schema}.{recorder.events_table_name}"],
                ).fetchone()
                if (waiting and waiting[0]) or done.wait(0.01):
                    break
            else:
                pytest.fail("insert_rows never waited for the table lock")
        assert not done.is_set(), "insert_rows wrote beside an open writer: it took no table lock"
        holder.commit()
    writer.join(WAIT)
    assert done.is_set()
    stored = [(position, originator, version) for position, originator, version, _, _ in stored_rows(pg)]
    start = stored[0][0]
    assert stored == [(start, first, 1), (start + 1, second, 1), (start + 2, second, 2), (start + 3, second, 3)]


def test_a_taken_version_stores_none_of_the_rows(pg: SmsStore) -> None:
    originator = uuid4().hex
    pg.save_rows(_rows(originator, range(1, 3)))
    before = stored_rows(pg)
    with pytest.raises(IntegrityError):
        pg.save_rows(_rows(uuid4().hex, range(1, 3)) + _rows(originator, range(2, 4)))
    assert stored_rows(pg) == before
    pg.save_rows(_rows(originator, range(3, 4)))  # the connection is usable after the refusal
    positions = [row[0] for row in stored_rows(pg)]
    assert positions == sorted(positions) and len(positions) == 3


def test_rows_are_read_back_through_the_notification_log(pg: SmsStore) -> None:
    originator = uuid4().hex
    pg.save_rows(_rows(originator, range(1, 6)))
    notifications = pg.notifications(after=0, limit=10)
    assert [(n.originator_id.hex, n.originator_version, n.state) for n in notifications] == [  # type: ignore[union-attr]
        (originator, v, b'{"n":%d}' % v) for v in range(1, 6)
    ]
