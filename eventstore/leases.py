"""Leases: work that must have one owner at a time among the nodes sharing one store.

An account's dispatch, a webhook URL's sender, a file's processing: each is a lease named by a
string key (`dispatch:acme`, `webhook:<url>`, `file:<uuid>`). On PostgreSQL a lease is a
session-level advisory lock (`pg_try_advisory_lock`) held on this node's own connection, so
PostgreSQL itself releases every lease of a node whose process or connection dies: no lock files,
no heartbeats to judge, no home-made failure detector. On SQLite there is one node, and every lease
is granted to it (kept in memory, so the same code asks the same questions on both backends).

Resource handling: `open_leases` returns an object whose `close()` releases everything (closing the
connection). Thread safety: every method may be called from any thread; one lock serialises the
use of the connection.

Membership: each node names its lease connection (`application_name` sftpsms/<scope>/<node>), so
`live_nodes()` counts the nodes of this store whose lease connection PostgreSQL holds open: a node
killed drops out the moment PostgreSQL closes its session, the same moment its leases are freed.
`check()` is the keepalive: one `SELECT 1` that tells a node (within its caller's period) that its
connection, and so every lease, is gone.

Error handling: a lost connection means every lease is lost: `held()` is then empty, `try_hold`
reconnects on its next call, and callers must stop the work of a key whose `holds(key)` turned
False before they write for it again (the events' optimistic concurrency refuses a second writer
of one aggregate regardless).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Mapping
from typing import Any, Protocol

from eventstore.pg_connection import close_quietly, connect

log = logging.getLogger(__name__)


def lock_id(key: str) -> int:
    """The advisory lock's 64-bit id of a lease key: stable across processes and versions."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


class Leases(Protocol):
    def try_hold(self, key: str) -> bool:
        """Take the lease `key` if nobody holds it (True also when this node holds it already)."""

    def release(self, key: str) -> None:
        """Give the lease up (nothing when not held)."""

    def holds(self, key: str) -> bool:
        """Whether this node holds `key` now (False once the connection that held it is gone)."""

    def held(self) -> frozenset[str]:
        """Every key this node holds."""

    def close(self) -> None:
        """Release everything."""

    def check(self) -> bool:
        """Whether the connection holding the leases is alive (a round trip); False drops every lease."""

    def live_nodes(self) -> int:
        """How many nodes of this store hold a lease connection now (this one included), at least 1."""


class LocalLeases:
    """One node (SQLite): every lease is granted; kept so `holds` answers as on PostgreSQL."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._lock = threading.Lock()

    def try_hold(self, key: str) -> bool:
        with self._lock:
            self._held.add(key)
        return True

    def release(self, key: str) -> None:
        with self._lock:
            self._held.discard(key)

    def holds(self, key: str) -> bool:
        with self._lock:
            return key in self._held

    def held(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._held)

    def close(self) -> None:
        with self._lock:
            self._held.clear()

    def check(self) -> bool:
        return True

    def live_nodes(self) -> int:
        return 1


class PostgresLeases:
    """Advisory locks on one autocommit connection of this node (eventsourcing's postgres settings)."""

    def __init__(self, env: Mapping[str, str], node: str = "") -> None:
        self._env = dict(env)
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._connection: Any = None
        # advisory locks are per database, not per schema: stores in schemas of one database must not
        # share lock ids
        self._scope = self._env.get("POSTGRES_SCHEMA", "") + ":"
        # the connection's name: how other nodes count this one (63 bytes at most in PostgreSQL)
        scope = hashlib.sha256(self._scope.encode()).hexdigest()[:12]
        self._members = f"sftpsms/{scope}/"
        self._application = (self._members + (node or "node"))[:63]

    def _connect(self) -> Any:

        if self._connection is not None and not self._connection.closed:
            return self._connection
        if self._held:
            log.warning("lost the store connection: leases %s are gone", sorted(self._held))
            self._held.clear()
        env = self._env
        self._connection = connect(
            env, self._application,
            # a node cut off from PostgreSQL must notice within seconds (its locks are then gone)
            keepalives=1, keepalives_idle=2, keepalives_interval=1, keepalives_count=3,
        )
        return self._connection

    def try_hold(self, key: str) -> bool:
        import psycopg

        with self._lock:
            if key in self._held and self._alive():
                return True
            try:
                connection = self._connect()
                row = connection.execute("SELECT pg_try_advisory_lock(%s)", (lock_id(self._scope + key),)).fetchone()
            except psycopg.OperationalError as error:
                log.warning("cannot reach the store for lease %s: %s", key, error)
                self._drop()
                return False
            if row and row[0]:
                self._held.add(key)
                return True
            return False

    def release(self, key: str) -> None:
        import psycopg

        with self._lock:
            if key not in self._held:
                return
            self._held.discard(key)
            try:
                self._connect().execute("SELECT pg_advisory_unlock(%s)", (lock_id(self._scope + key),))
            except psycopg.OperationalError:
                self._drop()

    def holds(self, key: str) -> bool:
        with self._lock:
            return key in self._held and self._alive()

    def held(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._held) if self._alive() else frozenset()

    def close(self) -> None:
        with self._lock:
            self._held.clear()
            self._drop()

    def check(self) -> bool:
        import psycopg

        with self._lock:
            try:
                self._connect().execute("SELECT 1")
            except psycopg.Error as error:
                if self._held:
                    log.warning("lease connection failed (%s): leases %s are gone", error, sorted(self._held))
                self._drop()
                return False
            return True

    def live_nodes(self) -> int:
        import psycopg

        with self._lock:
            try:
                row = self._connect().execute(
                    "SELECT count(DISTINCT application_name) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name LIKE %s",
                    (self._members + "%",),  # hex and slashes: no LIKE wildcard in it
                ).fetchone()
            except psycopg.Error:
                self._drop()
                return 1
            return max(1, int(row[0]) if row else 1)

    def _alive(self) -> bool:
        connection = self._connection
        if connection is None or connection.closed or connection.broken:
            if self._held:
                log.warning("lost the store connection: leases %s are gone", sorted(self._held))
            self._held.clear()
            return False
        return True

    def _drop(self) -> None:
        self._held.clear()
        close_quietly(self._connection)
        self._connection = None


def open_leases(env: Mapping[str, str], node: str = "") -> Leases:
    """Leases for the store whose environment is `env` (eventstore.store.store_env), held by the
    node named `node` (Settings.node_name; what `live_nodes` counts)."""
    if env.get("PERSISTENCE_MODULE") == "eventsourcing.postgres":
        return PostgresLeases(env, node)
    return LocalLeases()
