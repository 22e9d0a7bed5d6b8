"""The SFTP door: asyncssh's server (asyncio side), confined to an account's three folders.

Everything here runs on the asyncio host loop; anything that needs our state goes to the trio side
through the `Gate` (login, sessions) via the TrioPortal. The rules (PRODUCT.md §2, FINDINGS.md):

- a client sees `/Send_SMS`, `/Processed`, `/Errors` and nothing else; `..` stops at its root;
  paths are normalised here, never handed to the OS as the client wrote them;
- symlinks are never followed (asyncssh's own chroot would follow pre-existing ones): every real
  path is checked with lstat and opened with O_NOFOLLOW;
- uploads go to `Send_SMS` only, named `.txt`/`.json`/`.zip` or a temporary name (`.part`,
  `.filepart`, `.tmp`, dot-files) that is reported only once renamed to an allowed name;
- an upload is reported on a clean close, and the client's CLOSE is answered only after the trio
  side took it (backpressure); while a write handle is open a marker in `<root>/.incomplete/`
  says so, and a handle closed because the connection dropped keeps its marker: never processed.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncssh
import trio

from actors.bridge import AsyncioPortal, TrioPortal
from sftpsms import folders

log = logging.getLogger(__name__)

WRITE_FLAGS = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC | asyncssh.FXF_APPEND


@dataclass(frozen=True)
class Login:
    account: str  # the account's username
    root: Path  # holds Send_SMS, Processed, Errors
    key_id: str | None = None  # the API key logged in with, if any


class LoginRefused(Exception):
    """Shown to the user as the reason (an SSH auth banner)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Session(Protocol):
    async def upload_closed(self, name: str) -> None: ...

    async def close(self) -> None: ...


class Gate(Protocol):
    async def login(self, username: str, password: str, peer: str) -> Login: ...

    async def open_session(self, login: Login, peer: str, disconnect: Callable[[], None]) -> Session:
        """`disconnect` ends the connection (callable from trio: it only schedules the close)."""
        ...


class _Handle:
    def __init__(self, fd: int, folder: str, name: str, writing: bool) -> None:
        self.fd = fd
        self.folder = folder
        self.name = name
        self.writing = writing


def _denied(reason: str) -> asyncssh.SFTPError:
    return asyncssh.SFTPPermissionDenied(reason)


def _missing() -> asyncssh.SFTPError:
    return asyncssh.SFTPNoSuchFile("no such file or folder")


class _SshServer(asyncssh.SSHServer):
    """One per connection: password logins through the gate."""

    def __init__(self, gate: Gate, portal: TrioPortal) -> None:
        self.gate = gate
        self.portal = portal
        self.conn: asyncssh.SSHServerConnection | None = None
        self.login: Login | None = None
        self.peer = "?"

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "?"

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        try:
            self.login = await self.portal.call(self.gate.login, username, password, self.peer)
        except LoginRefused as refused:
            if self.conn is not None:
                self.conn.send_auth_banner(refused.message + "\n")
            return False
        return True


class _SftpServer(asyncssh.SFTPServer):
    """One per SFTP session (connection)."""

    def __init__(self, chan: asyncssh.SSHServerChannel[Any], portal: TrioPortal) -> None:
        super().__init__(chan)
        owner = chan.get_connection().get_owner()
        assert isinstance(owner, _SshServer) and owner.login is not None
        self.login = owner.login
        self.peer = owner.peer
        self.portal = portal
        self.root = self.login.root
        self.session: Session | None = None
        loop = asyncio.get_running_loop()
        connection = chan.get_connection()
        self._disconnect = lambda: loop.call_soon_threadsafe(connection.close)
        self._opening = loop.create_task(self._open_session(owner.gate))

    async def _open_session(self, gate: Gate) -> Session:
        self.session = await self.portal.call(gate.open_session, self.login, self.peer, self._disconnect)
        return self.session

    async def _session(self) -> Session:
        return await self._opening

    # ---- paths ---------------------------------------------------------------------------------

    def _virtual(self, path: bytes) -> tuple[str, ...]:
        try:
            text = path.decode("utf-8")
        except UnicodeDecodeError:
            raise _missing() from None
        parts: list[str] = []
        for part in text.replace("\\", "/").split("/"):
            if part in ("", "."):
                continue
            if part == "..":
                if parts:
                    parts.pop()
                continue
            parts.append(part)
        return tuple(parts)

    def _resolve(self, path: bytes) -> tuple[str | None, str | None, Path]:
        """(folder, name, real path) of a client path; only the root, a folder or a file in one."""
        parts = self._virtual(path)
        if not parts:
            return None, None, self.root
        if parts[0] not in folders.FOLDERS or len(parts) > 2:
            raise _missing()
        real = self.root / parts[0]
        if real.is_symlink():
            raise _missing()
        if len(parts) == 1:
            return parts[0], None, real
        name = parts[1]
        target = real / name
        if target.is_symlink():
            raise _denied("links are not followed")
        return parts[0], name, target

    def map_path(self, path: bytes) -> bytes:
        return os.fsencode(self._resolve(path)[2])

    def realpath(self, path: bytes) -> bytes:
        parts = self._virtual(path)
        return ("/" + "/".join(parts)).encode()

    # ---- metadata ------------------------------------------------------------------------------

    def _lstat(self, path: bytes) -> os.stat_result:
        _, _, real = self._resolve(path)
        try:
            return os.lstat(real)
        except FileNotFoundError:
            raise _missing() from None

    def stat(self, path: bytes) -> os.stat_result:
        return self._lstat(path)

    def lstat(self, path: bytes) -> os.stat_result:
        return self._lstat(path)

    def fstat(self, file_obj: object) -> os.stat_result:
        assert isinstance(file_obj, _Handle)
        return os.fstat(file_obj.fd)

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._resolve(path)  # times and modes are ours to keep; accepted and ignored

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        if isinstance(file_obj, _Handle) and file_obj.writing and attrs.size is not None:
            os.ftruncate(file_obj.fd, attrs.size)

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        folder, name, real = self._resolve(path)
        if name is not None:
            raise asyncssh.SFTPNoSuchFile("not a folder")
        for dot in (b".", b".."):
            yield asyncssh.SFTPName(dot, attrs=asyncssh.SFTPAttrs.from_local(os.lstat(real)))
        if folder is None:
            for child in folders.FOLDERS:
                child_path = self.root / child
                if child_path.is_dir() and not child_path.is_symlink():
                    yield asyncssh.SFTPName(child.encode(), attrs=asyncssh.SFTPAttrs.from_local(os.lstat(child_path)))
            return
        with os.scandir(real) as entries:
            for entry in entries:
                if entry.is_symlink() or not entry.is_file(follow_symlinks=False):
                    continue
                yield asyncssh.SFTPName(
                    os.fsencode(entry.name), attrs=asyncssh.SFTPAttrs.from_local(entry.stat(follow_symlinks=False))
                )

    def readlink(self, path: bytes) -> bytes:
        raise _denied("links are not supported")

    def statvfs(self, path: bytes) -> Any:
        raise asyncssh.SFTPOpUnsupported("statvfs is not supported")

    # ---- files ---------------------------------------------------------------------------------

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> _Handle:
        folder, name, real = self._resolve(path)
        if folder is None or name is None:
            raise _denied("only files inside Send_SMS, Processed or Errors can be opened")
        writing = bool(pflags & WRITE_FLAGS)
        if not writing:
            try:
                fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW)
            except FileNotFoundError:
                raise _missing() from None
            except OSError as error:
                raise _denied(os.strerror(error.errno or errno.EACCES)) from None
            return _Handle(fd, folder, name, writing=False)
        if folder != folders.SEND:
            raise _denied(f"{folder} is read-only: upload into Send_SMS")
        if not (folders.is_allowed(name) or folders.is_temporary(name)):
            raise _denied("only .txt, .json and .zip files may be uploaded")
        flags = os.O_WRONLY | os.O_NOFOLLOW
        if pflags & asyncssh.FXF_READ:
            flags = os.O_RDWR | os.O_NOFOLLOW
        if pflags & asyncssh.FXF_CREAT:
            flags |= os.O_CREAT
        if pflags & asyncssh.FXF_TRUNC:
            flags |= os.O_TRUNC
        if pflags & asyncssh.FXF_EXCL:
            flags |= os.O_EXCL
        if pflags & asyncssh.FXF_APPEND:
            flags |= os.O_APPEND
        marker = folders.incomplete_marker(self.root, name)
        marker.parent.mkdir(exist_ok=True)
        marker.touch()
        try:
            fd = os.open(real, flags, 0o640)
        except FileExistsError:
            raise asyncssh.SFTPFileAlreadyExists("file exists") from None
        except OSError as error:
            raise _denied(os.strerror(error.errno or errno.EACCES)) from None
        return _Handle(fd, folder, name, writing=True)

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        assert isinstance(file_obj, _Handle)
        return os.pread(file_obj.fd, size, offset)

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        assert isinstance(file_obj, _Handle)
        return os.pwrite(file_obj.fd, data, offset)

    async def close(self, file_obj: object) -> None:
        assert isinstance(file_obj, _Handle)
        os.close(file_obj.fd)
        if not file_obj.writing:
            return
        if self.channel.is_closing():
            # The connection dropped and asyncssh is closing what was open: a partial upload.
            log.warning("file=%s account=%s upload cut off, kept unprocessed", file_obj.name, self.login.account)
            return
        folders.incomplete_marker(self.root, file_obj.name).unlink(missing_ok=True)
        if folders.is_allowed(file_obj.name):
            await self._report(file_obj.name)

    async def _report(self, name: str) -> None:
        session = await self._session()
        await self.portal.call(session.upload_closed, name)

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        old_folder, old_name, old_real = self._resolve(oldpath)
        new_folder, new_name, new_real = self._resolve(newpath)
        if old_folder != folders.SEND or new_folder != folders.SEND or old_name is None or new_name is None:
            raise _denied("files can only be renamed within Send_SMS")
        if not (folders.is_allowed(new_name) or folders.is_temporary(new_name)):
            raise _denied("only .txt, .json and .zip files may be uploaded")
        if not old_real.exists():
            raise _missing()
        os.replace(old_real, new_real)
        old_marker = folders.incomplete_marker(self.root, old_name)
        if old_marker.exists():
            # Still open, or cut off: the new name inherits the mark and is not processed.
            os.replace(old_marker, folders.incomplete_marker(self.root, new_name))
            return
        if folders.is_allowed(new_name):
            await self._report(new_name)

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self.rename(oldpath, newpath)

    def remove(self, path: bytes) -> None:
        folder, name, real = self._resolve(path)
        if folder is None or name is None:
            raise _denied("only files can be removed")
        try:
            os.unlink(real)
        except FileNotFoundError:
            raise _missing() from None
        if folder == folders.SEND:
            folders.incomplete_marker(self.root, name).unlink(missing_ok=True)

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        raise _denied("folders cannot be created")

    def rmdir(self, path: bytes) -> None:
        raise _denied("folders cannot be removed")

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise _denied("links cannot be created")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise _denied("links cannot be created")

    async def exit(self) -> None:
        await self._end_session()

    async def _end_session(self) -> None:
        try:
            session = await self._session()
        except Exception:
            return
        try:
            await self.portal.call(session.close)
        except Exception:
            log.debug("session close failed", exc_info=True)


def ensure_host_key(path: Path) -> asyncssh.SSHKey:
    if path.exists():
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.parent.mkdir(parents=True, exist_ok=True)
    key.write_private_key(str(path))
    path.chmod(0o600)
    return key


async def serve_sftp(
    portal: AsyncioPortal,
    gate: Gate,
    *,
    host: str,
    port: int,
    host_key_path: Path,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve SFTP until cancelled; reports the bound port (port 0 picks a free one).

    Resource handling: the asyncssh acceptor and every connection are closed on the way out.
    Error handling: errors of one connection stay in that connection (asyncssh reports them to
    its client as SFTP status codes); the acceptor itself failing to start raises here.
    """
    key = ensure_host_key(host_key_path)
    trio_portal = portal.trio_portal

    def sftp_factory(chan: asyncssh.SSHServerChannel[Any]) -> asyncssh.SFTPServer:
        return _SftpServer(chan, trio_portal)

    async def start() -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(
            host,
            port,
            server_host_keys=[key],
            server_factory=lambda: _SshServer(gate, trio_portal),
            sftp_factory=sftp_factory,
            allow_scp=False,
            encoding=None,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_pty=False,
            keepalive_interval=30,
            login_timeout=60,
        )

    acceptor = await portal.run(start)
    try:
        task_status.started(acceptor.get_port())
        await trio.sleep_forever()
    finally:
        acceptor.close()
        with trio.CancelScope(shield=True):
            await portal.run(acceptor.wait_closed)
