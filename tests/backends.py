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
