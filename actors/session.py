"""The SFTP session actor: one per connection. It knows the account and turns a completed upload
(a clean close, or a rename into Send_SMS) into a FileArrived for the file actors, and one into
Validate into a FileArrived for the validator (actors/validator.py).

`AccountGate` is what the SFTP door calls (through the bridge): it checks logins against the event
store and starts a session actor per connection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import trio

from actors.file import FileArrived, InFlight
from actors.sftp_server import Login, LoginRefused
from actors.writer import StoreClient
from eventstore.domain import Account, ApiKey
from eventstore.store import SmsStore, UnknownAccount, UnknownApiKey
from sftpsms import folders
from sftpsms.channels import channel_active, refusal_message
from sftpsms.config import Settings
from sftpsms.connections import ConnectionCounter
from sftpsms.lockout import Keys, LoginGuard
from sftpsms.names import BadName, quoted
from sftpsms.passwords import verify_password

log = logging.getLogger(__name__)

SESSION_BUFFER = 0
WATCH_INTERVAL = 1.0
KEY_PREFIX = "ak_"
BAD_LOGIN = "invalid username or password"
WEB = "web"  # the control panel's gate: the account's username and password only


@dataclass(frozen=True)
class UploadClosed:
    name: str
    accepted: trio.Event = field(compare=False)
    folder: str = folders.SEND  # or folders.VALIDATE


def validation_key(name: str) -> str:
    """The InFlight name of an upload into Validate (never one of Send_SMS: no name holds `/`)."""
    return f"{folders.VALIDATE}/{name}"


async def run_session(
    inbox: trio.MemoryReceiveChannel[UploadClosed],
    outbox: trio.MemorySendChannel[FileArrived],
    *,
    login: Login,
    in_flight: InFlight,
    clock: Callable[[], datetime],
    validations: trio.MemorySendChannel[FileArrived] | None = None,
) -> None:
    """Forward completed uploads of one connection until it closes: Send_SMS's to `outbox`,
    Validate's to `validations` (without one, the sweep finds them).

    Resource handling: closes every channel end when the connection ends (its inbox closes).
    Backpressure: `accepted` is set only once a file actor's inbox took the file, and the SFTP door
    answers the client's CLOSE only then.
    """
    with inbox, outbox, validations if validations is not None else nullcontext():
        async for event in inbox:
            try:
                if not folders.is_allowed(event.name):
                    continue
                if event.folder == folders.VALIDATE:
                    if validations is not None and in_flight.claim(login.account, validation_key(event.name)):
                        path = login.root / folders.VALIDATE / event.name
                        await validations.send(FileArrived(login.account, event.name, path, clock()))
                        log.info("file=%s account=%s picked up on close for validation", quoted(event.name), login.account)
                    continue
                if not in_flight.claim(login.account, event.name):
                    continue  # already being picked up (a sweep got there first)
                path = login.root / folders.SEND / event.name
                await outbox.send(FileArrived(login.account, event.name, path, clock()))
                log.info("file=%s account=%s picked up on close", quoted(event.name), login.account)
            finally:
                event.accepted.set()


class SessionHandle:
    """The door's handle on one session actor."""

    def __init__(self, send: trio.MemorySendChannel[UploadClosed], on_close: Callable[[], object] = lambda: None) -> None:
        self._send = send
        self._on_close = on_close

    async def upload_closed(self, name: str, folder: str = folders.SEND) -> None:
        accepted = trio.Event()
        try:
            await self._send.send(UploadClosed(name, accepted, folder))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the service is shutting down; the sweep picks the file up on restart
        await accepted.wait()

    async def close(self) -> None:
        self._on_close()
        await self._send.aclose()


class LoginBusy(LoginRefused):
    """Too many password checks waiting: refused without counting as a failed login."""


class DoorRules:
    """What the doors share, whichever door a login comes through: the failed-login guard, the
    connection counter (plain and thread-safe, for the FTP door's thread too) and the limit on
    password checks in flight (an argon2 check costs 64 MiB and a core's time)."""

    def __init__(self, settings: Settings) -> None:
        self.guard = LoginGuard(
            slowdown_after=settings.login_slowdown_after,
            lockout_after=settings.login_lockout_after,
            address_lockout_after=settings.login_address_lockout_after,
            lockout_seconds=settings.login_lockout_seconds,
            base_delay=settings.login_slowdown_base,
            user_max_delay=settings.login_user_max_delay,
        )
        self.connections = ConnectionCounter(
            max_total=settings.max_connections,
            max_per_address=settings.max_connections_per_address,
            max_per_account=settings.max_connections_per_account,
        )
        self.password_checks = trio.CapacityLimiter(max(1, settings.password_checks))
        self.password_queue = settings.password_check_queue
        self._turns: dict[str, tuple[trio.Lock, int]] = {}

    @asynccontextmanager
    async def turn(self, key: str) -> AsyncIterator[None]:
        """One login at a time per key: parallel guesses are checked in turn, each after the last
        one's failure was counted."""
        lock, users = self._turns.get(key) or (trio.Lock(), 0)
        self._turns[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._turns[key]
            if users <= 1:
                del self._turns[key]
            else:
                self._turns[key] = (lock, users - 1)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """`verify_password` in a worker thread, at most `password_checks` at once; with more than
        `password_check_queue` waiting, refused (LoginBusy) instead of queued."""
        if self.password_checks.statistics().tasks_waiting >= self.password_queue:
            raise LoginBusy("the server is busy checking logins: try again in a moment")
        return await trio.to_thread.run_sync(verify_password, password_hash, password, limiter=self.password_checks)


class AccountGate:
    """Logins and sessions for one door (channel). Doors share one `DoorRules`."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: StoreClient,
        nursery: trio.Nursery,
        arrivals: trio.MemorySendChannel[FileArrived],
        in_flight: InFlight,
        clock: Callable[[], datetime],
        channel: str = "sftp",
        rules: DoorRules | None = None,
        validations: trio.MemorySendChannel[FileArrived] | None = None,
    ) -> None:
        self.settings = settings
        self.validations = validations  # where uploads into Validate go (actors/validator.py)
        self.store = store
        self.nursery = nursery
        self.arrivals = arrivals
        self.in_flight = in_flight
        self.clock = clock
        self.channel = channel
        self.sessions: dict[SessionHandle, tuple[Login, Callable[[], None]]] = {}
        self.rules = rules if rules is not None else DoorRules(settings)
        self.guard = self.rules.guard
        self.connections = self.rules.connections

    async def login(self, username: str, password: str, peer: str) -> Login:
        """By the account's username and password, or by an API key's id and secret. Repeated
        failures slow the answers down, then lock the (address, username) pair and, after many
        more, the address out (sftpsms.lockout); never the username from everywhere."""
        keys = Keys.of(peer, username)
        async with self.rules.turn(keys.pair):
            self._refuse_if_locked(keys, username, peer)
            self.guard.begin(keys, trio.current_time())
            try:
                await trio.sleep(self.guard.delay(keys, trio.current_time()))
                login = await self._login(username, password, peer)
            except LoginBusy:
                self.guard.abandoned(keys, trio.current_time())
                raise
            except LoginRefused as refused:
                locked = self.guard.failed(keys, trio.current_time())
                await self._record_failure(username, peer, refused.message, locked)
                raise
            except BaseException:
                self.guard.abandoned(keys, trio.current_time())
                raise
            self.guard.succeeded(keys, trio.current_time())
            return login

    def _refuse_if_locked(self, keys: Keys, username: str, peer: str) -> None:
        locked_for = self.guard.locked_for(keys, trio.current_time())
        if locked_for > 0:
            log.warning("login refused account=%s peer=%s reason=locked-out", quoted(username), peer)
            minutes = max(1, round(locked_for / 60))
            raise LoginRefused(f"too many failed logins: try again in {minutes} minute{'s' if minutes > 1 else ''}")

    async def _record_failure(self, username: str, peer: str, reason: str, locked: list[str]) -> None:
        wall = self.clock()
        until = wall + timedelta(seconds=self.guard.lockout_seconds)
        with trio.CancelScope(shield=True):  # the failure was counted: its event is written too
            await self.store.run(
                partial(
                    SmsStore.record_failed_login,
                    username=username,
                    peer=peer,
                    reason=reason,
                    now=wall,
                    locked=[(key, until) for key in locked],
                )
            )

    async def _login(self, username: str, password: str, peer: str) -> Login:
        if username.startswith(KEY_PREFIX):
            if self.channel == WEB:  # the control panel takes the account's own password, never a key
                await self.rules.verify(None, password)  # the same time as a wrong password
                raise LoginRefused(BAD_LOGIN)
            return await self._key_login(username, password, peer)
        try:
            account: Account | None = await self.store.run(lambda s: s.account(username))
        except UnknownAccount:
            account = None
        password_hash = account.password_hash if account is not None else None
        if not await self.rules.verify(password_hash, password):
            log.warning("login refused account=%s peer=%s reason=bad-credentials", quoted(username), peer)
            raise LoginRefused(BAD_LOGIN)
        assert account is not None
        if not self._channel_open(account):
            log.warning("login refused account=%s peer=%s reason=channel-inactive", quoted(username), peer)
            raise LoginRefused(refusal_message(username, self.channel))
        return await self._admit(username, peer, key_id=None)

    async def login_by_key(self, username: str, fingerprint: str, peer: str) -> Login:
        """SFTP login with an SSH key added by `sftpsms sshkey add` (asyncssh checked the signature).
        A locked-out address or username is refused here too; an unknown key is not counted as a
        failure (clients offer every key they have)."""
        self._refuse_if_locked(Keys.of(peer, username), username, peer)
        try:
            account = await self.store.run(partial(SmsStore.account, username=username))
        except UnknownAccount:
            raise LoginRefused(BAD_LOGIN) from None
        if fingerprint not in account.ssh_keys:
            raise LoginRefused(BAD_LOGIN)
        if not self._channel_open(account):
            raise LoginRefused(refusal_message(username, self.channel))
        return await self._admit(username, peer, key_id=None)

    async def _key_login(self, key_id: str, secret: str, peer: str) -> Login:
        try:
            key: ApiKey | None = await self.store.run(lambda s: s.api_key(key_id))
        except UnknownApiKey:
            key = None
        secret_hash = key.secret_hash if key is not None else None
        if not await self.rules.verify(secret_hash, secret):
            log.warning("login refused key=%s peer=%s reason=bad-credentials", quoted(key_id), peer)
            raise LoginRefused(BAD_LOGIN)
        assert key is not None
        if key.revoked_at is not None:
            log.warning("login refused key=%s peer=%s reason=key-revoked", quoted(key_id), peer)
            raise LoginRefused(f"API key {key_id} was revoked")
        if key.channel != self.channel:
            log.warning("login refused key=%s peer=%s reason=other-channel", quoted(key_id), peer)
            raise LoginRefused(f"API key {key_id} is for the {key.channel} channel, not {self.channel}")
        return await self._admit(key.account, peer, key_id=key_id)

    def _channel_open(self, account: Account) -> bool:
        if self.channel == WEB:
            return True  # the control panel is every account's own: no key opens or closes it
        return channel_active(datetime.fromisoformat(account.created_at), self.channel, account.channels_with_keys)

    async def _admit(self, username: str, peer: str, key_id: str | None) -> Login:
        try:
            root = self.settings.account_root(username)
        except BadName as bad:  # an old store's name that could reach outside its root
            log.error("login refused account=%s peer=%s reason=bad-account-name: %s", quoted(username), peer, bad)
            raise LoginRefused(BAD_LOGIN) from None
        await trio.to_thread.run_sync(folders.ensure_account_folders, root)
        log.info("login account=%s peer=%s channel=%s key=%s", username, peer, self.channel, key_id or "-")
        return Login(account=username, root=root, key_id=key_id)

    async def upload(self, account: str, root: Path, name: str, folder: str = folders.SEND) -> None:
        """A file written whole into `account`'s Send_SMS (or Validate) by another door (the REST
        API): picked up as an SFTP upload's clean close is."""
        if not folders.is_allowed(name):
            return
        if folder == folders.VALIDATE:
            if self.validations is not None and self.in_flight.claim(account, validation_key(name)):
                await self.validations.send(FileArrived(account, name, root / folders.VALIDATE / name, self.clock()))
            return  # without a validator channel, the sweep finds it
        if not self.in_flight.claim(account, name):
            return  # already being picked up (a sweep got there first)
        await self.arrivals.send(FileArrived(account, name, root / folders.SEND / name, self.clock()))
        log.info("file=%s account=%s picked up on upload (%s)", quoted(name), account, self.channel)

    async def open_session(self, login: Login, peer: str, disconnect: Callable[[], None]) -> SessionHandle:
        send, receive = trio.open_memory_channel[UploadClosed](SESSION_BUFFER)
        handle = SessionHandle(send, on_close=lambda: self.sessions.pop(handle, None))
        self.sessions[handle] = (login, disconnect)
        self.nursery.start_soon(
            lambda: run_session(
                receive,
                self.arrivals.clone(),
                login=login,
                in_flight=self.in_flight,
                clock=self.clock,
                validations=self.validations.clone() if self.validations is not None else None,
            )
        )
        return handle

    async def watch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Close open sessions whose channel was closed (last key revoked) or whose key was revoked.
        Keys are revoked from the admin CLI, another process: the store is polled."""
        task_status.started()
        while True:
            await trio.sleep(WATCH_INTERVAL)
            for username in sorted({login.account for login, _ in self.sessions.values()}):
                try:
                    account = await self.store.run(partial(SmsStore.account, username=username))
                except UnknownAccount:
                    continue
                for handle, (login, disconnect) in list(self.sessions.items()):
                    if login.account != username:
                        continue
                    revoked = login.key_id is not None and login.key_id not in account.api_keys
                    if revoked or not self._channel_open(account):
                        log.warning("closing session account=%s key=%s: access revoked", username, login.key_id or "-")
                        self.sessions.pop(handle, None)
                        disconnect()
