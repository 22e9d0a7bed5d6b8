"""The SFTP session actor: one per connection. It knows the account and turns a completed upload
(a clean close, or a rename into Send_SMS) into a FileArrived for the file actors.

`AccountGate` is what the SFTP door calls (through the bridge): it checks logins against the event
store and starts a session actor per connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import trio

from actors.file import FileArrived, InFlight
from actors.sftp_server import Login, LoginRefused
from actors.writer import StoreClient
from eventstore.store import UnknownAccount
from sftpsms import folders
from sftpsms.channels import channel_active, refusal_message
from sftpsms.config import Settings
from sftpsms.passwords import verify_password

log = logging.getLogger(__name__)

SESSION_BUFFER = 0
BAD_LOGIN = "invalid username or password"


@dataclass(frozen=True)
class UploadClosed:
    name: str
    accepted: trio.Event = field(compare=False)


async def run_session(
    inbox: trio.MemoryReceiveChannel[UploadClosed],
    outbox: trio.MemorySendChannel[FileArrived],
    *,
    login: Login,
    in_flight: InFlight,
    clock: Callable[[], datetime],
) -> None:
    """Forward completed uploads of one connection until it closes.

    Resource handling: closes both channel ends when the connection ends (its inbox closes).
    Backpressure: `accepted` is set only once a file actor's inbox took the file, and the SFTP door
    answers the client's CLOSE only then.
    """
    with inbox, outbox:
        async for event in inbox:
            try:
                if not folders.is_allowed(event.name):
                    continue
                if not in_flight.claim(login.account, event.name):
                    continue  # already being picked up (a sweep got there first)
                path = login.root / folders.SEND / event.name
                await outbox.send(FileArrived(login.account, event.name, path, clock()))
                log.info("file=%s account=%s picked up on close", event.name, login.account)
            finally:
                event.accepted.set()


class SessionHandle:
    """The door's handle on one session actor."""

    def __init__(self, send: trio.MemorySendChannel[UploadClosed]) -> None:
        self._send = send

    async def upload_closed(self, name: str) -> None:
        accepted = trio.Event()
        try:
            await self._send.send(UploadClosed(name, accepted))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the service is shutting down; the sweep picks the file up on restart
        await accepted.wait()

    async def close(self) -> None:
        await self._send.aclose()


class AccountGate:
    """Logins and sessions for the SFTP door."""

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
    ) -> None:
        self.settings = settings
        self.store = store
        self.nursery = nursery
        self.arrivals = arrivals
        self.in_flight = in_flight
        self.clock = clock
        self.channel = channel

    async def login(self, username: str, password: str, peer: str) -> Login:
        try:
            account = await self.store.run(lambda s: s.account(username))
        except UnknownAccount:
            account = None
        password_hash = account.password_hash if account is not None else None
        if not await trio.to_thread.run_sync(verify_password, password_hash, password):
            log.warning("login refused account=%s peer=%s reason=bad-credentials", username, peer)
            raise LoginRefused(BAD_LOGIN)
        assert account is not None
        created_at = datetime.fromisoformat(account.created_at)
        if not channel_active(created_at, self.channel, frozenset()):
            log.warning("login refused account=%s peer=%s reason=channel-inactive", username, peer)
            raise LoginRefused(refusal_message(username, self.channel))
        root = self.settings.account_root(username)
        await trio.to_thread.run_sync(folders.ensure_account_folders, root)
        log.info("login account=%s peer=%s channel=%s", username, peer, self.channel)
        return Login(account=username, root=root)

    async def open_session(self, login: Login, peer: str) -> SessionHandle:
        send, receive = trio.open_memory_channel[UploadClosed](SESSION_BUFFER)
        self.nursery.start_soon(
            lambda: run_session(
                receive,
                self.arrivals.clone(),
                login=login,
                in_flight=self.in_flight,
                clock=self.clock,
            )
        )
        return SessionHandle(send)
