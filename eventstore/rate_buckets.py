"""Token buckets shared by the nodes of one PostgreSQL store: the service's and each gateway's rate.

One row per bucket (`sftpsms_rate_buckets`: tokens, and the time they were counted). A node draws
tokens in chunks with one UPDATE that refills the row for the time passed (at most `burst`), takes
what it asks for or what there is, and returns how much it got: the row lock orders the draws of
all nodes, so the cluster together never takes more than `rate` per second plus one burst,
however its work is spread among the nodes, and a node with no work draws nothing. (Dividing the
rate among live nodes would leave a share unused whenever a node has less work than its share: a
cluster of two where one node's only account finished would send at half the configured rate.)

The node keeps what it drew as a local allowance (actors/shared_rates.py) and draws again when it
runs low, so a draw costs a round trip every CHUNK_SECONDS or so per node, never one per message.
Time is PostgreSQL's (`statement_timestamp()`, never moved backwards), so the nodes' clocks need
not agree.

Thread safety: one lock serialises the connection; call from worker threads.
Error handling: a failed draw raises psycopg.Error after dropping the connection; the next draw
reconnects.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from eventstore.pg_connection import close_quietly, connect

TABLE = "sftpsms_rate_buckets"

# The row's tokens refilled to now, at most the burst (SET expressions all see the row as it was).
_AVAILABLE = (
    "least(%(burst)s, tokens + greatest(0, extract(epoch FROM statement_timestamp() - stamp)) * %(rate)s)"
)
_DRAW = (
    "UPDATE {table} SET"
    f" granted = least(%(want)s, greatest(0, {_AVAILABLE})),"
    f" tokens = {_AVAILABLE} - least(%(want)s, greatest(0, {_AVAILABLE})),"
    " stamp = greatest(stamp, statement_timestamp())"
    " WHERE key = %(key)s RETURNING granted"
)


class SharedBuckets:
    """Draws from the shared buckets of the store whose environment is `env` (eventsourcing's
    postgres settings, eventstore.store.store_env)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = dict(env)
        self._lock = threading.Lock()
        self._connection: Any = None
        self._created: set[str] = set()
        schema = self._env.get("POSTGRES_SCHEMA")
        from psycopg import sql

        self._table = sql.Identifier(schema, TABLE) if schema else sql.Identifier(TABLE)
        self._draw = sql.SQL(_DRAW).format(table=self._table)

    def _connect(self) -> Any:
        import psycopg
        from psycopg import sql

        if self._connection is not None and not self._connection.closed:
            return self._connection
        env = self._env
        self._connection = connect(env, "sftpsms-rates")
        try:
            self._connection.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (key text PRIMARY KEY, tokens double precision NOT NULL,"
                " granted double precision NOT NULL DEFAULT 0, stamp timestamptz NOT NULL)"
            ).format(self._table))
        except psycopg.errors.UniqueViolation:
            pass  # another node made it at the same moment
        self._created.clear()
        return self._connection

    def draw(self, key: str, want: float, *, rate: float, burst: float) -> float:
        """Take up to `want` tokens from the bucket `key` (`rate` per second, at most `burst`
        held; created full); returns how many were granted (0 when it is empty)."""
        import psycopg
        from psycopg import sql

        with self._lock:
            try:
                connection = self._connect()
                if key not in self._created:
                    connection.execute(
                        sql.SQL(
                            "INSERT INTO {} (key, tokens, stamp) VALUES (%s, %s, statement_timestamp())"
                            " ON CONFLICT (key) DO NOTHING"
                        ).format(self._table),
                        (key, burst),
                    )
                    self._created.add(key)
                row = connection.execute(self._draw, {"key": key, "want": want, "rate": rate, "burst": burst}).fetchone()
            except psycopg.Error:
                self._drop()
                raise
            return float(row[0]) if row else 0.0

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        close_quietly(self._connection)
        self._connection = None
