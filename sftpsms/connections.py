"""How many connections the doors hold: in total, per source address and per account.

One `ConnectionCounter` is shared by the SFTP and FTP doors. It is plain, synchronous and
thread-safe: the SFTP door calls it on the asyncio loop, the FTP door from pyftpdlib's thread.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field


class TooManyConnections(Exception):
    """A connection over a cap; the message is for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class ConnectionCounter:
    max_total: int = 256
    max_per_address: int = 16
    max_per_account: int = 16
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _total: int = 0
    _addresses: Counter[str] = field(default_factory=Counter)
    _accounts: Counter[str] = field(default_factory=Counter)

    def connect(self, address: str) -> Connection:
        """Count a new connection from `address`; raises TooManyConnections over a cap."""
        with self._lock:
            if self._total >= self.max_total:
                raise TooManyConnections(f"too many connections to this server (at most {self.max_total}): try again later")
            if self._addresses[address] >= self.max_per_address:
                raise TooManyConnections(
                    f"too many connections from your address (at most {self.max_per_address}): close some and try again"
                )
            self._total += 1
            self._addresses[address] += 1
        return Connection(self, address)

    def connections(self, *, address: str | None = None, account: str | None = None) -> int:
        with self._lock:
            if address is not None:
                return self._addresses[address]
            if account is not None:
                return self._accounts[account]
            return self._total

    def _login(self, account: str) -> None:
        with self._lock:
            if self._accounts[account] >= self.max_per_account:
                raise TooManyConnections(
                    f"too many connections for account {account} (at most {self.max_per_account}): close some and try again"
                )
            self._accounts[account] += 1

    def _release(self, address: str, account: str | None) -> None:
        with self._lock:
            self._total -= 1
            _decrement(self._addresses, address)
            if account is not None:
                _decrement(self._accounts, account)


def _decrement(counts: Counter[str], key: str) -> None:
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]  # the counters hold only live keys


class Connection:
    """One counted connection: `logged_in(account)` once, `close()` when it ends (idempotent)."""

    def __init__(self, counter: ConnectionCounter, address: str) -> None:
        self._counter = counter
        self.address = address
        self.account: str | None = None
        self._closed = False

    def logged_in(self, account: str) -> None:
        """Count the connection against `account`; raises TooManyConnections over its cap. A
        connection logs in once: later calls change nothing."""
        if self.account is not None or self._closed:
            return
        self._counter._login(account)
        self.account = account

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._counter._release(self.address, self.account)
