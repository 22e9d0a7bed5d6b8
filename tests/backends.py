"""Which event store the suite runs on (issue 10 §2: one contract suite per backend).

`scripts/test` runs it on the embedded SQLite store. With SFTPSMS_TEST_STORE set to a PostgreSQL
URL (`.ci/run` sets postgresql://postgres@127.0.0.1:5432/test for its second pass), every store of
the run (the tests' own and the services they start, through SFTPSMS_STORE) is a schema of that
database named after its data directory (`?schema=per-data-dir`): each test has its own, and the
run drops them all at its end. Tests of SQLite's own fast paths are marked `sqlite_only`.
"""

from __future__ import annotations

import os

import pytest

TEST_STORE = os.environ.get("SFTPSMS_TEST_STORE", "")
BACKEND = "postgresql" if TEST_STORE else "sqlite"

sqlite_only = pytest.mark.skipif(BACKEND != "sqlite", reason="SQLite's own fast path or files")


RUN_TAG = f"r{os.getpid()}"  # this run's schemas: sftpsms_t_<tag>_<digest>, dropped at its end only


def configure() -> None:
    if TEST_STORE:
        separator = "&" if "?" in TEST_STORE else "?"
        os.environ["SFTPSMS_STORE"] = f"{TEST_STORE}{separator}schema=per-data-dir-{RUN_TAG}"  # services inherit it


def drop_test_schemas() -> None:
    if not TEST_STORE:
        return
    import psycopg
    from psycopg import sql

    from eventstore.store import postgres_env

    env = postgres_env(TEST_STORE)
    with psycopg.connect(
        dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"], password=env["POSTGRES_PASSWORD"] or None, autocommit=True,
    ) as connection:
        names = [row[0] for row in connection.execute("SELECT nspname FROM pg_namespace").fetchall()
                 if row[0].startswith(f"sftpsms_t_{RUN_TAG}_")]
        for name in names:
            connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def stored_rows(store: object) -> list[tuple[object, ...]]:
    """Every stored-event row of a store in log order, as (position, originator id in hex,
    version, topic, state bytes), the same shape on either backend: what byte-equality tests of
    the fast paths compare."""
    recorder = store.recorder  # type: ignore[attr-defined]
    if BACKEND == "sqlite":
        statement = "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events ORDER BY rowid"
        with recorder.datastore.transaction(commit=False) as cursor:
            cursor.execute(statement)
            return [tuple(row) for row in cursor.fetchall()]
    from psycopg import sql

    statement = sql.SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {}.{} ORDER BY notification_id"
    ).format(sql.Identifier(recorder.datastore.schema), sql.Identifier(recorder.events_table_name))
    with recorder.datastore.transaction(commit=False) as cursor:
        cursor.execute(statement)
        return [
            (row["notification_id"], row["originator_id"].hex, row["originator_version"], row["topic"], bytes(row["state"]))
            for row in cursor.fetchall()
        ]
