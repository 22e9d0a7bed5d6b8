"""The SFTP door: asyncssh's server (asyncio side), confined to an account's four folders.

Everything here but `serve_sftp` runs on the asyncio host loop; anything that needs our state goes
to the trio side through the `Gate` (logins, sessions) via the bridge's `TrioPortal`. The rules
(PRODUCT.md §2, FINDINGS.md):

- a client sees `/Send_SMS`, `/Processed`, `/Errors`, `/Validate` and nothing else; `..` stops at its root;
  client paths (`/up.json`, `up.json`, `Send_SMS/../../x`) are normalised here and never handed
  to the OS as the client wrote them;
- symlinks are never followed (asyncssh's own chroot would follow pre-existing ones): the root is
  resolved once, every folder and file is checked with lstat, and files are opened with O_NOFOLLOW;
- uploads go to `Send_SMS` (sent) or `Validate` (checked only) only, named `.txt`/`.json`/`.zip`
  or a temporary name (`.part`, `.filepart`, `.tmp`, dot-files) that is reported only once
  renamed to an allowed name;
- an upload is reported on a clean close, and the client's CLOSE is answered only after the trio
  side took it (backpressure); while a write handle is open a marker in `<root>/.incomplete/`
  says so, and a handle closed because the connection dropped keeps its marker: never processed;
- no mkdir, rmdir, links, attribute changes; SFTP v5/v6 opens go through the same checks as v3.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

import asyncssh
import trio
from asyncssh.constants import (
    ACE4_APPEND_DATA,
    ACE4_READ_DATA,
    ACE4_WRITE_DATA,
    FXF_ACCESS_DISPOSITION,
    FXF_APPEND_DATA,
    FXF_CREATE_NEW,
    FXF_CREATE_TRUNCATE,
    FXF_OPEN_OR_CREATE,
    FXF_TRUNCATE_EXISTING,
)

from actors.bridge import AsyncioPortal, TrioPortal
from actors.shared_files import publish_once
from sftpsms import folders
from sftpsms.config import Settings
from sftpsms.connections import Connection, ConnectionCounter, TooManyConnections
from sftpsms.names import quoted

log = logging.getLogger(__name__)

WRITE_FLAGS = asyncssh.FXF_WRITE | asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC | asyncssh.FXF_APPEND
CLOSE_TIMEOUT = 5.0  # seconds to wait for connections to close on shutdown
KEEPALIVE_INTERVAL = 30
UPLOAD_MODE = 0o640
REFUSE_WAIT = 5.0  # seconds a connection over a cap may take to ask to log in and hear why not
MAX_REFUSING = 64  # connections being refused at once; past this, cut off without a message
FD_RESERVE = 256  # file descriptors kept free of client handles (sockets, the store, logs)


@dataclass(frozen=True)
class DoorLimits:
    """What one client may hold (Settings: login_grace_seconds, idle_timeout, max_open_files,
    max_file_bytes)."""

    login_grace: float = 30.0  # seconds to log in before the connection is closed
    idle_timeout: float = 600.0  # seconds without a request before a logged-in connection closes
    max_open_files: int = 64  # open handles per connection
    max_file_bytes: int = 256 << 20  # no write may make an upload larger than this (Settings.max_file_bytes)

    @classmethod
    def from_settings(cls, settings: Settings) -> DoorLimits:
        return cls(
            login_grace=settings.login_grace_seconds,
            idle_timeout=settings.idle_timeout,
            max_open_files=settings.max_open_files,
            max_file_bytes=settings.max_file_bytes,
        )


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
    """One per SFTP session (connection), trio side."""

    async def upload_closed(self, name: str, folder: str = folders.SEND) -> None:
        """A complete upload of <folder>/<name> (Send_SMS or Validate) was closed, or a file
        renamed into it. Returns once the file was taken: the client's CLOSE (or RENAME) is
        answered only then."""
        ...

    async def close(self) -> None:
        """The connection ended."""
        ...


class Gate(Protocol):
    """Logins and sessions, trio side; every method is called through the TrioPortal.
    `connections` is plain and thread-safe: the door calls it directly."""

    connections: ConnectionCounter

    async def login_by_key(self, username: str, fingerprint: str, peer: str) -> Login:
        """The SSH key with this fingerprint logs in as `username` (signature checked by asyncssh);
        raises LoginRefused."""
        ...

    async def login(self, username: str, password: str, peer: str) -> Login:
        """Raises LoginRefused (its message is shown to the user)."""
        ...

    async def open_session(self, login: Login, peer: str, disconnect: Callable[[], None]) -> Session:
        """`disconnect` ends the connection (callable from trio: it only schedules the close)."""
        ...


# ---- the one place where refusals become SFTP errors ---------------------------------------------


def _denied(reason: str) -> asyncssh.SFTPError:
    return asyncssh.SFTPPermissionDenied(reason)


def _missing(reason: str = "no such file or folder") -> asyncssh.SFTPError:
    return asyncssh.SFTPNoSuchFile(reason)


def _refuse_os_error(error: OSError) -> NoReturn:
    """Translate an OS error on a real path; the message never carries the server's path."""
    if error.errno == errno.ENOENT:
        raise _missing() from None
    if error.errno == errno.EEXIST:
        raise asyncssh.SFTPFileAlreadyExists("file exists") from None
    if error.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a symlink
        raise _denied("links are not followed") from None
    if error.errno == errno.ENAMETOOLONG:
        raise asyncssh.SFTPInvalidFilename("file name too long") from None
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        raise asyncssh.SFTPNoSpaceOnFilesystem(
            "the service's disk is full: this upload is kept unprocessed; try again later"
        ) from None
    raise _denied(os.strerror(error.errno or errno.EACCES)) from None


class _Handle:
    def __init__(self, fd: int, folder: str, name: str, writing: bool, append: bool = False) -> None:
        self.fd = fd
        self.folder = folder
        self.name = name
        self.writing = writing
        self.append = append
        self.too_big = False  # a write went past max_file_bytes, or failed: never processed


def _too_big(limit: int) -> asyncssh.SFTPError:
    return asyncssh.SFTPNoSpaceOnFilesystem(f"the file is too big: at most {limit} bytes")


class _Handles:
    """Open handles of every connection: at most `per_connection` each and, across the door, what
    the process's file descriptor limit leaves after FD_RESERVE."""

    def __init__(self, per_connection: int) -> None:
        self.per_connection = per_connection
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.total_limit = max(16, (soft if soft != resource.RLIM_INFINITY else 1 << 20) - FD_RESERVE)
        self.total = 0

    def take(self, owner: _SshServer) -> None:
        if owner.open_files >= self.per_connection:
            raise asyncssh.SFTPFailure(f"too many open files: at most {self.per_connection} per connection")
        if self.total >= self.total_limit:
            raise asyncssh.SFTPFailure("the server has too many open files: try again later")
        owner.open_files += 1
        self.total += 1

    def give_back(self, owner: _SshServer) -> None:
        owner.open_files -= 1
        self.total -= 1


class _SshServer(asyncssh.SSHServer):
    """One per connection: counted against the door's caps, logins through the gate, closed when
    it idles."""

    def __init__(
        self,
        gate: Gate,
        portal: TrioPortal,
        connections: set[asyncssh.SSHServerConnection],
        limits: DoorLimits,
        handles: _Handles,
        refusing: set[asyncssh.SSHServerConnection],
    ) -> None:
        self.gate = gate
        self.portal = portal
        self.connections = connections
        self.limits = limits
        self.handles = handles
        self.conn: asyncssh.SSHServerConnection | None = None
        self.counted: Connection | None = None
        self.login: Login | None = None
        self.peer = "?"
        self.open_files = 0
        self.busy = 0  # requests being answered (a CLOSE waiting on the pickup is not idle)
        self.last_active = 0.0
        self._idle_watch: asyncio.TimerHandle | None = None
        self.refused: str | None = None  # over a connection cap: why
        self.refusing = refusing
        self._refuse_timer: asyncio.TimerHandle | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.connections.add(conn)
        peer = conn.get_extra_info("peername")
        self.peer = str(peer[0]) if peer else "?"
        try:
            self.counted = self.gate.connections.connect(self.peer)
        except TooManyConnections as refused:
            log.warning("connection refused peer=%s: %s", self.peer, refused.message)
            self.refused = refused.message
            loop = asyncio.get_running_loop()
            if len(self.refusing) >= MAX_REFUSING:
                loop.call_soon(conn.abort)  # a flood: no time for a message
                return
            # Told once the client asks to log in (clients show a disconnect reason only after the
            # key exchange), or after REFUSE_WAIT at the latest.
            self.refusing.add(conn)
            self._refuse_timer = loop.call_later(REFUSE_WAIT, self._refuse)

    def _refuse(self) -> None:
        if self.conn is not None and self.refused is not None:
            self.refusing.discard(self.conn)
            self.conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, self.refused)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.connections.discard(self.conn)
        if self.counted is not None:
            self.counted.close()
        if self.conn is not None:
            self.refusing.discard(self.conn)
        if self._refuse_timer is not None:
            self._refuse_timer.cancel()
        if self._idle_watch is not None:
            self._idle_watch.cancel()

    def active(self) -> None:
        self.last_active = asyncio.get_running_loop().time()

    def _watch_idle(self) -> None:
        loop = asyncio.get_running_loop()
        idle = loop.time() - self.last_active
        if self.busy == 0 and idle >= self.limits.idle_timeout and self.conn is not None:
            log.info("account=%s peer=%s idle for %.0f s: closing", self.login.account if self.login else "-", self.peer, idle)
            self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, f"idle for {idle:.0f} s")
            return
        wait = self.limits.idle_timeout - idle if self.busy == 0 else self.limits.idle_timeout
        self._idle_watch = loop.call_later(max(1.0, wait), self._watch_idle)

    def begin_auth(self, username: str) -> bool:
        if self.refused is not None:
            if self._refuse_timer is not None:
                self._refuse_timer.cancel()
            asyncio.get_running_loop().call_soon(self._refuse)
        return True  # every user must authenticate

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        """Whether this key opens the account; asyncssh verifies the client's signature itself."""
        # Clients offer several keys in turn: a refused key is no event for the user, no banner.
        return await self._admit(self.gate.login_by_key, username, key.get_fingerprint(), banner=False)

    async def validate_password(self, username: str, password: str) -> bool:
        return await self._admit(self.gate.login, username, password)

    async def _admit(
        self,
        login_with: Callable[[str, str, str], Awaitable[Login]],
        username: str,
        credential: str,
        *,
        banner: bool = True,
    ) -> bool:
        if self.counted is None:
            return False  # refused at connect: being disconnected
        try:
            login = await self.portal.call(login_with, username, credential, self.peer)
            self.counted.logged_in(login.account)
            await asyncio.to_thread(folders.ensure_account_folders, login.root)
        except LoginRefused as refused:
            if banner and self.conn is not None:
                self.conn.send_auth_banner(refused.message + "\n")
            return False
        except TooManyConnections as refused:
            log.warning("login refused account=%s peer=%s: %s", quoted(username), self.peer, refused.message)
            if self.conn is not None:
                self.conn.send_auth_banner(refused.message + "\n")
            return False
        except Exception:
            log.exception("login failed account=%s peer=%s", quoted(username), self.peer)
            return False
        self.login = login
        self.active()
        self._watch_idle()
        return True


class _SftpServer(asyncssh.SFTPServer):
    """One per SFTP session (channel): the account's view of its four folders."""

    def __init__(self, chan: asyncssh.SSHServerChannel[Any], portal: TrioPortal) -> None:
        super().__init__(chan)
        owner = chan.get_connection().get_owner()
        assert isinstance(owner, _SshServer) and owner.login is not None
        self.owner = owner
        self.login = owner.login
        self.peer = owner.peer
        self.portal = portal
        self.root = Path(os.path.realpath(self.login.root))  # symlinks above the root are the operator's
        loop = asyncio.get_running_loop()
        connection = chan.get_connection()

        def disconnect() -> None:
            loop.call_soon_threadsafe(connection.close)

        self._disconnect = disconnect
        self._opening = loop.create_task(self._open_session(owner.gate))
        self._opening.add_done_callback(self._opened)

    async def _open_session(self, gate: Gate) -> Session:
        return await self.portal.call(gate.open_session, self.login, self.peer, self._disconnect)

    def _opened(self, task: asyncio.Task[Session]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("account=%s peer=%s session did not open: %r", self.login.account, self.peer, task.exception())
            self._disconnect()

    # ---- paths ---------------------------------------------------------------------------------

    def _virtual(self, path: bytes) -> tuple[str, ...]:
        """The normalised parts of a client path: `..` stops at the root, `/` and `\\` separate."""
        self.owner.active()
        try:
            text = path.decode("utf-8")
        except UnicodeDecodeError:
            raise _missing() from None
        if "\0" in text:
            raise _missing()
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
        """(folder, name, real path) of a client path; only the root, a folder or a file in one.
        A symlink anywhere on the way is refused, never followed."""
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
        return ("/" + "/".join(self._virtual(path))).encode()

    # ---- metadata ------------------------------------------------------------------------------

    def _lstat(self, path: bytes) -> os.stat_result:
        _, _, real = self._resolve(path)
        try:
            return os.lstat(real)
        except OSError as error:
            _refuse_os_error(error)

    def stat(self, path: bytes) -> os.stat_result:
        return self._lstat(path)

    def lstat(self, path: bytes) -> os.stat_result:
        return self._lstat(path)

    def fstat(self, file_obj: object) -> os.stat_result:
        assert isinstance(file_obj, _Handle)
        self.owner.active()
        return os.fstat(file_obj.fd)

    def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._lstat(path)  # times and modes are ours to keep: accepted and ignored (clients insist)

    def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        self._lstat(path)  # asyncssh's default would chmod/chown/utime the real path

    def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        assert isinstance(file_obj, _Handle)
        self.owner.active()
        if file_obj.writing and attrs.size is not None:
            self._check_size(attrs.size)
            os.ftruncate(file_obj.fd, attrs.size)  # resuming clients cut the file to what they had

    def statvfs(self, path: bytes) -> Any:
        raise asyncssh.SFTPOpUnsupported("statvfs is not supported")

    def fstatvfs(self, file_obj: object) -> Any:
        raise asyncssh.SFTPOpUnsupported("statvfs is not supported")

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
        # Read whole and closed at once: a listing left half-read must not hold a descriptor.
        with os.scandir(real) as entries:
            listing = [
                asyncssh.SFTPName(
                    os.fsencode(entry.name), attrs=asyncssh.SFTPAttrs.from_local(entry.stat(follow_symlinks=False))
                )
                for entry in entries
                if entry.is_file(follow_symlinks=False)  # symlinks, folders and devices are not there for the client
            ]
        for name_entry in listing:
            yield name_entry

    def readlink(self, path: bytes) -> bytes:
        raise _denied("links are not supported")

    # ---- files ---------------------------------------------------------------------------------

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> _Handle:
        folder, name, real = self._resolve(path)
        if folder is None or name is None:
            raise _denied("only files inside Send_SMS, Processed, Errors or Validate can be opened")
        if not pflags & WRITE_FLAGS:
            return self._open_for_reading(folder, name, real)
        if folder not in folders.UPLOAD_FOLDERS:
            raise _denied(f"{folder} is read-only: upload into {folders.SEND} (or {folders.VALIDATE} to check a file)")
        refusal = folders.upload_refusal(name)
        if refusal is not None:
            raise _denied(refusal)
        self.owner.handles.take(self.owner)
        try:
            return self._open_for_writing(folder, name, real, pflags)
        except BaseException:
            self.owner.handles.give_back(self.owner)
            raise

    def _open_for_writing(self, folder: str, name: str, real: Path, pflags: int) -> _Handle:
        flags = (os.O_RDWR if pflags & asyncssh.FXF_READ else os.O_WRONLY) | os.O_NOFOLLOW
        if pflags & asyncssh.FXF_CREAT:
            flags |= os.O_CREAT
        if pflags & asyncssh.FXF_TRUNC:
            flags |= os.O_TRUNC
        if pflags & asyncssh.FXF_EXCL:
            flags |= os.O_EXCL
        if pflags & asyncssh.FXF_APPEND:
            flags |= os.O_APPEND
        # Marked before the file can appear, so that a sweep never takes an upload in progress.
        marker = folders.incomplete_marker(self.root, name, folder)
        marked_here = not marker.exists()
        marker.parent.mkdir(exist_ok=True)
        marker.touch()
        try:
            fd = os.open(real, flags, UPLOAD_MODE)
        except OSError as error:
            if marked_here:
                marker.unlink(missing_ok=True)
            _refuse_os_error(error)
        return _Handle(fd, folder, name, writing=True, append=bool(pflags & asyncssh.FXF_APPEND))

    def _open_for_reading(self, folder: str, name: str, real: Path) -> _Handle:
        self.owner.handles.take(self.owner)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as error:
            self.owner.handles.give_back(self.owner)
            _refuse_os_error(error)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            self.owner.handles.give_back(self.owner)
            raise _denied("not a file")
        return _Handle(fd, folder, name, writing=False)

    def open56(self, path: bytes, desired_access: int, flags: int, attrs: asyncssh.SFTPAttrs) -> _Handle:
        """SFTP v5/v6 opens, translated to v3 flags so they meet exactly the same rules."""
        pflags = 0
        if desired_access & ACE4_READ_DATA:
            pflags |= asyncssh.FXF_READ
        if desired_access & (ACE4_WRITE_DATA | ACE4_APPEND_DATA):
            pflags |= asyncssh.FXF_WRITE
        if desired_access & ACE4_APPEND_DATA or flags & FXF_APPEND_DATA:
            pflags |= asyncssh.FXF_WRITE | asyncssh.FXF_APPEND
        disposition = flags & FXF_ACCESS_DISPOSITION
        if disposition == FXF_CREATE_NEW:
            pflags |= asyncssh.FXF_CREAT | asyncssh.FXF_EXCL
        elif disposition == FXF_CREATE_TRUNCATE:
            pflags |= asyncssh.FXF_CREAT | asyncssh.FXF_TRUNC
        elif disposition == FXF_OPEN_OR_CREATE:
            pflags |= asyncssh.FXF_CREAT
        elif disposition == FXF_TRUNCATE_EXISTING:
            pflags |= asyncssh.FXF_TRUNC
        return self.open(path, pflags, attrs)

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        assert isinstance(file_obj, _Handle)
        self.owner.active()
        return os.pread(file_obj.fd, size, offset)

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        assert isinstance(file_obj, _Handle)
        self.owner.active()
        if not file_obj.writing:
            raise _denied("the file was not opened for writing")
        if file_obj.too_big:
            raise _too_big(self.owner.limits.max_file_bytes)
        end = (os.fstat(file_obj.fd).st_size if file_obj.append else offset) + len(data)
        if end > self.owner.limits.max_file_bytes:
            # The upload is marked cut off: kept unprocessed even if the client closes it cleanly.
            file_obj.too_big = True
            log.warning("file=%s account=%s write past the size limit refused", quoted(file_obj.name), self.login.account)
            raise _too_big(self.owner.limits.max_file_bytes)
        try:
            return os.pwrite(file_obj.fd, data, offset)
        except OSError as error:
            # A write that failed (a full disk, most likely) leaves a hole: the upload is marked
            # cut off like one past the size limit, kept unprocessed for a resume or a new upload.
            file_obj.too_big = True
            log.warning("file=%s account=%s write failed (%s), kept unprocessed", quoted(file_obj.name), self.login.account, error)
            _refuse_os_error(error)

    def _check_size(self, size: int) -> None:
        if size > self.owner.limits.max_file_bytes:
            raise _too_big(self.owner.limits.max_file_bytes)

    def fsync(self, file_obj: object) -> None:
        assert isinstance(file_obj, _Handle)
        os.fsync(file_obj.fd)

    def lock(self, file_obj: object, offset: int, length: int, flags: int) -> None:
        raise asyncssh.SFTPOpUnsupported("locks are not supported")

    def unlock(self, file_obj: object, offset: int, length: int) -> None:
        raise asyncssh.SFTPOpUnsupported("locks are not supported")

    async def close(self, file_obj: object) -> None:
        assert isinstance(file_obj, _Handle)
        self.owner.active()
        os.close(file_obj.fd)
        self.owner.handles.give_back(self.owner)
        if not file_obj.writing:
            return
        if file_obj.too_big:
            log.warning("file=%s account=%s unfinished (too big or a failed write), kept unprocessed", quoted(file_obj.name), self.login.account)
            return  # its marker stays: never processed, filed as an incomplete upload in time
        if self.channel.is_closing():
            # The connection dropped and asyncssh is closing what was left open: a partial upload.
            # The marker stays, so neither we nor the sweep ever process it (PRODUCT.md §2).
            log.warning("file=%s account=%s upload cut off, kept unprocessed", quoted(file_obj.name), self.login.account)
            return
        folders.incomplete_marker(self.root, file_obj.name, file_obj.folder).unlink(missing_ok=True)
        if folders.is_allowed(file_obj.name):
            await self._report(file_obj.name, file_obj.folder)

    async def _report(self, name: str, folder: str) -> None:
        self.owner.busy += 1
        try:
            session = await self._opening
            await self.portal.call(session.upload_closed, name, folder)
        finally:
            self.owner.busy -= 1
            self.owner.active()

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        old_folder, old_name, old_real = self._resolve(oldpath)
        new_folder, new_name, new_real = self._resolve(newpath)
        if old_folder not in folders.UPLOAD_FOLDERS or new_folder != old_folder or old_name is None or new_name is None:
            raise _denied(f"files can only be renamed within {folders.SEND} (or within {folders.VALIDATE})")
        refusal = folders.upload_refusal(new_name)
        if refusal is not None:
            raise _denied(refusal)
        if not old_real.is_file():
            raise _missing()
        try:
            os.replace(old_real, new_real)
        except OSError as error:
            _refuse_os_error(error)
        old_marker = folders.incomplete_marker(self.root, old_name, old_folder)
        if old_marker.exists():
            # Still open, or cut off: the new name inherits the mark and is not processed.
            os.replace(old_marker, folders.incomplete_marker(self.root, new_name, new_folder))
            return
        if folders.is_allowed(new_name):
            await self._report(new_name, new_folder)

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self.rename(oldpath, newpath)

    def remove(self, path: bytes) -> None:
        folder, name, real = self._resolve(path)
        if folder is None or name is None:
            raise _denied("only files can be removed")
        if not real.is_file():
            raise _missing()
        try:
            os.unlink(real)
        except OSError as error:
            _refuse_os_error(error)
        if folder in folders.UPLOAD_FOLDERS:
            folders.incomplete_marker(self.root, name, folder).unlink(missing_ok=True)

    def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        raise _denied("folders cannot be created")

    def rmdir(self, path: bytes) -> None:
        raise _denied("folders cannot be removed")

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise _denied("links cannot be created")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise _denied("links cannot be created")

    async def exit(self) -> None:
        """The session ended (asyncssh has closed every open handle first). A client that ended it
        cleanly gets exit status 0: without one, OpenSSH's ssh exits 255 and `scp` (SFTP mode) 1."""
        if not self.channel.is_closing():
            self.channel.exit(0)
        try:
            session = await self._opening
        except Exception:
            return  # never opened: nothing to close
        try:
            await self.portal.call(session.close)
        except Exception:
            log.debug("account=%s session close failed", self.login.account, exc_info=True)


def ensure_host_key(path: Path) -> asyncssh.SSHKey:
    """The server's host key, generated (ed25519, mode 0600) on first use.

    Every node of a cluster reads it from the shared data directory, so a client behind the load
    balancer never sees the key change; nodes starting at the same moment publish only one
    (actors/shared_files.publish_once)."""
    data = publish_once(path, lambda: asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    return asyncssh.import_private_key(data)


async def serve_sftp(
    portal: AsyncioPortal,
    gate: Gate,
    *,
    host: str,
    port: int,
    host_key_path: Path,
    limits: DoorLimits = DoorLimits(),
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve SFTP on `host:port` until cancelled; `task_status.started(port)` reports the bound port
    (port 0 picks a free one), so callers `port = await nursery.start(serve_sftp, ...)`.

    A trio function: asyncssh runs on the asyncio host loop through `portal`, and every connection
    calls back into trio through `gate` (logins, one session per SFTP session).

    Resource handling: the host key at `host_key_path` is generated if missing. On the way out
    (cancellation or error) the listener stops accepting, every open connection is closed (their
    open uploads count as cut off and are never reported; their sessions are closed), and this
    waits up to `CLOSE_TIMEOUT` seconds, shielded, for them to finish.

    Limits (`limits`, and the gate's shared connection counter): connections over a cap are
    disconnected with the reason; a connection has `login_grace` seconds to log in and is closed
    after `idle_timeout` seconds without a request; opens past `max_open_files` per connection (or
    past what the process's descriptor limit leaves) and writes past `max_file_bytes` fail with an
    SFTP error.

    Error handling: failing to listen (address in use, unreadable host key) raises here, before
    `started`. Errors of one connection stay in that connection: refusals go to its client as SFTP
    status codes (permission denied, no such file), a refused login as an auth banner, and an
    exception of the gate is logged and ends only that login or request.
    """
    key = ensure_host_key(host_key_path)
    trio_portal = portal.trio_portal
    connections: set[asyncssh.SSHServerConnection] = set()
    handles = _Handles(limits.max_open_files)
    refusing: set[asyncssh.SSHServerConnection] = set()

    def sftp_factory(chan: asyncssh.SSHServerChannel[Any]) -> asyncssh.SFTPServer:
        return _SftpServer(chan, trio_portal)

    async def start() -> asyncssh.SSHAcceptor:
        return await asyncssh.listen(
            host,
            port,
            server_host_keys=[key],
            server_factory=lambda: _SshServer(gate, trio_portal, connections, limits, handles, refusing),
            sftp_factory=sftp_factory,
            allow_scp=False,
            encoding=None,
            agent_forwarding=False,
            x11_forwarding=False,
            allow_pty=False,
            keepalive_interval=KEEPALIVE_INTERVAL,
            login_timeout=limits.login_grace,
        )

    async def stop(acceptor: asyncssh.SSHAcceptor) -> None:
        acceptor.close()
        for conn in list(connections):
            conn.close()
        pending = [asyncio.ensure_future(conn.wait_closed()) for conn in list(connections)]
        pending.append(asyncio.ensure_future(acceptor.wait_closed()))
        _, late = await asyncio.wait(pending, timeout=CLOSE_TIMEOUT)
        for task in late:
            task.cancel()

    with trio.CancelScope(shield=True):  # a listener started is a listener closed
        acceptor = await portal.run(start)
    try:
        task_status.started(acceptor.get_port())
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await portal.run(stop, acceptor)
