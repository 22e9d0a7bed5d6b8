"""The FTP door (upstream offers port 21 beside SFTP): pyftpdlib in one thread, behind the same gate.

Same accounts, channel rules, three folders and pickup semantics as the SFTP door: a login goes
through `Gate.login` (channel "ftp"), an upload is reported to the connection's session actor once
the transfer completed (the reply to the client waits for it: backpressure), a transfer cut off is
never reported and keeps its `.incomplete` marker, and renames of temporary names report like SFTP.
pyftpdlib runs its own I/O loop in a worker thread; it reaches trio with `trio.from_thread.run`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import trio
from pyftpdlib.authorizers import AuthenticationFailed, DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

from actors.sftp_server import Gate, Login, LoginRefused, Session
from sftpsms import folders

log = logging.getLogger(__name__)

PERMISSIONS = "elradfw"  # never m (mkdir), M (chmod), T (set mtime)
POLL_TIMEOUT = 0.2


class _Authorizer(DummyAuthorizer):  # type: ignore[misc]
    """Logins through the gate; permissions from the account's three folders."""

    def __init__(self, gate: Gate, token: trio.lowlevel.TrioToken) -> None:
        super().__init__()
        self.gate = gate
        self.token = token
        self.logins: dict[str, Login] = {}

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        peer = handler.remote_ip
        try:
            login = trio.from_thread.run(self.gate.login, username, password, peer, trio_token=self.token)
        except LoginRefused as refused:
            raise AuthenticationFailed(refused.message) from None
        except Exception:
            log.exception("ftp login failed account=%s peer=%s", username, peer)
            raise AuthenticationFailed("login failed") from None
        self.logins[username] = login
        handler.login = login

    def get_home_dir(self, username: str) -> str:
        return str(self.logins[username].root)

    def get_perms(self, username: str) -> str:
        return PERMISSIONS

    def get_msg_login(self, username: str) -> str:
        return "Welcome. Upload into Send_SMS; results appear in Processed and Errors."

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        login = self.logins.get(username)
        if login is None or perm not in PERMISSIONS:
            return False
        if path is None:
            return True
        try:
            parts = Path(os.path.realpath(path)).relative_to(os.path.realpath(login.root)).parts
        except ValueError:
            return False
        if not parts:
            return perm in "el"
        if parts[0] not in folders.FOLDERS or len(parts) > 2:
            return False
        if perm in "wf":
            return parts[0] == folders.SEND
        if perm == "a":
            return parts[0] == folders.SEND and len(parts) == 2
        return True


class _Filesystem(AbstractedFS):  # type: ignore[misc]
    """Lists the root as exactly the three folders; symlinks are never shown."""

    def listdir(self, path: str) -> list[str]:
        names: list[str] = super().listdir(path)
        if os.path.realpath(path) == os.path.realpath(self.root):
            return [name for name in folders.FOLDERS if name in names]
        return [name for name in names if not os.path.islink(os.path.join(path, name))]


class _Handler(FTPHandler):  # type: ignore[misc]
    gate: Gate
    token: trio.lowlevel.TrioToken
    auth_failed_timeout = 0  # the gate slows repeated failures itself
    login: Login | None = None
    session: Session | None = None
    _rnfr: str | None

    def _call(self, fn: Any, *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self.token)

    def on_login(self, username: str) -> None:
        assert self.login is not None
        ioloop = self.ioloop

        def disconnect() -> None:
            ioloop.call_later(0, self.close)

        self.session = self._call(self.gate.open_session, self.login, self.remote_ip, disconnect)

    def _end_session(self) -> None:
        if self.session is not None:
            session, self.session = self.session, None
            try:
                self._call(session.close)
            except Exception:
                log.debug("ftp session close failed", exc_info=True)

    def on_logout(self, username: str) -> None:
        self._end_session()

    def on_disconnect(self) -> None:
        self._end_session()

    def _in_send(self, path: str) -> str | None:
        """The file name when `path` is a file directly inside Send_SMS, else None."""
        assert self.login is not None
        real = Path(os.path.realpath(path))
        if real.parent != Path(os.path.realpath(self.login.root / folders.SEND)):
            return None
        return real.name

    def ftp_STOR(self, file: str, mode: str = "w") -> Any:
        name = self._in_send(file)
        if name is None:
            self.respond("553 Upload into Send_SMS only.")
            return None
        if not (folders.is_allowed(name) or folders.is_temporary(name)):
            self.respond("553 Only .txt, .json and .zip files may be uploaded.")
            return None
        assert self.login is not None
        marker = folders.incomplete_marker(self.login.root, name)
        marker.parent.mkdir(exist_ok=True)
        marker.touch()
        return super().ftp_STOR(file, mode)

    def on_file_received(self, file: str) -> None:
        name = self._in_send(file)
        if name is None or self.login is None:
            return
        folders.incomplete_marker(self.login.root, name).unlink(missing_ok=True)
        if folders.is_allowed(name) and self.session is not None:
            self._call(self.session.upload_closed, name)

    def on_incomplete_file_received(self, file: str) -> None:
        log.warning("file=%s upload cut off, kept unprocessed", os.path.basename(file))

    def ftp_RNTO(self, path: str) -> Any:
        source: str | None = self._rnfr
        new_name = self._in_send(path)
        if source is None or new_name is None or self._in_send(source) is None:
            self.respond("553 Files can only be renamed within Send_SMS.")
            self._rnfr = None
            return None
        if not (folders.is_allowed(new_name) or folders.is_temporary(new_name)):
            self.respond("553 Only .txt, .json and .zip files may be uploaded.")
            self._rnfr = None
            return None
        result = super().ftp_RNTO(path)
        if result is None or self.login is None:
            return result
        old_marker = folders.incomplete_marker(self.login.root, os.path.basename(source))
        if old_marker.exists():
            os.replace(old_marker, folders.incomplete_marker(self.login.root, new_name))
        elif folders.is_allowed(new_name) and self.session is not None:
            self._call(self.session.upload_closed, new_name)
        return result


async def serve_ftp(
    gate: Gate,
    *,
    host: str,
    port: int,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve FTP until cancelled; reports the bound port (0 picks a free one).

    Resource handling: the server and its connections are closed in its own thread on the way out.
    Error handling: a failing connection is pyftpdlib's to log; the gate refuses what it must.
    """
    token = trio.lowlevel.current_trio_token()
    # pyftpdlib configures handlers through class attributes: one subclass per server. With a
    # certificate the door speaks explicit FTPS (AUTH TLS) and refuses clear-text logins and data.
    tls: dict[str, Any] = {}
    bases: tuple[type, ...] = (_Handler,)
    if certfile is not None:
        from pyftpdlib.handlers import TLS_FTPHandler

        bases = (_Handler, TLS_FTPHandler)
        tls = {
            "certfile": str(certfile),
            "keyfile": str(keyfile) if keyfile else None,
            "tls_control_required": True,
            "tls_data_required": True,
        }
    handler: Any = type(
        "Handler",
        bases,
        {
            **tls,
            "gate": gate,
            "token": token,
            "authorizer": _Authorizer(gate, token),
            "abstracted_fs": _Filesystem,
            "banner": "sftpsms FTP: log in with your account or an API key for the ftp channel.",
            "permit_foreign_addresses": False,
        },
    )
    server = FTPServer((host, port), handler)
    stopping = False

    def serve() -> None:
        while not stopping:
            server.serve_forever(timeout=POLL_TIMEOUT, blocking=False, handle_exit=False)
        server.close_all()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: trio.to_thread.run_sync(serve, abandon_on_cancel=False))
        task_status.started(server.address[1])
        try:
            await trio.sleep_forever()
        finally:
            stopping = True
