"""The cluster benchmark behind scripts/bench_cluster (see there): one function per section."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from eventstore.store import postgres_env  # noqa: E402
from scripts.bench_cluster_dispatch import dispatch, failover  # noqa: E402
from scripts.bench_cluster_rolling import add_arguments as add_rolling_arguments  # noqa: E402
from scripts.bench_cluster_rolling import rolling  # noqa: E402
from scripts.bench_ingest import expected_state_size, measure_ingest, raw_sqlite_rate  # noqa: E402

DEFAULT_STORE = "postgresql://postgres@127.0.0.1:5432/test"
RAW_BATCH = 1000  # rows per transaction of the raw rates


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    env = postgres_env(url)
    return psycopg.connect(
        dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"], password=env["POSTGRES_PASSWORD"] or None, autocommit=True,
    )


def _drop_schema(url: str, schema: str) -> None:
    with _connect(url) as connection:
        connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def raw_postgres_rate(url: str, rows: int, state_size: int) -> float:
    """Plain psycopg COPY into a table with eventsourcing's columns and indexes (primary key on
    originator id and version, a bigserial notification id with its unique index), RAW_BATCH rows
    a transaction, each batch one originator (as a contact batch is)."""
    schema = f"sftpsms_bench_raw_{uuid.uuid4().hex[:12]}"
    table = sql.Identifier(schema, "stored_events")
    topic = "eventstore.domain:ContactBatch.MessageQueued"
    state = b"x" * state_size
    try:
        with _connect(url) as connection:
            connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            connection.execute(sql.SQL(
                "CREATE TABLE {} (originator_id uuid NOT NULL, originator_version bigint NOT NULL, topic text, "
                "state bytea, notification_id bigserial, PRIMARY KEY (originator_id, originator_version))"
            ).format(table))
            connection.execute(sql.SQL("CREATE UNIQUE INDEX ON {} (notification_id)").format(table))
            connection.autocommit = False
            copy_statement = sql.SQL(
                "COPY {} (originator_id, originator_version, topic, state) FROM STDIN (FORMAT BINARY)"
            ).format(table)
            started = time.perf_counter()
            for batch in range(0, rows, RAW_BATCH):
                originator = uuid.uuid4()
                with connection.transaction(), connection.cursor() as cursor, cursor.copy(copy_statement) as copy:
                    copy.set_types(["uuid", "int8", "text", "bytea"])
                    for version in range(min(RAW_BATCH, rows - batch)):
                        copy.write_row((originator, version, topic, state))
            elapsed = time.perf_counter() - started
    finally:
        _drop_schema(url, schema)
    return rows / elapsed


def ingest(args: argparse.Namespace, scratch: Path) -> None:
    """100 000 contacts (--contacts) on SQLite and on PostgreSQL, each beside its raw rate,
    measured just before and just after (the machine is shared; the ratio uses their mean)."""
    contacts = args.contacts
    print(f"== ingest: {contacts:,} contacts over SFTP, upload close → FileCompleted", flush=True)
    size = expected_state_size(contacts)

    raw_before = raw_sqlite_rate(contacts, size, scratch)
    sqlite = measure_ingest(contacts, scratch / "sqlite")
    raw_after = raw_sqlite_rate(contacts, sqlite.state_size, scratch)
    sqlite_raw = (raw_before + raw_after) / 2

    schema = f"sftpsms_bench_{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in args.store else "?"
    store = f"{args.store}{separator}schema={schema}"
    try:
        pg_before = raw_postgres_rate(args.store, contacts, size)
        postgres = measure_ingest(contacts, scratch / "postgresql", store=store)
        pg_after = raw_postgres_rate(args.store, contacts, postgres.state_size)
    finally:
        _drop_schema(args.store, schema)
    pg_raw = (pg_before + pg_after) / 2

    print(f"{'backend':<11} {'ingest':>15} {'raw, same rows':>18} {'ingest / raw':>13}")
    print(
        f"{'sqlite':<11} {sqlite.rate:>10,.0f} c/s {sqlite_raw:>13,.0f} r/s {100 * sqlite.rate / sqlite_raw:>12.1f} %"
        f"   (raw: sqlite3 executemany, {RAW_BATCH}/txn; before {raw_before:,.0f}, after {raw_after:,.0f})"
    )
    print(
        f"{'postgresql':<11} {postgres.rate:>10,.0f} c/s {pg_raw:>13,.0f} r/s {100 * postgres.rate / pg_raw:>12.1f} %"
        f"   (raw: psycopg COPY, {RAW_BATCH}/txn; before {pg_before:,.0f}, after {pg_after:,.0f}; target ≥ 30 %)"
    )
    print(
        f"pickup (close → FileReceived): sqlite {sqlite.pickup_ms:.1f} ms, postgresql {postgres.pickup_ms:.1f} ms; "
        f"peak RSS: sqlite {sqlite.rss_mb + sqlite.worker_rss_mb:.0f} MB, "
        f"postgresql {postgres.rss_mb + postgres.worker_rss_mb:.0f} MB"
    )


# Section name → what measures it, in the order a full run takes them: ingest beside SQLite,
# dispatch with 1 and 2 nodes on PostgreSQL (msg/s and the accuracy of three accounts at
# 1 200/800/400 parts/s; scripts/bench_cluster_dispatch.py), failover (kill -9 of an account's
# lease holder → seconds until its next MessageSubmitted on the other node), and the rolling
# restart behind HAProxy (scripts/bench_cluster_rolling.py).
SECTIONS: dict[str, Callable[[argparse.Namespace, Path], None]] = {
    "ingest": ingest,
    "dispatch": lambda args, _scratch: dispatch(args),
    "failover": lambda args, _scratch: failover(args),
    "rolling": lambda args, _scratch: rolling(args),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=list(SECTIONS), help="run one section (default: every section)")
    parser.add_argument("--contacts", type=int, default=100_000, help="contacts of the ingest section's file")
    parser.add_argument("--store", default=os.environ.get("SFTPSMS_BENCH_STORE", DEFAULT_STORE),
                        help="the PostgreSQL database (each run uses its own schema, dropped at the end)")
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    parser.add_argument("--window", type=float, default=20.0, help="seconds over which the dispatch rates are measured")
    parser.add_argument("--messages", type=int, default=60_000, help="messages of the dispatch throughput runs")
    add_rolling_arguments(parser)  # --nodes, --seconds, --every of the rolling restart
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        for name, section in SECTIONS.items():
            if args.only in (None, name):
                section(args, scratch)
    finally:
        if args.keep:
            print(f"data kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
