"""Token buckets for sending rates (SMS parts per second), with time passed in."""

from __future__ import annotations

# Tokens this close to enough are enough: float sums of (elapsed × rate) land a hair short, and a
# wait of 1e-15 s is a deadline the clock cannot tell from now, so a caller would spin on it.
EPSILON = 1e-9
# Seconds a caller may wake late without losing capacity. A bucket holding exactly one token would
# lose whatever time passes between "a token is there" and the caller's taking it (a loop waking
# 5 ms late sends 10/s as 9.5/s), so the default burst is one token plus this much refill.
TOLERANCE = 0.1


class TokenBucket:
    """`rate` tokens per second, holding at most `burst` (default 1 + TOLERANCE × rate). Starts full."""

    def __init__(self, rate: float, burst: float | None = None, now: float = 0.0) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else 1.0 + rate * TOLERANCE
        self.tokens = self.burst
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_time(self, cost: float, now: float) -> float:
        """Seconds until `cost` tokens are available (0 when they are now). A cost above the burst
        is allowed once the bucket is full, so a 10-part message is never stuck."""
        self._refill(now)
        needed = min(cost, self.burst)
        if self.tokens >= needed - EPSILON:
            return 0.0
        return (needed - self.tokens) / self.rate

    def take(self, cost: float, now: float) -> None:
        self._refill(now)
        self.tokens -= cost
