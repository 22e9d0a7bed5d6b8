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
