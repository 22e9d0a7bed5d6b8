"""What the REST routes may use, and who is asking.

A REST request authenticates with HTTP Basic: an API key's id and secret, the key made for the
`rest` channel (`sftpsms apikey create USER --channel rest`). The check is the doors' own
(`AccountGate` on the `rest` channel): the same failed-login guard and lockout as SFTP and FTP, a
revoked key or another channel's key refused. An argon2 check costs ~50 ms and 64 MiB, so a key
that passed is remembered for AUTH_TTL seconds by a SHA-256 of its secret: a revoked key stops
working within that time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path

from actors.file import InFlight
from actors.session import KEY_PREFIX, AccountGate, LoginBusy
from actors.sftp_server import LoginRefused
from actors.web.app import ApiError
from actors.writer import StoreClient
from eventstore.domain import Account
from eventstore.store import SmsStore, UnknownAccount
from sftpsms.config import Settings

AUTH_TTL = 5.0  # seconds a checked key is trusted without a new argon2 check
AUTH_CACHE = 10_000  # keys remembered at most
CHALLENGE = (("www-authenticate", 'Basic realm="sftpsms", charset="UTF-8"'),)


@dataclass(frozen=True)
class Principal:
    """The account a request acts as, and the accounts whose data it may read: its own and its
    sub-accounts'."""

    account: str
    key_id: str
    visible: frozenset[str]

    def may_see(self, account: str) -> bool:
        return account in self.visible


@dataclass
class WebContext:
    settings: Settings
    store: StoreClient
    gate: AccountGate  # channel "rest"
    in_flight: InFlight
    clock: Callable[[], datetime]
    catch_up: Callable[[], Awaitable[object]]  # the read models up to the log's end (read your writes)
    panel_gate: AccountGate | None = None  # channel "web": the control panel's logins

    def __post_init__(self) -> None:
        self._checked: OrderedDict[tuple[str, bytes], tuple[float, Principal]] = OrderedDict()

    @property
    def readmodels_path(self) -> Path:
        return self.settings.readmodels_db

    @property
    def history_path(self) -> Path:
        return self.settings.history_db

    async def account(self, username: str) -> Account:
        try:
            return await self.store.run(partial(SmsStore.account, username=username))
        except UnknownAccount:
            raise ApiError(404, f"no such account: {username}") from None

    async def authenticate(self, authorization: str | None, peer: str) -> Principal:
        key_id, secret = _basic(authorization)
        digest = hashlib.sha256(secret.encode()).digest()
        now = time.monotonic()
        cached = self._checked.get((key_id, digest))
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            login = await self.gate.login(key_id, secret, peer)
        except LoginBusy as busy:
            raise ApiError(503, busy.message, headers=(("retry-after", "2"),)) from None
        except LoginRefused as refused:
            raise ApiError(401, refused.message, headers=CHALLENGE) from None
        account = await self.account(login.account)
        principal = Principal(login.account, key_id, frozenset([login.account, *account.sub_accounts]))
        self._checked[(key_id, digest)] = (now + AUTH_TTL, principal)
        while len(self._checked) > AUTH_CACHE:
            self._checked.popitem(last=False)
        return principal

    def forget(self, key_id: str) -> None:
        """A key revoked through this server stops working at once (not after AUTH_TTL)."""
        for cached in [k for k in self._checked if k[0] == key_id]:
            del self._checked[cached]


def _basic(authorization: str | None) -> tuple[str, str]:
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise ApiError(401, "authenticate with HTTP Basic: a rest API key's id and secret", headers=CHALLENGE)
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ApiError(401, "the Basic credentials are not base64 of UTF-8 'id:secret'", headers=CHALLENGE) from None
    key_id, colon, secret = decoded.partition(":")
    if not colon or not key_id.startswith(KEY_PREFIX):
        raise ApiError(
            401, f"the REST API takes an API key ({KEY_PREFIX}...: secret), not an account's password",
            headers=CHALLENGE,
        )
    return key_id, secret
