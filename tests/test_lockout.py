"""LoginGuard: slow-down, lockout per (address, username) and per address, never per username
alone; checks in flight count; expiry and reset. Time is passed in."""

from __future__ import annotations

from sftpsms.lockout import MAX_RECORDS, Keys, LoginGuard

KEYS = Keys.of("10.0.0.1", "acme")


def fail(guard: LoginGuard, keys: Keys, now: float) -> list[str]:
    guard.begin(keys, now)
    return guard.failed(keys, now)


def test_first_failures_are_not_slowed() -> None:
    guard = LoginGuard(slowdown_after=3)
    fail(guard, KEYS, now=0)
    fail(guard, KEYS, now=0)
    assert guard.delay(KEYS, now=0) == 0


def test_answers_slow_down_exponentially_then_cap() -> None:
    guard = LoginGuard(slowdown_after=2, lockout_after=100, base_delay=0.5)
    delays = []
    for _ in range(8):
        fail(guard, KEYS, now=0)
        delays.append(guard.delay(KEYS, now=0))
    assert delays[:5] == [0, 0.5, 1.0, 2.0, 4.0] and max(delays) == 8.0


def test_lockout_of_the_pair_after_n_failures_and_expiry() -> None:
    guard = LoginGuard(lockout_after=3, lockout_seconds=60)
    assert fail(guard, KEYS, now=0) == [] and fail(guard, KEYS, now=1) == []
    assert fail(guard, KEYS, now=2) == [KEYS.pair]
    assert guard.locked_for(KEYS, now=30) == 32
    assert guard.locked_for(KEYS, now=62) <= 0


def test_failures_from_one_address_never_lock_the_user_out_elsewhere() -> None:
    guard = LoginGuard(lockout_after=3, slowdown_after=2, base_delay=0.5, user_max_delay=1.0)
    for n in range(50):
        fail(guard, Keys.of("10.6.6.6", "acme"), now=n)
    elsewhere = Keys.of("192.0.2.1", "acme")
    assert guard.locked_for(elsewhere, now=60) == 0
    assert 0 < guard.delay(elsewhere, now=60) <= 1.0  # slowed, softly


def test_many_addresses_guessing_one_name_never_lock_it() -> None:
    guard = LoginGuard(lockout_after=3, address_lockout_after=10)
    for n in range(1000):
        fail(guard, Keys.of(f"10.0.{n // 250}.{n % 250}", "acme"), now=n / 100)
    assert guard.locked_for(Keys.of("192.0.2.1", "acme"), now=11) == 0


def test_one_address_guessing_many_names_is_locked_out() -> None:
    guard = LoginGuard(lockout_after=5, address_lockout_after=4, lockout_seconds=60)
    for name in "abcd":
        fail(guard, Keys.of("10.0.0.1", name), now=0)
    assert guard.locked_for(Keys.of("10.0.0.1", "e"), now=1) > 0
    assert guard.locked_for(Keys.of("10.0.0.2", "e"), now=1) == 0


def test_checks_in_flight_count_so_parallel_guesses_cannot_pass_the_limit() -> None:
    guard = LoginGuard(lockout_after=3, address_lockout_after=5)
    started = 0
    for _ in range(60):  # 60 guesses arrive at once; none has an answer yet
        if guard.locked_for(KEYS, now=0) > 0:
            continue
        guard.begin(KEYS, now=0)
        started += 1
    assert started == 3


def test_an_abandoned_check_does_not_count() -> None:
    guard = LoginGuard(lockout_after=1)
    guard.begin(KEYS, now=0)
    assert guard.locked_for(KEYS, now=0) > 0
    guard.abandoned(KEYS, now=0)
    assert guard.locked_for(KEYS, now=0) == 0


def test_success_resets_the_pair_but_not_the_address() -> None:
    guard = LoginGuard(slowdown_after=1, lockout_after=100, address_lockout_after=3)
    fail(guard, Keys.of("10.0.0.1", "other"), now=0)
    fail(guard, Keys.of("10.0.0.1", "other"), now=0)
    fail(guard, KEYS, now=0)
    guard.begin(KEYS, now=0)
    guard.succeeded(KEYS, now=0)
    assert guard.delay(Keys.of("10.0.0.2", "acme"), now=0) == 0
    assert guard.locked_for(Keys.of("10.0.0.1", "third"), now=0) > 0  # a valid login does not reset guessing


def test_old_failures_are_forgotten() -> None:
    guard = LoginGuard(lockout_after=3, lockout_seconds=60)
    fail(guard, KEYS, now=0)
    fail(guard, KEYS, now=1)
    assert fail(guard, KEYS, now=100) == []  # the first two are older than the window


def test_the_records_stay_bounded() -> None:
    guard = LoginGuard(lockout_after=10**6, address_lockout_after=10**6)
    for n in range(MAX_RECORDS // 2 + 10):
        fail(guard, Keys.of("10.0.0.1", f"user{n}"), now=n / 1000)
    assert len(guard.records) <= MAX_RECORDS
