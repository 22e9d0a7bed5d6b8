"""LoginGuard: slow-down, lockout, expiry and reset, with time passed in."""

from __future__ import annotations

from sftpsms.lockout import LoginGuard

KEYS = ["user:acme", "peer:10.0.0.1"]


def test_first_failures_are_not_slowed() -> None:
    guard = LoginGuard(slowdown_after=3)
    guard.failed(KEYS, now=0)
    guard.failed(KEYS, now=0)
    assert guard.delay(KEYS, now=0) == 0


def test_answers_slow_down_exponentially_then_cap() -> None:
    guard = LoginGuard(slowdown_after=2, lockout_after=100, base_delay=0.5)
    delays = []
    for _ in range(8):
        guard.failed(KEYS, now=0)
        delays.append(guard.delay(KEYS, now=0))
    assert delays[:5] == [0, 0.5, 1.0, 2.0, 4.0] and max(delays) == 8.0


def test_lockout_after_n_failures_and_expiry() -> None:
    guard = LoginGuard(lockout_after=3, lockout_seconds=60)
    assert guard.failed(KEYS, now=0) == [] and guard.failed(KEYS, now=1) == []
    assert guard.failed(KEYS, now=2) == KEYS
    assert guard.locked_for(KEYS, now=30) == 32
    assert guard.locked_for(KEYS, now=62) <= 0


def test_one_key_locked_locks_the_attempt() -> None:
    guard = LoginGuard(lockout_after=2, lockout_seconds=60)
    guard.failed(["peer:10.0.0.1", "user:a"], now=0)
    guard.failed(["peer:10.0.0.1", "user:b"], now=0)
    assert guard.locked_for(["peer:10.0.0.1", "user:c"], now=1) > 0
    assert guard.locked_for(["peer:10.0.0.2", "user:c"], now=1) <= 0


def test_success_resets() -> None:
    guard = LoginGuard(slowdown_after=1)
    guard.failed(KEYS, now=0)
    guard.succeeded(KEYS)
    assert guard.delay(KEYS, now=0) == 0
