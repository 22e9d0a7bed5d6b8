"""Token buckets shared through PostgreSQL (eventstore/rate_buckets.py), on the real PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from eventstore.rate_buckets import SharedBuckets
from eventstore.store import postgres_env
from tests.cluster_nodes import PG, postgres_available


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    why = postgres_available()
    if why is not None:
        pytest.skip(f"no PostgreSQL: {why}")
    schema = f"buckets_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield {**postgres_env(PG), "POSTGRES_SCHEMA": schema}
    finally:
        with psycopg.connect(PG, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def test_a_new_bucket_is_full_and_grants_no_more_than_it_holds(env: dict[str, str]) -> None:
    buckets = SharedBuckets(env)
    try:
        assert buckets.draw("service", 30, rate=1.0, burst=50) == 30
        assert buckets.draw("service", 30, rate=1.0, burst=50) == pytest.approx(20, abs=0.1)
        assert buckets.draw("service", 30, rate=1.0, burst=50) < 0.1
        assert buckets.draw("gateway:smpp", 5, rate=1.0, burst=50) == 5  # another key, its own tokens
    finally:
        buckets.close()


def test_two_nodes_drawing_together_never_get_more_than_the_rate(env: dict[str, str]) -> None:
    rate, burst = 500.0, 50.0
    nodes = [SharedBuckets(env), SharedBuckets(env)]
    granted = [0.0, 0.0]
    nodes[0].draw("service", 0, rate=rate, burst=burst)  # created full: `burst` to draw at once
    clock = psycopg.connect(PG, autocommit=True)  # the buckets count PostgreSQL's time: so does the test
    server_started = clock.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0]
    started = time.monotonic()

    def drain(number: int) -> None:
        while time.monotonic() - started < 1.0:
            granted[number] += nodes[number].draw("service", 20, rate=rate, burst=burst)

    threads = [threading.Thread(target=drain, args=(number,)) for number in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = float(clock.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0] - server_started)
    clock.close()
    for buckets in nodes:
        buckets.close()
    assert sum(granted) <= rate * elapsed + burst + 1
    assert sum(granted) >= 0.8 * rate * 1.0  # both kept drawing: the bucket was emptied as it filled
    assert min(granted) > 0  # both got a share
