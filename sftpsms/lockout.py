"""Failed logins: exponential slow-down, then a lockout, per source address and per username."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

MAX_DELAY = 8.0


@dataclass
class _Record:
    failures: int = 0
    locked_until: float = 0.0


@dataclass
class LoginGuard:
    slowdown_after: int = 3  # failures before answers slow down
    lockout_after: int = 10  # failures that lock the key out
    lockout_seconds: float = 900.0
    base_delay: float = 0.5  # the first slowed answer; doubles with each failure after
    records: dict[str, _Record] = field(default_factory=dict)

    def locked_for(self, keys: Iterable[str], now: float) -> float:
        """Seconds left of the longest lockout among `keys` (0 when none is locked)."""
        return max((self.records[k].locked_until - now for k in keys if k in self.records), default=0.0)

    def delay(self, keys: Iterable[str], now: float) -> float:
        failures = max((self.records[k].failures for k in keys if k in self.records), default=0)
        if failures < self.slowdown_after:
            return 0.0
        return float(min(MAX_DELAY, self.base_delay * 2 ** (failures - self.slowdown_after)))

    def failed(self, keys: Iterable[str], now: float) -> list[str]:
        """Count a failure; returns the keys it locked out just now."""
        locked = []
        for key in keys:
            record = self.records.setdefault(key, _Record())
            if record.locked_until and record.locked_until <= now:
                record.failures, record.locked_until = 0, 0.0  # an expired lockout starts afresh
            record.failures += 1
            if record.failures >= self.lockout_after and record.locked_until <= now:
                record.locked_until = now + self.lockout_seconds
                locked.append(key)
        return locked

    def succeeded(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.records.pop(key, None)
