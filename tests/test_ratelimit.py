"""Token buckets: rates in parts per second, with time passed in."""

from __future__ import annotations

import pytest

from sftpsms.ratelimit import TokenBucket


def test_full_bucket_serves_its_burst_without_waiting() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    for _ in range(3):
        assert bucket.wait_time(1, now=0) == 0
        bucket.take(1, now=0)
    assert bucket.wait_time(1, now=0) == pytest.approx(0.1)


def test_long_run_rate_matches_the_configured_rate() -> None:
    bucket = TokenBucket(rate=50, burst=5)
    now, sent = 0.0, 0
    while now < 10:
        now += bucket.wait_time(1, now)
        bucket.take(1, now)
        sent += 1
    assert sent == pytest.approx(50 * 10 + 5, abs=2)


def test_multi_part_messages_cost_their_parts() -> None:
    bucket = TokenBucket(rate=10, burst=10)
    bucket.take(4, now=0)
    bucket.take(4, now=0)
    assert bucket.wait_time(4, now=0) == pytest.approx(0.2)


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=0)


def test_a_wait_is_zero_or_one_the_clock_can_measure() -> None:
    # A caller sleeps until now + wait. A bucket a float hair short of a token must not ask for a
    # wait so small that now + wait == now: the caller would spin forever. This is the state the
    # dispatcher's test reached after 13.38 s of refills at 100/s.
    now = 13.37999999999976
    bucket = TokenBucket(rate=100.0, burst=10.0, now=now)
    bucket.tokens = 0.9999999999999787
    wait = bucket.wait_time(1, now)
    assert wait == 0.0 or now + wait > now


def test_a_caller_waking_late_within_the_tolerance_loses_no_capacity() -> None:
    # A loop that always wakes 5 ms after it was told to still gets the configured rate over time:
    # the refill it was late for is kept (up to the burst) instead of capped at one token.
    bucket = TokenBucket(rate=10)
    now, sent = 0.0, 0
    while now < 60:
        wait = bucket.wait_time(1, now)
        now += wait + (0.005 if wait else 0)
        bucket.take(1, now)
        sent += 1
    assert sent == pytest.approx(10 * 60, abs=3)
