"""Test and benchmark harness for several `sftpsms serve` nodes on one PostgreSQL store and one data
directory: start nodes, read the shared log, read each node's simulator journals."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.utils import get_topic
from psycopg import sql

from eventstore.dispatch_rows import REPORTED_TOPIC, SUBMITTED_TOPIC
from eventstore.domain import DispatchLog
from eventstore.store import SmsStore, open_store, store_env
from sftpsms.passwords import hash_password
from tests.service import LEGACY, Service, running_service

PG = os.environ.get("SFTPSMS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def cluster_url(data_dir: Path) -> str:
    """The store of the nodes sharing `data_dir`: a schema of its own, named so that no suite's
    end drops it while another suite's nodes run (tests/backends.py drops only its own run's)."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:20]
    return f"{PG}?schema=cluster_{digest}"


def postgres_available() -> str | None:
    """None when the PostgreSQL of this machine answers, else why not."""
    try:
        psycopg.connect(PG, connect_timeout=3).close()
    except psycopg.OperationalError as error:
        return str(error)
    return None


def drop_schema(data_dir: Path) -> None:
    schema = store_env(data_dir, cluster_url(data_dir))["POSTGRES_SCHEMA"]
    with psycopg.connect(PG, autocommit=True) as connection:
        connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def node(data_dir: Path, name: str, env: dict[str, str] | None = None, *extra: str) -> Iterator[Service]:
    """One node of the cluster: `sftpsms serve --store ... --node NAME` on the shared data dir,
    logging to DATA/node-NAME.log."""
    with running_service(
        data_dir, "--node", name, *extra, env=env, log_path=data_dir / f"node-{name}.log", store_url=cluster_url(data_dir),
    ) as service:
        yield service


def cluster_store(data_dir: Path) -> SmsStore:
    return open_store(data_dir, cluster_url(data_dir))


def add_account(data_dir: Path, username: str, *, credits: int = 100_000, password: str = "secret-pw") -> None:
    store = cluster_store(data_dir)
    try:
        store.create_account(
            username=username, password_hash=hash_password(password), email=None, country="ZA", created_at=LEGACY
        )
        store.add_credits(username, credits)
    finally:
        store.close()


def contacts_file(count: int, first: int = 27_830_000_000, text: str = "Hello @@value1@@") -> bytes:
    contacts = [{"msisdn": str(first + i), "value1": str(i)} for i in range(count)]
    return json.dumps({"Version": 7, "Message_Template": text, "Contacts": contacts}).encode()


def upload(service: Service, account: str, name: str, content: bytes) -> None:
    with service.paramiko(account) as sftp:
        with sftp.open(f"Send_SMS/{name}", "wb") as remote:
            remote.write(content)


@dataclass(frozen=True)
class Submission:
    log: UUID
    index: int
    account: str
    at: datetime
    parts: int


def _events(store: SmsStore, topic: str) -> Iterator[tuple[Any, Any]]:
    after = 0
    while True:
        page = store.notifications(after, 1000, [topic])
        for notification in page:
            yield notification, store.mapper.to_domain_event(notification)
        if len(page) < 1000:
            return
        after = page[-1].id


def submissions(store: SmsStore) -> list[Submission]:
    """Every MessageSubmitted in the shared log (the account from its dispatch log's start)."""
    accounts = {UUID(str(e.originator_id)): e.account for _, e in _events(store, get_topic(DispatchLog.DispatchStarted))}
    return [
        Submission(UUID(str(e.originator_id)), e.index, accounts.get(UUID(str(e.originator_id)), ""),
                   datetime.fromisoformat(e.submitted_at), e.parts)
        for _, e in _events(store, SUBMITTED_TOPIC)
    ]


def reported_messages(store: SmsStore) -> Counter[str]:
    """Message id → DeliveryReported events for it (a final status each)."""
    return Counter(str(e.message_id) for _, e in _events(store, REPORTED_TOPIC))


def count_submitted(store: SmsStore) -> int:
    return sum(1 for _ in _events(store, SUBMITTED_TOPIC))


def simulator_ids(data_dir: Path, name: str, journal: str = "accepted.log") -> list[str]:
    """The message ids of one node's simulator journal, in order (one per line)."""
    path = data_dir / "nodes" / name / "simulator" / journal
    if not path.exists():
        return []
    return [line.split(" ", 1)[0] for line in path.read_text().splitlines() if line.strip()]


def wait_for(condition: Any, timeout: float, what: str, poll: float = 0.05) -> float:
    """Wait until `condition()` is true; returns the time it took. Fails after `timeout` seconds."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not after {timeout} s")
        time.sleep(poll)
    return time.monotonic() - started
