"""The SFTP door and the asyncio↔trio bridge, driven by real clients (OpenSSH `sftp`, paramiko,
asyncssh) against the real server, hosted by `bridge.run` in a background thread with a fake gate."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import asyncssh
import paramiko
import pytest
import trio
import trio.lowlevel

from actors import bridge, sftp_server
from actors.sftp_server import Login, LoginRefused, serve_sftp
from sftpsms.connections import ConnectionCounter
from tests.service import askpass_env

PASSWORD = "secret-pw"
NOT_ENABLED = "channel sftp is not enabled for newbie: run `sftpsms apikey create newbie --channel sftp`"
BAD_LOGIN = "invalid username or password"
WAIT = 10.0


# ---- a fake gate, recording what the door tells the trio side --------------------------------------


@dataclass(frozen=True)
class Event:
    kind: str  # "upload_closed" | "session_closed"
    account: str
    name: str = ""
    at: float = 0.0  # time.perf_counter() when the trio side got it
    folder: str = "Send_SMS"  # where the upload closed (Send_SMS or Validate)


class Recorder:
    """Thread-safe log of gate calls, with waiting on a condition (never sleep and hope)."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._changed = threading.Condition()

    def add(self, event: Event) -> None:
        with self._changed:
            self._events.append(event)
            self._changed.notify_all()

    def events(self, account: str, kind: str = "upload_closed") -> list[Event]:
        with self._changed:
            return [e for e in self._events if e.account == account and e.kind == kind]

    def names(self, account: str) -> list[str]:
        return [e.name for e in self.events(account)]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
        with self._changed:
            if not self._changed.wait_for(predicate, timeout):
                raise AssertionError(f"timed out; events so far: {self._events}")


class FakeSession:
    def __init__(self, gate: FakeGate, login: Login) -> None:
        self.gate = gate
        self.login = login

    async def upload_closed(self, name: str, folder: str = "Send_SMS") -> None:
        self.gate.recorder.add(Event("upload_closed", self.login.account, name, time.perf_counter(), folder))
        hold = self.gate.holds.get(name)
        if hold is not None:
            await hold.wait()

    async def close(self) -> None:
        self.gate.recorder.add(Event("session_closed", self.login.account, at=time.perf_counter()))


@dataclass
class FakeGate:
    accounts_dir: Path
    passwords: dict[str, str]
    recorder: Recorder = field(default_factory=Recorder)
    holds: dict[str, trio.Event] = field(default_factory=dict)  # upload names whose pickup blocks
    connections: ConnectionCounter = field(default_factory=ConnectionCounter)

    async def login(self, username: str, password: str, peer: str) -> Login:
        await trio.sleep(0.01)  # a password hash takes a while; the loop must stay free meanwhile
        if username == "newbie":
            raise LoginRefused(NOT_ENABLED)
        if self.passwords.get(username) != password:
            raise LoginRefused(BAD_LOGIN)
        return Login(account=username, root=self.accounts_dir / username)

    async def login_by_key(self, username: str, fingerprint: str, peer: str) -> Login:
        raise LoginRefused(BAD_LOGIN)  # no keys here: clients fall back to their password

    async def open_session(self, login: Login, peer: str, disconnect: Callable[[], None]) -> FakeSession:
        return FakeSession(self, login)


# ---- the server in a background thread ----------------------------------------------------------


@dataclass
class Server:
    port: int
    gate: FakeGate
    host_key: Path
    token: trio.lowlevel.TrioToken
    stop: Callable[[], None]

    def root(self, account: str) -> Path:
        return self.gate.accounts_dir / account

    def folder(self, account: str, folder: str) -> Path:
        return self.root(account) / folder

    def hold(self, name: str) -> Callable[[], None]:
        """Make the pickup of `name` block until the returned function is called."""
        event = trio.Event()
        self.gate.holds[name] = event
        return lambda: trio.from_thread.run_sync(event.set, trio_token=self.token)

    @contextmanager
    def paramiko(self, username: str = "alice", password: str = PASSWORD) -> Iterator[paramiko.SFTPClient]:
        transport = paramiko.Transport(("127.0.0.1", self.port))
        try:
            transport.connect(username=username, password=password)
            client = paramiko.SFTPClient.from_transport(transport)
            assert client is not None
            yield client
        finally:
            transport.close()

    def openssh(self, commands: str, username: str = "alice", password: str = PASSWORD) -> subprocess.CompletedProcess[str]:
        """OpenSSH `sftp -b`, the password answered through SSH_ASKPASS (no sshpass here)."""
        with askpass_env(password) as env, tempfile.TemporaryDirectory() as scratch:
            batch = Path(scratch) / "batch"
            batch.write_text(commands)
            return subprocess.run(
                [
                    "sftp",
                    "-o", "BatchMode=no",  # before -b, which would turn it on and forbid passwords
                    "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "PreferredAuthentications=password,keyboard-interactive",
                    "-o", "PubkeyAuthentication=no",
                    "-o", "NumberOfPasswordPrompts=1",
                    "-P", str(self.port),
                    "-b", str(batch),
                    f"{username}@127.0.0.1",
                ],
                capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=60,
            )  # fmt: skip


@contextmanager
def running_server(base: Path) -> Iterator[Server]:
    """`bridge.run` in a thread: asyncio hosts, trio is the guest, `serve_sftp` on 127.0.0.1:0."""
    gate = FakeGate(base / "accounts", {"alice": PASSWORD, "bob": PASSWORD})
    host_key = base / "keys" / "host_ed25519"
    started: queue.Queue[tuple[int, trio.lowlevel.TrioToken, trio.CancelScope] | BaseException] = queue.Queue()
    outcome: list[BaseException | None] = []

    async def main(portal: bridge.AsyncioPortal) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(
                    partial(serve_sftp, portal, gate, host="127.0.0.1", port=0, host_key_path=host_key)
                )
                started.put((port, trio.lowlevel.current_trio_token(), scope))

    def host() -> None:
        try:
            bridge.run(main)
            outcome.append(None)
        except BaseException as error:  # handed to the test thread
            outcome.append(error)
            started.put(error)

    thread = threading.Thread(target=host, name="sftp-server", daemon=True)
    thread.start()
    first = started.get(timeout=WAIT)
    if isinstance(first, BaseException):
        raise first
    port, token, scope = first

    def stop() -> None:
        try:
            token.run_sync_soon(scope.cancel)
        except trio.RunFinishedError:
            pass
        thread.join(WAIT)
        assert not thread.is_alive(), "the server did not stop"
        assert outcome == [None], outcome

    server = Server(port, gate, host_key, token, stop)
    try:
        yield server
    finally:
        if thread.is_alive():
            stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("door")) as running:
        yield running


def upload(sftp: paramiko.SFTPClient, path: str, data: bytes) -> None:
    with sftp.open(path, "wb") as remote:
        remote.write(data)


# ---- logins and folders -------------------------------------------------------------------------


def test_a_put_json_is_reported_once_with_its_bytes_on_disk(server: Server, tmp_path: Path) -> None:
    local = tmp_path / "first.json"
    local.write_bytes(b'{"Version": 7}')
    result = server.openssh(f"put {local} Send_SMS/first.json\n")
    assert result.returncode == 0, result.stderr
    server.gate.recorder.wait_for(lambda: len(server.gate.recorder.events("alice", "session_closed")) >= 1)
    assert server.gate.recorder.names("alice").count("first.json") == 1
    assert (server.folder("alice", "Send_SMS") / "first.json").read_bytes() == b'{"Version": 7}'


def test_login_creates_the_four_folders_and_root_lists_exactly_them(server: Server) -> None:
    result = server.openssh("ls -1a /\n", username="bob")
    assert result.returncode == 0, result.stderr
    listed = [line.strip() for line in result.stdout.splitlines() if line.strip() and not line.startswith("sftp>")]
    assert sorted(name.strip("/").rsplit("/", 1)[-1] for name in listed) == [".", "..", "Errors", "Processed", "Send_SMS", "Validate"]
    assert sorted(p.name for p in server.root("bob").iterdir() if not p.name.startswith(".")) == [
        "Errors", "Processed", "Send_SMS", "Validate"
    ]  # fmt: skip
    with server.paramiko("bob") as sftp:
        assert sorted(sftp.listdir("/")) == ["Errors", "Processed", "Send_SMS", "Validate"]
        assert sorted(sftp.listdir(".")) == ["Errors", "Processed", "Send_SMS", "Validate"]
        assert sorted(sftp.listdir("../../..")) == ["Errors", "Processed", "Send_SMS", "Validate"]


def test_wrong_password_is_refused_and_the_message_reaches_openssh(server: Server) -> None:
    result = server.openssh("ls\n", password="nope")
    assert result.returncode != 0
    assert BAD_LOGIN in result.stderr


def test_a_refused_login_shows_the_gate_message(server: Server) -> None:
    result = server.openssh("ls\n", username="newbie")
    assert result.returncode != 0
    assert NOT_ENABLED in result.stderr
    with pytest.raises(paramiko.AuthenticationException):
        with server.paramiko("newbie"):
            pass


def test_shell_and_exec_are_refused(server: Server) -> None:
    transport = paramiko.Transport(("127.0.0.1", server.port))
    try:
        transport.connect(username="alice", password=PASSWORD)
        channel = transport.open_session()
        with pytest.raises(paramiko.SSHException):
            channel.exec_command("id")
        channel = transport.open_session()
        with pytest.raises(paramiko.SSHException):
            channel.invoke_shell()
    finally:
        transport.close()


# ---- uploads ------------------------------------------------------------------------------------


def test_paths_are_normalised_to_the_same_file(server: Server) -> None:
    with server.paramiko() as sftp:
        upload(sftp, "/Send_SMS/norm.json", b"1")
        upload(sftp, "Send_SMS/./norm.json", b"22")
        upload(sftp, "/Processed/../Send_SMS//norm.json", b"333")
        assert sftp.stat("Send_SMS/norm.json").st_size == 3
    assert server.gate.recorder.names("alice").count("norm.json") == 3
    assert (server.folder("alice", "Send_SMS") / "norm.json").read_bytes() == b"333"


@pytest.mark.parametrize("name", ["tool.exe", "script.sh", "noext", "data.json.exe"])
def test_names_other_than_txt_json_zip_are_refused_at_open(server: Server, name: str) -> None:
    with server.paramiko() as sftp:
        with pytest.raises(PermissionError):
            sftp.open(f"Send_SMS/{name}", "wb")
    assert not (server.folder("alice", "Send_SMS") / name).exists()


def test_allowed_suffixes_in_any_case_are_accepted(server: Server) -> None:
    with server.paramiko() as sftp:
        for name in ("upper.JSON", "mixed.Txt", "bundle.ZIP"):
            upload(sftp, f"Send_SMS/{name}", b"x")
    names = server.gate.recorder.names("alice")
    assert {"upper.JSON", "mixed.Txt", "bundle.ZIP"} <= set(names)


def test_openssh_put_of_an_exe_fails_and_leaves_nothing(server: Server, tmp_path: Path) -> None:
    local = tmp_path / "evil.exe"
    local.write_bytes(b"MZ")
    result = server.openssh(f"put {local} Send_SMS/evil.exe\n")
    assert result.returncode != 0
    assert "ermission denied" in result.stderr
    assert not (server.folder("alice", "Send_SMS") / "evil.exe").exists()


@pytest.mark.parametrize("temporary", ["winscp.json.filepart", "partial.json.part", "upload.tmp", ".hidden.json"])
def test_a_temporary_upload_is_reported_only_after_its_rename(server: Server, temporary: str) -> None:
    final = "renamed-" + temporary.strip(".").split(".")[0] + ".json"
    with server.paramiko() as sftp:
        upload(sftp, f"Send_SMS/{temporary}", b'{"Version": 7}')
        sftp.stat(f"Send_SMS/{temporary}")  # a round trip after the CLOSE reply
        assert temporary not in server.gate.recorder.names("alice")
        assert final not in server.gate.recorder.names("alice")
        sftp.posix_rename(f"Send_SMS/{temporary}", f"Send_SMS/{final}")
        assert server.gate.recorder.names("alice").count(final) == 1  # reported before the reply
    assert (server.folder("alice", "Send_SMS") / final).read_bytes() == b'{"Version": 7}'
    assert not (server.folder("alice", "Send_SMS") / temporary).exists()


def test_a_rename_to_a_refused_name_or_out_of_send_sms_is_refused(server: Server) -> None:
    with server.paramiko() as sftp:
        upload(sftp, "Send_SMS/stay.part", b"x")
        for target in ("Send_SMS/stay.exe", "Processed/stay.json", "../stay.json", "/stay.json"):
            with pytest.raises(OSError):
                sftp.rename("Send_SMS/stay.part", target)
    assert (server.folder("alice", "Send_SMS") / "stay.part").exists()


def test_writing_into_processed_or_errors_or_the_root_is_refused(server: Server) -> None:
    with server.paramiko() as sftp:
        for path in ("Processed/x.json", "Errors/x.json", "/x.json", "x.json"):
            with pytest.raises(OSError):
                sftp.open(path, "wb")
    for folder in ("Processed", "Errors"):
        assert not (server.folder("alice", folder) / "x.json").exists()
    assert not (server.root("alice") / "x.json").exists()


def test_processed_and_errors_can_be_read_listed_and_deleted(server: Server) -> None:
    (server.folder("alice", "Processed") / "done.json.report.json").write_text('{"status": "processed"}')
    with server.paramiko() as sftp:
        assert "done.json.report.json" in sftp.listdir("Processed")
        with sftp.open("/Processed/done.json.report.json") as remote:
            assert remote.read() == b'{"status": "processed"}'
        sftp.remove("Processed/done.json.report.json")
    assert not (server.folder("alice", "Processed") / "done.json.report.json").exists()


def test_folders_links_and_attribute_changes_are_refused(server: Server) -> None:
    send = server.folder("alice", "Send_SMS")
    mode = send.stat().st_mode
    with server.paramiko() as sftp:
        with pytest.raises(OSError):
            sftp.mkdir("Send_SMS/sub")
        with pytest.raises(OSError):
            sftp.rmdir("Errors")
        with pytest.raises(OSError):
            sftp.symlink("/etc/passwd", "Send_SMS/p.json")
        sftp.chmod("Send_SMS", 0)  # accepted (clients insist on it) but ignored
    assert send.stat().st_mode == mode
    assert not (send / "p.json").exists() and not (send / "sub").exists()


def test_lsetstat_changes_nothing_and_a_v6_client_meets_the_same_rules(server: Server) -> None:
    send = server.folder("alice", "Send_SMS")
    mode = send.stat().st_mode

    async def client() -> None:
        async with asyncssh.connect(
            "127.0.0.1", server.port, username="alice", password=PASSWORD, known_hosts=None, client_keys=None
        ) as conn:
            # asyncssh's server negotiates v3 by default; `open56` routes v5/v6 opens to `open` anyway.
            async with conn.start_sftp_client(sftp_version=6) as sftp:
                await sftp.chmod("Send_SMS", 0, follow_symlinks=False)  # lsetstat@openssh.com
                with pytest.raises(asyncssh.SFTPPermissionDenied):
                    await sftp.open("Send_SMS/v6.exe", "wb")
                with pytest.raises(asyncssh.SFTPPermissionDenied):
                    await sftp.open("Processed/v6.json", "wb")
                async with sftp.open("Send_SMS/v6.json", "wb") as remote:
                    await remote.write(b"v6")

    asyncio.run(client())
    assert send.stat().st_mode == mode
    assert not (send / "v6.exe").exists() and not (server.folder("alice", "Processed") / "v6.json").exists()
    assert server.gate.recorder.names("alice").count("v6.json") == 1


# ---- confinement --------------------------------------------------------------------------------


def test_dot_dot_and_absolute_paths_do_not_escape(server: Server) -> None:
    outside = server.gate.accounts_dir.parent / "escape.json"
    with server.paramiko() as sftp:
        for path in ("../escape.json", "/../../escape.json", "Send_SMS/../../escape.json", "../../../../etc/passwd"):
            with pytest.raises(OSError):
                upload(sftp, path, b"x")
            with pytest.raises(OSError):
                sftp.stat(path)
        with pytest.raises(OSError):
            sftp.stat("/etc/passwd")
        assert sftp.normalize("../../..") == "/"
    assert not outside.exists()


def test_a_planted_symlink_pointing_outside_is_not_followed(server: Server, tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text("top secret")
    target = tmp_path / "target.json"
    target.write_text("untouched")
    with server.paramiko("alice"):
        pass  # the login creates the folders
    os.symlink(secret, server.folder("alice", "Processed") / "leak.json")
    os.symlink(tmp_path, server.folder("alice", "Errors") / "dir")
    os.symlink(target, server.folder("alice", "Send_SMS") / "overwrite.json")
    with server.paramiko("alice") as sftp:
        with pytest.raises(OSError):
            sftp.open("Processed/leak.json").read()
        with pytest.raises(OSError):
            sftp.stat("Processed/leak.json")
        with pytest.raises(OSError):
            sftp.listdir("Errors/dir")
        with pytest.raises(OSError):
            sftp.open("Errors/dir/secret.json").read()
        with pytest.raises(OSError):
            upload(sftp, "Send_SMS/overwrite.json", b"pwned")
        with pytest.raises(OSError):
            sftp.rename("Send_SMS/overwrite.json", "Send_SMS/moved.json")
        assert "leak.json" not in sftp.listdir("Processed")
        assert "dir" not in sftp.listdir("Errors")
    assert target.read_text() == "untouched"
    assert secret.read_text() == "top secret"


def test_an_upload_into_validate_is_reported_with_its_folder_and_other_folders_stay_read_only(server: Server) -> None:
    with server.paramiko("alice") as sftp:
        with sftp.open("Validate/check.json", "wb") as remote:
            remote.write(b'{"Version": 7}')
        for folder in ("Processed", "Errors"):
            with pytest.raises(OSError):
                sftp.open(f"{folder}/check.json", "wb")
        with sftp.open("Send_SMS/sent.json", "wb") as remote:
            remote.write(b'{"Version": 7}')
        with pytest.raises(OSError):
            sftp.rename("Send_SMS/sent.json", "Validate/sent.json")
    server.gate.recorder.wait_for(lambda: len(server.gate.recorder.events("alice")) >= 2)
    assert [(e.folder, e.name) for e in server.gate.recorder.events("alice")][-2:] == [("Validate", "check.json"), ("Send_SMS", "sent.json")]
    assert (server.folder("alice", "Validate") / "check.json").read_bytes() == b'{"Version": 7}'
    assert not (server.root("alice") / ".incomplete-validate" / "check.json").exists()


def test_a_folder_replaced_by_a_symlink_is_not_reachable(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text("top secret")
    with running_server(tmp_path / "base") as server:
        server.root("bob").mkdir(parents=True)
        os.symlink(outside, server.root("bob") / "Errors")
        with server.paramiko("bob") as sftp:
            assert sorted(sftp.listdir("/")) == ["Processed", "Send_SMS", "Validate"]
            with pytest.raises(OSError):
                sftp.listdir("Errors")
            with pytest.raises(OSError):
                sftp.open("Errors/secret.json").read()


def test_another_accounts_folder_is_unreachable(server: Server) -> None:
    with server.paramiko("bob") as sftp:
        upload(sftp, "Send_SMS/bobs.json", b"bob")
    with server.paramiko("alice") as sftp:
        for path in ("../bob/Send_SMS/bobs.json", "/../bob/Send_SMS/bobs.json", "Send_SMS/../../bob/Send_SMS/bobs.json"):
            with pytest.raises(OSError):
                sftp.stat(path)
            with pytest.raises(OSError):
                sftp.remove(path)
        assert "bobs.json" not in sftp.listdir("Send_SMS")
    assert (server.folder("bob", "Send_SMS") / "bobs.json").read_bytes() == b"bob"
    assert "bobs.json" not in server.gate.recorder.names("alice")


# ---- pickup -------------------------------------------------------------------------------------


def test_an_upload_cut_off_mid_file_is_never_reported_and_stays(server: Server) -> None:
    recorder = server.gate.recorder
    closed_before = len(recorder.events("bob", "session_closed"))
    transport = paramiko.Transport(("127.0.0.1", server.port))
    transport.connect(username="bob", password=PASSWORD)
    sftp = paramiko.SFTPClient.from_transport(transport)
    assert sftp is not None
    remote = sftp.open("Send_SMS/cut.json", "wb")
    remote.write(b'{"Version": 7, "Contacts": [')
    remote.flush()
    sftp.stat("Send_SMS/cut.json")  # the write is on disk once this is answered
    transport.close()  # no CLOSE for the file: the connection just drops
    recorder.wait_for(lambda: len(recorder.events("bob", "session_closed")) > closed_before)
    assert "cut.json" not in recorder.names("bob")
    assert (server.folder("bob", "Send_SMS") / "cut.json").read_bytes() == b'{"Version": 7, "Contacts": ['
    assert (server.root("bob") / ".incomplete" / "cut.json").exists()  # the sweep leaves it alone


def test_a_complete_reupload_clears_the_cut_off_mark(server: Server) -> None:
    marker = server.root("alice") / ".incomplete" / "resumed.json"
    marker.parent.mkdir(exist_ok=True)
    marker.touch()
    with server.paramiko() as sftp:
        upload(sftp, "Send_SMS/resumed.json", b"{}")
    assert not marker.exists()
    assert server.gate.recorder.names("alice").count("resumed.json") == 1


def test_the_close_reply_waits_until_the_gate_took_the_upload(server: Server) -> None:
    release = server.hold("held.json")
    recorder = server.gate.recorder
    closed = threading.Event()
    failure: list[BaseException] = []

    def client() -> None:
        try:
            with server.paramiko() as sftp:
                remote = sftp.open("Send_SMS/held.json", "wb")
                remote.write(b"{}")
                remote.close()
                closed.set()
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        recorder.wait_for(lambda: "held.json" in recorder.names("alice"))
        assert not closed.wait(0.3), "CLOSE was answered before the gate took the upload"
    finally:
        release()
    assert closed.wait(WAIT)
    thread.join(WAIT)
    assert not failure


def test_the_session_is_closed_when_the_connection_ends(server: Server) -> None:
    recorder = server.gate.recorder
    before = len(recorder.events("bob", "session_closed"))
    with server.paramiko("bob") as sftp:
        sftp.listdir("/")
    recorder.wait_for(lambda: len(recorder.events("bob", "session_closed")) == before + 1)


def test_pickup_reaches_the_gate_within_milliseconds_of_the_close(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    close_started: dict[str, float] = {}
    original = sftp_server._SftpServer.close

    async def timed_close(self: sftp_server._SftpServer, file_obj: object) -> None:
        close_started[getattr(file_obj, "name", "")] = time.perf_counter()
        await original(self, file_obj)

    monkeypatch.setattr(sftp_server._SftpServer, "close", timed_close)
    names = [f"latency-{i}.json" for i in range(20)]
    with server.paramiko() as sftp:
        for name in names:
            upload(sftp, f"Send_SMS/{name}", b"{}")
    got = {e.name: e.at for e in server.gate.recorder.events("alice") if e.name in close_started}
    latencies = [got[name] - close_started[name] for name in names]
    assert statistics.median(latencies) < 0.05


# ---- lifecycle and the bridge -------------------------------------------------------------------


def test_stopping_the_server_closes_open_connections_and_keeps_the_host_key(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        assert server.host_key.stat().st_mode & 0o777 == 0o600
        key = server.host_key.read_bytes()
        transport = paramiko.Transport(("127.0.0.1", server.port))
        transport.connect(username="alice", password=PASSWORD)
        sftp = paramiko.SFTPClient.from_transport(transport)
        assert sftp is not None
        remote = sftp.open("Send_SMS/during-stop.json", "wb")
        remote.write(b"{")
        remote.flush()
        sftp.stat("Send_SMS/during-stop.json")
        server.stop()
        deadline = time.monotonic() + WAIT
        while transport.is_active() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not transport.is_active()
        transport.close()
        assert "during-stop.json" not in server.gate.recorder.names("alice")
        assert len(server.gate.recorder.events("alice", "session_closed")) == 1
    with running_server(tmp_path) as again:
        assert again.host_key.read_bytes() == key
        with again.paramiko() as sftp:
            assert "during-stop.json" in sftp.listdir("Send_SMS")


def test_bridge_returns_the_result_and_reraises_errors() -> None:
    async def answer(portal: bridge.AsyncioPortal) -> int:
        async def on_asyncio(x: int) -> int:
            await asyncio.sleep(0)
            return await portal.trio_portal.call(on_trio, x)

        async def on_trio(x: int) -> int:
            await trio.lowlevel.checkpoint()
            return x * 2

        return await portal.run(on_asyncio, 21)

    async def fail(portal: bridge.AsyncioPortal) -> None:
        async def on_asyncio() -> None:
            await portal.trio_portal.call(raise_on_trio)

        async def raise_on_trio() -> None:
            raise LookupError("from trio")

        await portal.run(on_asyncio)

    assert run_in_thread(answer) == 42
    with pytest.raises(LookupError, match="from trio"):
        run_in_thread(fail)


def test_cancelling_the_trio_caller_cancels_the_asyncio_task() -> None:
    async def main(portal: bridge.AsyncioPortal) -> bool:
        cancelled = asyncio.Event()

        async def on_asyncio() -> None:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        with trio.move_on_after(0.05):
            await portal.run(on_asyncio)
        return cancelled.is_set()  # set before `run` returned: the task was awaited

    assert run_in_thread(main) is True


def run_in_thread(main: Callable[[bridge.AsyncioPortal], Any]) -> Any:
    result: list[Any] = []
    errors: list[BaseException] = []

    def host() -> None:
        try:
            result.append(bridge.run(main))
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=host)
    thread.start()
    thread.join(WAIT)
    if errors:
        raise errors[0]
    return result[0]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_cancels_trio_cleanly(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, trio
        from actors import bridge

        async def main(portal):
            try:
                print("ready", flush=True)
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await trio.sleep(0.01)
                print("cleaned up", flush=True)

        try:
            bridge.run(main)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(3)
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[1]
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=WAIT)
    assert out.split() == ["cleaned", "up", "interrupted"]
    assert process.returncode == 3
