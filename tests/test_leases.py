"""Leases (eventstore/leases.py) on the real PostgreSQL of this machine, and the one-node SQLite kind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import psycopg
import pytest

from eventstore.leases import LocalLeases, PostgresLeases, lock_id, open_leases
from eventstore.store import postgres_env

URL = os.environ.get("SFTPSMS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _env(schema: str) -> dict[str, str]:
    env = postgres_env(URL)
    env["POSTGRES_SCHEMA"] = schema
    return env


@pytest.fixture
def env() -> dict[str, str]:
    try:
        psycopg.connect(URL, connect_timeout=3).close()
    except psycopg.OperationalError as error:
        pytest.skip(f"no PostgreSQL at {URL}: {error}")
    return _env(f"leases_{uuid.uuid4().hex[:12]}")


def test_a_lease_has_one_holder_until_released(env: dict[str, str]) -> None:
    a, b = PostgresLeases(env), PostgresLeases(env)
    try:
        assert a.try_hold("dispatch:acme")
        assert a.try_hold("dispatch:acme")  # again: still ours
        assert not b.try_hold("dispatch:acme")
        assert a.holds("dispatch:acme") and not b.holds("dispatch:acme")
        assert b.try_hold("dispatch:other")
        a.release("dispatch:acme")
        assert not a.holds("dispatch:acme")
        assert b.try_hold("dispatch:acme")
        assert b.held() == {"dispatch:acme", "dispatch:other"}
    finally:
        a.close()
        b.close()


def test_closing_releases_every_lease(env: dict[str, str]) -> None:
    a, b = PostgresLeases(env), PostgresLeases(env)
    try:
        assert a.try_hold("x") and a.try_hold("y")
        a.close()
        assert a.held() == frozenset()
        assert b.try_hold("x") and b.try_hold("y")
    finally:
        b.close()


def test_leases_of_two_schemas_do_not_meet(env: dict[str, str]) -> None:
    a, b = PostgresLeases(env), PostgresLeases(_env(env["POSTGRES_SCHEMA"] + "_other"))
    try:
        assert a.try_hold("dispatch:acme")
        assert b.try_hold("dispatch:acme")
    finally:
        a.close()
        b.close()


def test_a_killed_holder_loses_its_leases_at_once(env: dict[str, str]) -> None:
    """kill -9 of the holding process: PostgreSQL ends its session and frees the lock."""
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time, json\n"
            "from eventstore.leases import PostgresLeases\n"
            "leases = PostgresLeases(json.loads(sys.argv[1]))\n"
            "assert leases.try_hold('dispatch:acme')\n"
            "print('held', flush=True)\n"
            "time.sleep(600)\n"
        ), __import__("json").dumps(env)],
        stdout=subprocess.PIPE, text=True,
    )
    other = PostgresLeases(env)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not other.try_hold("dispatch:acme")
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        started = time.monotonic()
        while not other.try_hold("dispatch:acme"):
            assert time.monotonic() - started < 5, "the dead holder's lease was not freed within 5 s"
            time.sleep(0.05)
    finally:
        holder.kill()
        other.close()


def test_sqlite_has_one_node_that_holds_everything() -> None:
    leases = open_leases({"PERSISTENCE_MODULE": "eventsourcing.sqlite"})
    assert isinstance(leases, LocalLeases)
    assert leases.try_hold("a") and leases.holds("a") and leases.held() == {"a"}
    leases.release("a")
    assert not leases.holds("a")


def test_lock_ids_are_stable_64_bit_numbers() -> None:
    assert lock_id("dispatch:acme") == lock_id("dispatch:acme") != lock_id("dispatch:acme2")
    assert -(2**63) <= lock_id("x") < 2**63


def test_live_nodes_counts_the_nodes_of_one_store_by_their_lease_connections(env: dict[str, str]) -> None:
    a, b = PostgresLeases(env, "node-a"), PostgresLeases(env, "node-b")
    elsewhere = PostgresLeases(_env(env["POSTGRES_SCHEMA"] + "_other"), "node-c")
    try:
        assert a.check() and elsewhere.check()
        assert a.live_nodes() == 1  # b has not connected yet; c belongs to another store
        assert b.check()
        assert a.live_nodes() == b.live_nodes() == 2
        b.close()
        deadline = time.monotonic() + 2  # the server ends a closed session's backend a moment later
        while a.live_nodes() != 1:
            assert time.monotonic() < deadline, "a closed node still counted after 2 s"
            time.sleep(0.02)
    finally:
        a.close()
        b.close()
        elsewhere.close()


def test_check_notices_a_connection_ended_by_the_server(env: dict[str, str]) -> None:
    leases = PostgresLeases(env, "node-a")
    try:
        assert leases.try_hold("dispatch:acme")
        with psycopg.connect(URL, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                (leases._application,),
            )
        assert not leases.check()
        assert leases.held() == frozenset()
        assert leases.check()  # reconnected; the lease has to be taken again
        assert leases.try_hold("dispatch:acme")
    finally:
        leases.close()


def test_one_node_on_sqlite_is_always_alone_and_alive() -> None:
    leases = LocalLeases()
    assert leases.check() and leases.live_nodes() == 1
