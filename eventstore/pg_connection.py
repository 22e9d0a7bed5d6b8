"""Connections of our own to the PostgreSQL event store (leases, rate buckets, the webhook
position, table creation), from the same eventsourcing settings the store itself uses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def connect(env: Mapping[str, str], application_name: str, **options: Any) -> Any:
    """An autocommit psycopg connection to the database `env` (eventstore.store.store_env) names."""
    import psycopg

    return psycopg.connect(
        dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"], password=env.get("POSTGRES_PASSWORD") or None,
        connect_timeout=int(env.get("POSTGRES_CONNECT_TIMEOUT", "10")), autocommit=True,
        application_name=application_name, **options,
    )


def close_quietly(connection: Any) -> None:
    """Close a connection that may already be broken."""
    if connection is None:
        return
    try:
        connection.close()
    except Exception:  # noqa: BLE001 - closing a broken connection
        pass
