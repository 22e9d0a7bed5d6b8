"""Dispatch across two nodes on the real PostgreSQL (issue 10 §3): real `sftpsms serve` processes on
one store and one data directory, the account's lease holder killed with SIGKILL mid-dispatch."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.cluster_nodes import (
    add_account,
    cluster_store,
    cluster_url,
    contacts_file,
    count_submitted,
    drop_schema,
    node,
    postgres_available,
    reported_messages,
    simulator_ids,
    submissions,
    upload,
    wait_for,
)
from tests.receiver import running_receiver

# What one node can have handed to the simulator without its MessageSubmitted written yet: a
# flush's worth (actors/dispatcher.py FLUSH_EVERY, or FLUSH_INTERVAL of sending) plus a lane.
CRASH_WINDOW = 200 + 64


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    why = postgres_available()
    if why is not None:
        pytest.skip(f"no PostgreSQL: {why}")
    data = tmp_path / "data"
    data.mkdir()
    try:
        yield data
    finally:
        drop_schema(data)


def test_a_killed_lease_holders_account_is_taken_over_and_every_message_sent_once(data_dir: Path) -> None:
    env = {"SFTPSMS_ACCOUNT_RATE": "300", "SFTPSMS_SEND_RATE": "1000", "SFTPSMS_SIMULATOR_DELIVERY_DELAY": "0.2"}
    store = cluster_store(data_dir)
    try:
        with node(data_dir, "a", env) as a:
            add_account(data_dir, "acme")
            upload(a, "acme", "big.json", contacts_file(2000))
            _, report = a.wait_report("acme", "big.json", timeout=60)
            assert report["messages_queued"] == 2000
            with node(data_dir, "b", env) as b:
                # a holds the lease (b was not there when the messages were queued): a sends.
                wait_for(lambda: count_submitted(store) >= 500, 30, "a's first 500 submissions")
                a.process.send_signal(signal.SIGKILL)
                a.process.wait()
                killed = time.monotonic()
                before = count_submitted(store)  # a is dead: nothing more of it arrives
                wait_for(lambda: count_submitted(store) > before, 10, "a MessageSubmitted by b")
                takeover = time.monotonic() - killed
                wait_for(lambda: count_submitted(store) >= 2000, 60, "every message submitted", poll=0.2)
                wait_for(lambda: len(reported_messages(store)) >= 2000, 30, "every final status", poll=0.2)
                assert b.service_alive()
                assert "account=acme dispatch lease taken" in b.log()
        sent = submissions(store)
        reported = reported_messages(store)
    finally:
        store.close()
    assert takeover < 5, f"takeover took {takeover:.2f} s"
    # Every message exactly one MessageSubmitted (one per dispatch log index), and one final status.
    per_message = Counter((s.log, s.index) for s in sent)
    assert len(per_message) == 2000 and set(per_message.values()) == {1}
    assert len(reported) == 2000 and set(reported.values()) == {1}
    # The simulator: every message accepted; the ones a had accepted without its MessageSubmitted
    # written were sent again by b with the same id, and b's simulator recognised each of them.
    accepted_a, accepted_b = simulator_ids(data_dir, "a"), simulator_ids(data_dir, "b")
    resubmitted_b = simulator_ids(data_dir, "b", "resubmitted.log")
    assert len(set(accepted_a)) == len(accepted_a) and len(set(accepted_b)) == len(accepted_b)
    both = set(accepted_a) & set(accepted_b)
    assert both == set(resubmitted_b), "a message sent twice without being recognised"
    assert len(both) <= CRASH_WINDOW
    assert set(accepted_a) | set(accepted_b) == set(reported)
    print(f"takeover {takeover:.2f} s; a accepted {len(accepted_a)}, b {len(accepted_b)}, {len(both)} sent again and recognised")


def test_two_nodes_share_three_accounts_and_hold_the_service_rate_together(data_dir: Path) -> None:
    rate = 300.0
    env = {"SFTPSMS_ACCOUNT_RATE": "200", "SFTPSMS_SEND_RATE": str(rate), "SFTPSMS_SIMULATOR_DELIVERY_DELAY": "0.2"}
    store = cluster_store(data_dir)
    try:
        with node(data_dir, "a", env) as a, node(data_dir, "b", env) as b:
            for number, account in enumerate(("one", "two", "three")):
                add_account(data_dir, account)
                upload(a, account, f"{account}.json", contacts_file(1000, first=27_830_000_000 + number * 10_000))
            for account in ("one", "two", "three"):
                a.wait_report(account, f"{account}.json", timeout=60)
            wait_for(lambda: count_submitted(store) >= 3000, 60, "every message submitted", poll=0.2)
            assert a.service_alive() and b.service_alive()
        sent = submissions(store)
    finally:
        store.close()
    # Both nodes sent: the leases were spread.
    assert simulator_ids(data_dir, "a") and simulator_ids(data_dir, "b")
    # The cluster together never went over the service's rate (each node alone may take all of it).
    times = sorted(s.at.timestamp() for s in sent)
    start, end = times[0], times[-1]
    window = 2.0
    for left in range(int((end - start - window) / 0.5)):
        low = start + left * 0.5
        in_window = sum(1 for t in times if low <= t < low + window)
        assert in_window <= rate * window * 1.05 + rate * 0.1, f"{in_window} parts in {window} s from {low - start:.1f} s"
    overall = len(times) / (end - start)
    assert overall >= rate * 0.8, f"the cluster sent {overall:.0f} parts/s of {rate:.0f}"
    print(f"cluster rate {overall:.1f} parts/s of {rate:.0f}")


def test_each_delivery_event_is_posted_once_by_the_cluster_and_at_least_once_around_a_kill(data_dir: Path) -> None:
    env = {"SFTPSMS_ACCOUNT_RATE": "100", "SFTPSMS_SIMULATOR_DELIVERY_DELAY": "0.2"}
    store = cluster_store(data_dir)
    try:
        with running_receiver() as receiver:
            with node(data_dir, "a", env) as a, node(data_dir, "b", env) as b:
                add_account(data_dir, "acme")
                store.add_webhook("acme", receiver.url, "whsec_" + "A" * 32, ["delivery"])
                upload(a, "acme", "hooks.json", contacts_file(600))
                a.wait_report("acme", "hooks.json", timeout=60)
                receiver.wait(200, timeout=60)
                before_kill = [post.id for post in receiver.posts()]
                # Two nodes up: one sender for the cluster, each event once.
                assert len(set(before_kill)) == len(before_kill)
                holder, other = (a, b) if "webhook sender: lease taken" in a.log() else (b, a)
                assert "webhook sender: lease taken" not in other.log()
                holder.process.send_signal(signal.SIGKILL)
                holder.process.wait()
                wait_for(lambda: len({post.id for post in receiver.posts()}) >= 600, 60, "every event POSTed", poll=0.2)
                assert "webhook sender: lease taken" in other.log()
            posts = [post.id for post in receiver.posts()]
    finally:
        store.close()
    counts = Counter(posts)
    assert len(counts) == 600
    # Sent again only what the killed sender had POSTed without its outcome recorded.
    again = sum(count - 1 for count in counts.values())
    assert again <= 500 + 16, f"{again} events POSTed twice"  # a group of outcomes (GROUP) and the POSTs in flight
    print(f"{len(posts)} POSTs of 600 events; {again} sent again after the kill")


def test_an_account_rate_set_by_the_admin_cli_holds_on_whichever_node_sends(data_dir: Path) -> None:
    env = {"SFTPSMS_ACCOUNT_RATE": "400", "SFTPSMS_SEND_RATE": "10000", "SFTPSMS_SIMULATOR_DELIVERY_DELAY": "0.2"}
    store = cluster_store(data_dir)
    try:
        with node(data_dir, "a", env) as a, node(data_dir, "b", env):
            add_account(data_dir, "acme")
            upload(a, "acme", "slow.json", contacts_file(3000))
            a.wait_report("acme", "slow.json", timeout=60)
            wait_for(lambda: count_submitted(store) >= 300, 30, "sending at 400/s")
            done = subprocess.run(
                [sys.executable, "-m", "sftpsms.cli", "account", "rate", "acme", "40",
                 "--store", cluster_url(data_dir), "--data-dir", str(data_dir)],
                capture_output=True, text=True, timeout=60,
            )
            assert done.returncode == 0, done.stderr
            changed = datetime.now(UTC)
            time.sleep(4.5)
        sent = submissions(store)
    finally:
        store.close()
    before = [s for s in sent if changed - timedelta(seconds=1) <= s.at < changed]
    after = [s for s in sent if changed + timedelta(seconds=1.5) <= s.at < changed + timedelta(seconds=4.5)]
    assert len(before) >= 200, f"{len(before)} messages in the second before the change"
    assert len(after) <= 40 * 3 * 1.1 + 5, f"{len(after)} messages in 3 s at 40/s"
    assert len(after) >= 40 * 3 * 0.5, f"only {len(after)} messages in 3 s at 40/s"


def test_a_node_that_joins_is_handed_a_share_of_the_accounts_without_a_message_sent_twice(data_dir: Path) -> None:
    env = {"SFTPSMS_ACCOUNT_RATE": "150", "SFTPSMS_SEND_RATE": "10000", "SFTPSMS_SIMULATOR_DELIVERY_DELAY": "0.2"}
    store = cluster_store(data_dir)
    try:
        with node(data_dir, "a", env) as a:
            for number, account in enumerate(("one", "two", "three")):
                add_account(data_dir, account)
                upload(a, account, f"{account}.json", contacts_file(1500, first=27_830_000_000 + number * 10_000))
            for account in ("one", "two", "three"):
                a.wait_report(account, f"{account}.json", timeout=60)
            wait_for(lambda: count_submitted(store) >= 600, 30, "a sending for all three")
            with node(data_dir, "b", env) as b:
                wait_for(lambda: "dispatch lease taken" in b.log(), 10, "b taking an account")
                assert "dispatch lease given back" in a.log()
                wait_for(lambda: count_submitted(store) >= 4500, 60, "every message submitted", poll=0.2)
        sent = submissions(store)
    finally:
        store.close()
    per_message = Counter((s.log, s.index) for s in sent)
    assert len(per_message) == 4500 and set(per_message.values()) == {1}
    # Handed over, not taken from a dead node: a wrote everything it sent before giving the lease
    # back, so b sent nothing again.
    accepted_a, accepted_b = simulator_ids(data_dir, "a"), simulator_ids(data_dir, "b")
    assert accepted_b and not set(accepted_a) & set(accepted_b)
    assert simulator_ids(data_dir, "b", "resubmitted.log") == []
