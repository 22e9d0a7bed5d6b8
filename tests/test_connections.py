"""ConnectionCounter: caps in total, per address and per account; release is exact."""

from __future__ import annotations

import threading

import pytest

from sftpsms.connections import ConnectionCounter, TooManyConnections


def test_per_address_cap_leaves_other_addresses_in() -> None:
    counter = ConnectionCounter(max_total=10, max_per_address=2)
    counter.connect("10.0.0.1")
    counter.connect("10.0.0.1")
    with pytest.raises(TooManyConnections, match="from your address"):
        counter.connect("10.0.0.1")
    counter.connect("10.0.0.2")


def test_total_cap() -> None:
    counter = ConnectionCounter(max_total=2, max_per_address=5)
    counter.connect("a")
    counter.connect("b")
    with pytest.raises(TooManyConnections, match="to this server"):
        counter.connect("c")


def test_per_account_cap_counts_logged_in_connections() -> None:
    counter = ConnectionCounter(max_per_account=1)
    first, second = counter.connect("a"), counter.connect("b")
    first.logged_in("acme")
    with pytest.raises(TooManyConnections, match="for account acme"):
        second.logged_in("acme")
    first.close()
    second.logged_in("acme")
    assert counter.connections(account="acme") == 1


def test_close_is_idempotent_and_releases_everything() -> None:
    counter = ConnectionCounter()
    connection = counter.connect("a")
    connection.logged_in("acme")
    connection.close()
    connection.close()
    assert (counter.connections(), counter.connections(address="a"), counter.connections(account="acme")) == (0, 0, 0)


def test_threads_count_exactly() -> None:
    counter = ConnectionCounter(max_total=10_000, max_per_address=10_000)

    def churn() -> None:
        for _ in range(2000):
            counter.connect("a").close()

    threads = [threading.Thread(target=churn) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.connections() == 0
