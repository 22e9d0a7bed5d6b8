"""Failed logins: slowed answers, then lockouts that an attacker cannot turn against the real user.

Failures are counted three ways (PRODUCT.md §1, "repeated failed logins from one address"):
- per (address, username): slowed, then locked out; the attacker's address and the name it guesses;
- per address: locked out after many more failures (one address guessing many names);
- per username alone: only slowed, softly (`user_max_delay`), and never locked, so failures from
  elsewhere never lock the legitimate user out of their own account.
A check in flight counts as a failure until it ends, so guesses sent in parallel cannot pass the
limits: at most `lockout_after` checks are ever made for one (address, username) before its lockout.
Pure: time is passed in; the gate serialises calls (one trio thread).
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_DELAY = 8.0
MAX_RECORDS = 100_000  # past this many tracked keys, forgotten ones are dropped first


@dataclass
class _Record:
    failures: int = 0
    in_flight: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


@dataclass(frozen=True)
class Keys:
    """What one login attempt is counted against."""

    pair: str
    address: str
    user: str

    @classmethod
    def of(cls, address: str, username: str) -> Keys:
        return cls(pair=f"pair:{address}:{username}", address=f"peer:{address}", user=f"user:{username}")


@dataclass
class LoginGuard:
    slowdown_after: int = 3  # failures before answers slow down
    lockout_after: int = 10  # failures of one (address, username) that lock that pair out
    address_lockout_after: int = 50  # failures from one address (any names) that lock the address out
    lockout_seconds: float = 900.0  # also how long failures are remembered
    base_delay: float = 0.5  # the first slowed answer; doubles with each failure after
    user_max_delay: float = 1.0  # the most that failures from elsewhere slow a username's answers
    records: dict[str, _Record] = field(default_factory=dict)

    def locked_for(self, keys: Keys, now: float) -> float:
        """Seconds left of the lockout of this address or (address, username) pair; 0 when it may
        try. Checks in flight count as failures: when they could reach a lockout, this waits too."""
        locked = 0.0
        for key, limit in ((keys.pair, self.lockout_after), (keys.address, self.address_lockout_after)):
            record = self._current(key, now)
            if record is None:
                continue
            if record.locked_until > now:
                locked = max(locked, record.locked_until - now)
            elif record.failures + record.in_flight >= limit:
                locked = max(locked, self.lockout_seconds)  # guesses in flight would lock it
        return locked

    def delay(self, keys: Keys, now: float) -> float:
        """How long to wait before checking this attempt's credentials."""
        pair = self._failures(keys.pair, now)
        address = self._failures(keys.address, now)
        user = self._failures(keys.user, now)
        own = self._slowdown(max(pair, address - self.lockout_after))
        return max(own, min(self.user_max_delay, self._slowdown(user)))

    def begin(self, keys: Keys, now: float) -> None:
        """A check starts: it counts until `failed`, `succeeded` or `abandoned`."""
        for key in (keys.pair, keys.address):
            self._record(key, now).in_flight += 1

    def failed(self, keys: Keys, now: float) -> list[str]:
        """The check failed; returns the keys it locked out just now."""
        self._end(keys, now)
        locked = []
        for key, limit in (
            (keys.pair, self.lockout_after),
            (keys.address, self.address_lockout_after),
            (keys.user, 0),
        ):
            record = self._record(key, now)
            record.failures += 1
            record.last_failure = now
            if limit and record.failures >= limit and record.locked_until <= now:
                record.locked_until = now + self.lockout_seconds
                locked.append(key)
        self._prune(now)
        return locked

    def succeeded(self, keys: Keys, now: float) -> None:
        """The right credentials: the pair and the username start afresh (the address does not: one
        valid account must not reset an address's count of guesses at others)."""
        self._end(keys, now)
        for key in (keys.pair, keys.user):
            self.records.pop(key, None)

    def abandoned(self, keys: Keys, now: float) -> None:
        """The check ended without an answer (an error, a cancelled login)."""
        self._end(keys, now)

    # ---- records --------------------------------------------------------------------------------

    def _end(self, keys: Keys, now: float) -> None:
        for key in (keys.pair, keys.address):
            record = self.records.get(key)
            if record is not None and record.in_flight:
                record.in_flight -= 1

    def _slowdown(self, failures: int) -> float:
        if failures < self.slowdown_after:
            return 0.0
        return float(min(MAX_DELAY, self.base_delay * 2 ** (failures - self.slowdown_after)))

    def _failures(self, key: str, now: float) -> int:
        record = self._current(key, now)
        return record.failures if record is not None else 0

    def _current(self, key: str, now: float) -> _Record | None:
        """The key's record, reset when its lockout expired or its failures are old."""
        record = self.records.get(key)
        if record is None:
            return None
        expired = record.locked_until and record.locked_until <= now
        forgotten = not record.locked_until and record.failures and now - record.last_failure >= self.lockout_seconds
        if expired or forgotten:
            record.failures, record.locked_until = 0, 0.0
        return record

    def _record(self, key: str, now: float) -> _Record:
        record = self._current(key, now)
        if record is None:
            record = self.records[key] = _Record()
        return record

    def _prune(self, now: float) -> None:
        if len(self.records) <= MAX_RECORDS:
            return
        for key in list(self.records):
            record = self._current(key, now)
            if record is not None and not record.failures and not record.in_flight:
                del self.records[key]
        excess = len(self.records) - MAX_RECORDS * 9 // 10  # room for a while: pruning is not per failure
        if excess > 0:  # still full: the oldest unlocked ones go first
            idle = [(r.last_failure, k) for k, r in self.records.items() if r.locked_until <= now and not r.in_flight]
            for _, key in sorted(idle)[:excess]:
                del self.records[key]
