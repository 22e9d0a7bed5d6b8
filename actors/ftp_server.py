"""The FTP door (upstream offers port 21 beside SFTP): pyftpdlib in one thread, behind the same gate.

Same accounts, channel rules, folders and pickup semantics as the SFTP door (PRODUCT.md §2):

- a login goes through `Gate.login` (channel "ftp") and opens a session actor;
- the client sees `/Send_SMS`, `/Processed`, `/Errors`, `/Validate`; the account's root is resolved once, at
  login, and every path is derived from it (a relative data directory works; no server path is
  ever shown; the process's working directory is never changed);
- uploads go into `Send_SMS` (sent) or `Validate` (checked only) only, under names the filesystem can store and that are not the
  service's own outputs (`*.report.json`, `*.delivery.csv`), at most `max_file_bytes` long;
- an upload is reported to the session actor only when it is complete, and the client's `226` is
  sent only once the trio side took it (backpressure). In FTP's stream mode the end of a file is
  the data connection closing, which is also what a client killed mid-transfer looks like: so an
  upload counts as complete only if the control connection is still there (and no ABOR came)
  `ftp_cutoff_grace` seconds (50 ms) after the data ended. Anything else (ABOR, a reset data connection, the
  control connection lost) keeps the `.incomplete` marker: the file stays in `Send_SMS` for a
  resume (REST + STOR, APPE) and is never processed as it is;
- limits: the doors' shared connection caps (`gate.connections`: total, per address, per
  account), a login grace time, an idle timeout, a small passive port range.

pyftpdlib runs its own I/O loop in a worker thread and must never wait on trio: calls into trio
(`_TrioCalls`) are started without blocking and their answers come back as callbacks run on the
FTP loop (`_Wakeup`), so one slow login (the gate slows repeated failures down) or one upload
waiting for a file actor delays only its own connection.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import unicodedata
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.ioloop import AsyncChat, IOLoop
from pyftpdlib.servers import FTPServer

from actors.sftp_server import Gate, Login, LoginRefused, Session
from sftpsms import folders
from sftpsms.config import Settings
from sftpsms.connections import Connection, TooManyConnections

log = logging.getLogger(__name__)

PERMISSIONS = "elradfw"  # never m (mkdir), M (chmod), T (set mtime)
POLL_TIMEOUT = 1.0  # the loop wakes earlier for trio's answers, timers and stop
LOGIN_MESSAGE = "Welcome. Upload into Send_SMS; results appear in Processed and Errors. Validate checks a file without sending it."


class FtpSettingError(ValueError):
    """A setting of the FTP door that cannot be used; the message names it."""


@dataclass(frozen=True)
class FtpLimits:
    """What one FTP client may hold; the connection caps are the gate's shared `connections`."""

    passive_ports: range | None = None  # None: any port the kernel picks
    login_grace: float = 30.0
    idle_timeout: float = 600.0
    max_file_bytes: int = 1 << 30
    cutoff_grace: float = 0.05

    @classmethod
    def from_settings(cls, settings: Settings) -> FtpLimits:
        return cls(
            passive_ports=parse_port_range(settings.ftp_passive_ports),
            login_grace=settings.login_grace_seconds,
            idle_timeout=settings.idle_timeout,
            max_file_bytes=settings.max_file_bytes,
            cutoff_grace=settings.ftp_cutoff_grace,
        )


def parse_port_range(text: str) -> range | None:
    """`"60000-60099"` (both ends included) or one port; empty means any port."""
    text = text.strip()
    if not text:
        return None
    first, _, last = text.partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        raise FtpSettingError(f"ftp_passive_ports: expected FIRST-LAST (e.g. 60000-60099), got {text!r}") from None
    if not 1024 <= low <= high <= 65535:
        raise FtpSettingError(f"ftp_passive_ports: {text!r} is not a range of ports within 1024-65535")
    return range(low, high + 1)


# ---- between the FTP loop and trio ---------------------------------------------------------------


class _Wakeup(AsyncChat):  # type: ignore[misc]
    """Runs callbacks posted from any thread on the FTP loop, waking its poll through a socket."""

    def __init__(self, ioloop: Any) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._pending: deque[Callable[[], object]] = deque()
        super().__init__(self._reader, ioloop=ioloop)

    def post(self, callback: Callable[[], object]) -> None:
        """Thread-safe: `callback` runs on the FTP loop soon."""
        self._pending.append(callback)
        try:
            self._writer.send(b"\0")
        except OSError:
            pass  # the socket is full (the loop will wake anyway) or closed (the loop is gone)

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def handle_read(self) -> None:
        try:
            self._reader.recv(4096)
        except OSError:
            pass
        while self._pending:
            callback = self._pending.popleft()
            try:
                callback()
            except Exception:
                log.exception("ftp callback failed")

    def close(self) -> None:
        super().close()
        self._writer.close()


Done = Callable[[Any, Exception | None], object]


class _TrioCalls:
    """Start an async function on trio from the FTP loop without waiting; `then(result, error)` runs
    on the FTP loop once it finished."""

    def __init__(self, token: trio.lowlevel.TrioToken, nursery: trio.Nursery, wakeup: _Wakeup) -> None:
        self._token = token
        self._nursery = nursery
        self._wakeup = wakeup

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any, then: Done | None = None) -> None:
        def start() -> None:
            try:
                self._nursery.start_soon(self._run, fn, args, then)
            except RuntimeError:
                pass  # the door is closing

        try:
            self._token.run_sync_soon(start)
        except trio.RunFinishedError:
            pass

    async def _run(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...], then: Done | None) -> None:
        try:
            result = await fn(*args)
        except Exception as error:
            if then is None:
                log.warning("ftp call %s failed: %r", getattr(fn, "__qualname__", fn), error)
            else:
                self._wakeup.post(partial(then, None, error))
            return
        if then is not None:
            self._wakeup.post(partial(then, result, None))


# ---- pyftpdlib's parts ---------------------------------------------------------------------------


class _Permissions(DummyAuthorizer):  # type: ignore[misc]
    """One per connection: what the logged-in account may do where (logins go through the gate)."""

    def __init__(self, handler: _Handler) -> None:
        super().__init__()
        self.handler = handler

    def get_perms(self, username: str) -> str:
        return PERMISSIONS

    def get_msg_login(self, username: str) -> str:
        return LOGIN_MESSAGE

    def get_msg_quit(self, username: str) -> str:
        return "Goodbye."

    def has_perm(self, username: str, perm: str, path: str | None = None) -> bool:
        root = self.handler.root
        if root is None or perm not in PERMISSIONS:
            return False
        if path is None:
            return True
        try:
            parts = Path(path).relative_to(root).parts
        except ValueError:
            return False
        if not parts:
            return perm in "el"
        if parts[0] not in folders.FOLDERS or len(parts) > 2:
            return False
        if os.path.islink(root / parts[0]) or (len(parts) == 2 and os.path.islink(path)):
            return False  # links are never followed
        if perm in "wf":
            return parts[0] in folders.UPLOAD_FOLDERS
        if perm == "a":
            return parts[0] in folders.UPLOAD_FOLDERS and len(parts) == 2
        return True


class _Filesystem(AbstractedFS):  # type: ignore[misc]
    """The account's root (absolute, resolved once) as `/`; the root lists exactly the folders."""

    def chdir(self, path: str) -> None:
        # pyftpdlib's own chdir calls os.chdir: the whole process's working directory, under every
        # other thread's relative paths. Checked and remembered here instead.
        if os.path.islink(path) or not os.path.isdir(path):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        self.cwd = self.fs2ftp(path)

    def listdir(self, path: str) -> list[str]:
        names: list[str] = super().listdir(path)
        if os.path.normpath(path) == os.path.normpath(self.root):
            return [name for name in folders.FOLDERS if name in names]
        return [name for name in names if not os.path.islink(os.path.join(path, name))]


class _Receiving:
    """Mixed into pyftpdlib's data channel: an upload past `max_file_bytes` is stopped while it is
    written, and the end of an upload is answered by the command channel (see `_Handler._settle`)."""

    cmd_channel: Any
    receive: bool
    transfer_finished: bool
    file_obj: Any
    socket: Any
    _closed: bool
    _resp: tuple[Any, ...]

    def handle_read_event(self) -> None:
        # pyftpdlib's poller calls handle_read_event (DTPHandler aliases it to handle_read; FTPS
        # wraps it for the TLS handshake): checked after each read, whatever the variant.
        super().handle_read_event()  # type: ignore[misc]
        limit = self.cmd_channel.limits.max_file_bytes
        file = self.file_obj
        if self.receive and limit and not self._closed and file is not None and not file.closed and file.tell() > limit:
            self.cmd_channel.too_big = True
            self._resp = (f"552 Upload refused: a file may be at most {limit} bytes.", logging.getLogger("pyftpdlib").info)
            self.transfer_finished = False
            self.close()

    def handle_close(self) -> None:
        # pyftpdlib takes a reset data connection for the end of the file (ECONNRESET is one of
        # its "disconnected" errors): only a FIN is.
        if self.receive and not self._closed and _tcp_state(self.socket) == TCP_CLOSE:
            self.transfer_finished = False
            self._resp = ("426 Data connection reset; the file is kept for a resume.", logging.getLogger("pyftpdlib").info)
            self.close()
            return
        super().handle_close()  # type: ignore[misc]

    def close(self) -> None:
        if not self._closed and self.receive and self.transfer_finished:
            self._resp = ()  # not "226" yet: only once the upload is known to be whole and was taken
        super().close()  # type: ignore[misc]


TCP_CLOSE = 7  # Linux's tcpi_state after a reset (a FIN received leaves CLOSE_WAIT, 8)


def _tcp_state(connection: Any) -> int | None:
    """The kernel's TCP state of a connection's socket (Linux TCP_INFO), None when unknown."""
    option = getattr(socket, "TCP_INFO", None)
    if option is None:
        return None
    try:
        probe = socket.socket(fileno=connection.fileno())
    except (OSError, ValueError):
        return None
    try:
        return probe.getsockopt(socket.IPPROTO_TCP, option, 1)[0]
    except OSError:
        return None
    finally:
        probe.detach()


def _control_state(connection: Any) -> str:
    """"closed", "abort" (an ABOR is waiting to be read) or "open": a look at the control
    connection's socket without reading from it (under FTPS the bytes are TLS records: only the
    connection's end is seen there)."""
    if connection is None:
        return "closed"
    try:
        probe = socket.socket(fileno=connection.fileno())
    except OSError:
        return "closed"
    try:
        waiting = probe.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return "open"
    except OSError:
        return "closed"
    finally:
        probe.detach()  # the descriptor stays pyftpdlib's
    if not waiting:
        return "closed"
    return "abort" if b"ABOR" in waiting.upper() else "open"


class _Handler(FTPHandler):  # type: ignore[misc]
    gate: Gate
    calls: _TrioCalls
    wakeup: _Wakeup
    limits: FtpLimits
    auth_failed_timeout = 0  # the gate slows repeated failures itself, on that login only
    _rnfr: str | None
    _restart_position: int

    def __init__(self, conn: socket.socket, server: Any, ioloop: Any = None) -> None:
        self.login: Login | None = None
        self.root: Path | None = None
        self.session: Session | None = None
        self.too_big = False
        self._settling: Any = None
        self._settling_file = ""
        self._taking = False  # a whole upload is being handed to its session: its 226 is pending
        self._aborted = False  # an upload's data ended with an ABOR waiting: that ABOR's 426 is due
        self._quit_after = False  # a QUIT came before that 226
        self._logging_in = False
        self.authorizer = _Permissions(self)
        self.counted: Connection | None = None
        super().__init__(conn, server, ioloop=ioloop)
        self._grace: Any = None
        if self.connected and self.limits.login_grace > 0:
            self._grace = self.call_later(self.limits.login_grace, self._login_overdue)

    def handle(self) -> None:
        """A new connection: counted in the doors' shared caps (total, per address) first."""
        try:
            self.counted = self.gate.connections.connect(self.remote_ip)
        except TooManyConnections as refused:
            log.warning("connection refused peer=%s: %s", self.remote_ip, refused.message)
            self.respond(f"421 {refused.message[:1].upper()}{refused.message[1:]}.", logfun=log.debug)
            self.close_when_done()
            return
        super().handle()

    # ---- login -------------------------------------------------------------------------------

    def _login_overdue(self) -> None:
        if not self.authenticated and not self._closed:
            self.respond(f"421 Log in within {self.limits.login_grace:g} seconds; closing.", logfun=log.info)
            self.close_when_done()

    def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
        if cmd.upper() != "PASS" and any(unicodedata.category(char) in ("Cc", "Zl", "Zp") for char in arg):
            self.respond("501 Control characters (NUL, newline, ...) are not allowed in names.")
            return
        super().pre_process_command(line, cmd, arg)

    def ftp_PASS(self, line: str) -> None:
        if self.authenticated:
            self.respond("503 User already authenticated.")
            return
        if not self.username or self._logging_in:
            self.respond("503 Login with USER first.")
            return
        username, peer, wakeup = self.username, self.remote_ip, self.wakeup

        def disconnect() -> None:  # called from trio (access revoked)
            wakeup.post(self.close)

        async def log_in() -> tuple[Login, Session]:
            login = await self.gate.login(username, line, peer)
            try:
                session = await self.gate.open_session(login, peer, disconnect)
            except Exception:
                log.exception("ftp session did not open account=%s peer=%s", username, peer)
                raise
            return login, session

        def answered(result: tuple[Login, Session] | None, error: Exception | None) -> None:
            self._logging_in = False
            if self._closed:
                if result is not None:
                    self.calls.call(result[1].close)
                return
            self.add_channel()
            if result is not None:
                try:
                    assert self.counted is not None
                    self.counted.logged_in(result[0].account)  # the per-account cap
                except TooManyConnections as refused:
                    log.warning("login refused account=%s peer=%s: %s", result[0].account, peer, refused.message)
                    self.calls.call(result[1].close)
                    self.respond(f"421 {refused.message[:1].upper()}{refused.message[1:]}.")
                    self.close_when_done()
                    return
                self.login, self.session = result
                self.root = Path(os.path.realpath(self.login.root))
                if self._grace is not None:
                    self._grace.cancel()
                self.handle_auth_success(str(self.root), "", LOGIN_MESSAGE)
            elif isinstance(error, LoginRefused):
                self.handle_auth_failed(error.message, "")
            else:
                log.error("ftp login failed account=%s peer=%s: %r", username, peer, error)
                self.handle_auth_failed("login failed", "")

        # No further command is read from this connection until the gate answered; the others go on.
        self._logging_in = True
        self.del_channel()
        self.calls.call(log_in, then=answered)

    def close(self) -> None:
        if self._settling is not None and not self._closed:
            # The control connection ended right after the data: a client killed mid-file.
            self._settling.cancel()
            name = self._in_send(self._settling_file)
            self._settling = None
            log.warning("file=%r account=%s upload cut off (connection lost), kept unprocessed", name, self._account)
        if self.counted is not None:
            self.counted.close()
        super().close()

    def flush_account(self) -> None:
        super().flush_account()  # calls on_logout: the session is closed
        self.login = self.root = None

    def _end_session(self) -> None:
        if self.session is not None:
            session, self.session = self.session, None
            self.calls.call(session.close)

    def on_logout(self, username: str) -> None:
        self._end_session()

    def on_disconnect(self) -> None:
        self._end_session()

    # ---- uploads -----------------------------------------------------------------------------

    def _in_upload(self, path: str) -> tuple[str, str] | tuple[None, None]:
        """(folder, file name) when `path` is a file directly inside Send_SMS or Validate."""
        if self.root is None:
            return None, None
        real = Path(path)
        for folder in folders.UPLOAD_FOLDERS:
            if real.parent == self.root / folder:
                return folder, real.name
        return None, None

    def _in_send(self, path: str) -> str | None:
        """The file name when `path` is a file directly inside Send_SMS or Validate, else None."""
        return self._in_upload(path)[1]

    def _marker(self, name: str, folder: str = folders.SEND) -> Path:
        assert self.root is not None
        return folders.incomplete_marker(self.root, name, folder)

    def ftp_STOR(self, file: str, mode: str = "w") -> Any:
        folder, name = self._in_upload(file)
        if folder is None or name is None:
            self.respond("553 Upload into Send_SMS only (or into Validate to check a file).")
            return None
        refusal = folders.upload_refusal(name)
        if refusal is not None:
            self.respond(f"553 {refusal[:1].upper()}{refusal[1:]}.")
            return None
        if self._restart_position > self.limits.max_file_bytes:
            self._restart_position = 0
            self.respond(f"552 Upload refused: a file may be at most {self.limits.max_file_bytes} bytes.")
            return None
        # Marked before the file can appear, so that a sweep never takes an upload in progress.
        marker = self._marker(name, folder)
        marked_here = not marker.exists()
        marker.parent.mkdir(exist_ok=True)
        marker.touch()
        self.too_big = False
        result = super().ftp_STOR(file, mode)
        if result is None and marked_here:
            marker.unlink(missing_ok=True)  # nothing was written
        return result

    def ftp_STOU(self, line: str) -> None:
        self.respond("502 STOU is not supported: STOR a name into Send_SMS.")

    def on_file_received(self, file: str) -> None:
        # The data connection ended cleanly: the end of the file, or a client killed mid-file.
        # A killed client's control connection usually closed with the data: seen at once, else
        # within the grace; a whole upload waits only the grace for its 226.
        if self._quit_after:  # the client said QUIT during the transfer: it is alive, and done
            self._settle(file, alive=True)
            return
        self._settling_file = file
        delay = 0.0 if _control_state(self.socket) != "open" else self.limits.cutoff_grace
        self._settling = self.call_later(delay, self._settle, file)

    def _settle(self, file: str, *, alive: bool = False) -> None:
        self._settling = None
        folder, name = self._in_upload(file)
        state = "open" if alive else _control_state(self.socket)
        if state != "open":
            log.warning("file=%r account=%s upload cut off (%s), kept unprocessed", name, self._account, state)
            self._aborted = state == "abort"  # the waiting ABOR is answered for this transfer
            return
        if folder is None or name is None or not folders.is_allowed(name) or self.session is None:
            if folder is not None and name is not None:
                self._marker(name, folder).unlink(missing_ok=True)
            self._answer("226 Transfer complete.")
            return
        self._marker(name, folder).unlink(missing_ok=True)
        self._taking = True
        self.calls.call(self.session.upload_closed, name, folder, then=self._taken)

    def _taken(self, result: object, error: Exception | None) -> None:
        self._taking = False
        if self._closed:
            return
        if error is not None:
            log.error("account=%s upload not taken: %r", self._account, error)
            self._answer("451 The upload could not be taken; it will be picked up later.")
            return
        self._answer("226 Transfer complete.")

    def _answer(self, reply: str) -> None:
        """The upload's final reply, then a QUIT that came before it."""
        self.respond(reply)
        if self._quit_after:
            self._quit_after = False
            super().ftp_QUIT("")

    def ftp_QUIT(self, line: str) -> None:
        if self._settling is not None:
            # A client that says QUIT after the data ended is alive: the upload is whole.
            self._settling.cancel()
            self._quit_after = True
            self._settle(self._settling_file, alive=True)
            return
        if self._taking or (self.data_channel is not None and self.data_channel.receive):
            self._quit_after = True  # answered once the upload ended (whole, or cut off)
            return
        super().ftp_QUIT(line)

    def ftp_ABOR(self, line: str) -> None:
        if self._settling is not None or self._aborted:
            # The data ended and the client aborts: the transfer did not complete.
            if self._settling is not None:
                self._settling.cancel()
            self._settling = None
            self._aborted = False
            self.respond("426 Transfer aborted; the file is kept for a resume.")
            self.respond("226 ABOR command successful.")
            return
        super().ftp_ABOR(line)

    def on_incomplete_file_received(self, file: str) -> None:
        folder, name = self._in_upload(file)
        if self._quit_after:
            self._quit_after = False
            super().ftp_QUIT("")  # after the transfer's own 426
        if self.too_big and folder is not None and name is not None:
            self.too_big = False
            Path(file).unlink(missing_ok=True)
            self._marker(name, folder).unlink(missing_ok=True)
            log.warning("file=%r account=%s upload refused: over %d bytes", name, self._account, self.limits.max_file_bytes)
            return
        log.warning("file=%r account=%s upload cut off, kept unprocessed", name, self._account)

    @property
    def _account(self) -> str:
        return self.login.account if self.login is not None else "-"

    # ---- renames and deletes -----------------------------------------------------------------

    def ftp_RNTO(self, path: str) -> Any:
        source, self._rnfr = self._rnfr, None
        new_folder, new_name = self._in_upload(path)
        old_folder, old_name = self._in_upload(source) if source is not None else (None, None)
        if source is None:
            self.respond("503 Bad sequence of commands: use RNFR first.")
            return None
        if old_name is None or new_name is None or new_folder is None or old_folder != new_folder:
            self.respond("553 Files can only be renamed within Send_SMS (or within Validate).")
            return None
        refusal = folders.upload_refusal(new_name)
        if refusal is not None:
            self.respond(f"553 {refusal[:1].upper()}{refusal[1:]}.")
            return None
        if os.path.islink(source) or not os.path.isfile(source):
            self.respond("550 No such file.")
            return None
        try:
            os.replace(source, path)
        except OSError as error:
            self.respond(f"550 {os.strerror(error.errno or errno.EACCES)}.")
            return None
        old_marker = self._marker(old_name, new_folder)
        if old_marker.exists():
            # Still being written, or cut off: the new name inherits the mark and is not processed.
            os.replace(old_marker, self._marker(new_name, new_folder))
        elif folders.is_allowed(new_name) and self.session is not None:
            self.calls.call(self.session.upload_closed, new_name, new_folder, then=self._renamed)
            return (source, path)
        self.respond("250 Renaming ok.")
        return (source, path)

    def _renamed(self, result: object, error: Exception | None) -> None:
        if not self._closed:
            self.respond("250 Renaming ok." if error is None else "451 Renamed; the file will be picked up later.")

    def ftp_DELE(self, path: str) -> Any:
        result = super().ftp_DELE(path)
        folder, name = self._in_upload(path)
        if result is not None and folder is not None and name is not None:
            self._marker(name, folder).unlink(missing_ok=True)
        return result


class _Door:
    """The FTP server and its loop, run in one worker thread."""

    def __init__(self, server: FTPServer, wakeup: _Wakeup) -> None:
        self.server = server
        self.wakeup = wakeup
        self.stopping = False

    def serve(self) -> None:
        host, port = self.server.address
        log.info("ftp door serving on %s:%d", host, port)
        ioloop = self.server.ioloop
        timeout: float | None = POLL_TIMEOUT
        try:
            while not self.stopping:
                soonest = ioloop.loop(timeout, blocking=False)
                timeout = POLL_TIMEOUT if soonest is None else max(0.0, min(POLL_TIMEOUT, soonest))
        finally:
            self.server.close_all()

    def stop(self) -> None:
        self.stopping = True
        self.wakeup.post(lambda: None)


async def serve_ftp(
    gate: Gate,
    *,
    host: str,
    port: int,
    limits: FtpLimits | None = None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve FTP until cancelled; reports the bound port (0 picks a free one).

    Resource handling: the server, its connections and its loop are closed in its own thread on
    the way out; the thread is told to stop at once (no polling delay).
    Error handling: a failing connection is pyftpdlib's to log and close; the gate refuses what
    it must; a call into trio that fails answers that one connection with an error reply.
    """
    limits = limits or FtpLimits()
    token = trio.lowlevel.current_trio_token()
    ioloop = IOLoop.factory()  # our own loop, not pyftpdlib's process-wide instance
    wakeup = _Wakeup(ioloop)
    async with trio.open_nursery() as nursery:
        calls = _TrioCalls(token, nursery, wakeup)
        # pyftpdlib configures handlers through class attributes: one subclass per server. With a
        # certificate the door speaks explicit FTPS (AUTH TLS) and refuses clear-text logins and data.
        tls: dict[str, Any] = {}
        bases: tuple[type, ...] = (_Handler,)
        data_bases: tuple[type, ...] = (_Receiving, DTPHandler)
        if certfile is not None:
            from pyftpdlib.handlers import TLS_DTPHandler, TLS_FTPHandler

            bases = (_Handler, TLS_FTPHandler)
            data_bases = (_Receiving, TLS_DTPHandler)
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
                "calls": calls,
                "wakeup": wakeup,
                "limits": limits,
                "dtp_handler": type("DataChannel", data_bases, {}),
                "abstracted_fs": _Filesystem,
                "banner": "sftpsms FTP: log in with your account or an API key for the ftp channel.",
                "permit_foreign_addresses": False,
                "passive_ports": list(limits.passive_ports) if limits.passive_ports else None,
                "timeout": limits.idle_timeout or None,
            },
        )
        server = FTPServer((host, port), handler, ioloop=ioloop)
        server.max_cons = 0  # counted by the gate's shared counter (SFTP and FTP together)
        server.max_cons_per_ip = 0
        door = _Door(server, wakeup)
        nursery.start_soon(lambda: trio.to_thread.run_sync(door.serve, abandon_on_cancel=False))
        task_status.started(server.address[1])
        try:
            await trio.sleep_forever()
        finally:
            door.stop()
            nursery.cancel_scope.cancel()
