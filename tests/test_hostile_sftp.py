"""A hostile customer at the SFTP door, through the real service and real clients (paramiko,
OpenSSH `sftp`/`scp`): account names, file names, our own output names, connection caps, login
grace and idle time, open handles, password checks, lockouts and the file-size limit."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import paramiko
import pytest

from eventstore.domain import Account, login_record_id
from sftpsms.passwords import hash_password
from tests.service import Service, askpass_env, running_service

PASSWORD = "secret-pw"
GOOD = {"Version": 7, "Message_Template": "hello", "Contacts": [{"msisdn": "27831234567"}]}
ENV = {
    "SFTPSMS_LOGIN_LOCKOUT_AFTER": "3",
    "SFTPSMS_LOGIN_SLOWDOWN_AFTER": "2",
    "SFTPSMS_LOGIN_SLOWDOWN_BASE": "0.05",
    "SFTPSMS_MAX_CONNECTIONS_PER_ADDRESS": "10",
    "SFTPSMS_MAX_CONNECTIONS_PER_ACCOUNT": "3",
    "SFTPSMS_MAX_OPEN_FILES": "8",
    "SFTPSMS_MAX_FILE_BYTES": "100000",
}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("hostile") / "data", env=ENV) as running:
        for name in ("demo", "alice", "target", "crowd", "victim", "opener", "big"):
            running.add_account(name)
        yield running


@contextmanager
def transport(service: Service, username: str, password: str = PASSWORD, source: str = "127.0.0.1") -> Iterator[paramiko.Transport]:
    """A logged-in paramiko transport from the loopback address `source` (127.0.0.0/8 is ours)."""
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=10, source_address=(source, 0))
    connection = paramiko.Transport(sock)
    try:
        connection.connect(username=username, password=password)
        yield connection
    finally:
        connection.close()


@contextmanager
def sftp(service: Service, username: str, source: str = "127.0.0.1") -> Iterator[paramiko.SFTPClient]:
    with transport(service, username, source=source) as connection:
        client = paramiko.SFTPClient.from_transport(connection)
        assert client is not None
        yield client


def refusal(service: Service, username: str, password: str = PASSWORD, source: str = "127.0.0.1") -> str:
    """The reason a login is refused (auth banner or disconnect message); fails if it is accepted."""
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=10, source_address=(source, 0))
    connection = paramiko.Transport(sock)
    try:
        try:
            connection.connect(username=username, password=password)
        except (paramiko.SSHException, EOFError, OSError) as error:
            banner = connection.get_banner()
            return (banner.decode() if banner else "") + " " + str(error)
        raise AssertionError(f"{username} logged in from {source}")
    finally:
        connection.close()


def openssh(service: Service, username: str, commands: str, source: str) -> subprocess.CompletedProcess[str]:
    """OpenSSH `sftp -b` from `source`: it shows a server's disconnect reason, paramiko does not."""
    with askpass_env(PASSWORD) as env:
        return subprocess.run(
            ["sftp", "-o", "BatchMode=no", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "PubkeyAuthentication=no", "-o", f"BindAddress={source}", "-P", str(service.port), "-b", "-",
             f"{username}@127.0.0.1"],
            input=commands, capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip


def upload(client: paramiko.SFTPClient, name: str, data: bytes) -> None:
    with client.open(f"Send_SMS/{name}", "wb") as remote:
        remote.write(data)


def no_tracebacks(service: Service, since: int) -> None:
    """No traceback in the log past `since` (its length when the test began)."""
    written = service.log()[since:]
    assert "Traceback" not in written, written[-3000:]


# ---- account names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../accounts/demo", "../evil", "", "sp ace", "bad/name", ".hidden", "x" * 65, "ünï"])
def test_account_create_refuses_a_bad_name_with_a_message(service: Service, name: str) -> None:
    result = service.cli("account", "create", name, "--password", "x", "--created-at", "2023-01-01")
    assert result.returncode == 2
    assert "account name" in result.stderr
    assert not (service.data_dir / "evil").exists() and not (service.data_dir / "accounts" / "sp ace").exists()


def test_a_second_spelling_of_a_name_is_refused(service: Service) -> None:
    result = service.cli("account", "create", "DEMO", "--password", "x")
    assert result.returncode == 2 and "names ignore case" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["apikey", "create", "../evil", "--channel", "sftp"],
        ["apikey", "list", "../evil"],
        ["sshkey", "add", "../evil", "/dev/null"],
        ["credits", "add", "../evil", "5"],
        ["credits", "transfer", "demo", "../evil", "5"],
        ["optout", "add", "../evil", "27831234567"],
        ["webhook", "add", "../evil", "http://127.0.0.1:9/"],
        ["account", "rate", "../evil", "5"],
        ["account", "show", "sp ace"],
        ["account", "create", "child", "--parent", "../demo", "--password", "x"],
        ["senderid", "allow", "bad/name", "SHOP"],
        ["files", "--account", "../demo"],
    ],
)
def test_every_command_that_takes_a_name_checks_it(service: Service, command: list[str]) -> None:
    result = service.cli(*command)
    assert result.returncode == 2 and "account name" in result.stderr, result.stderr


def test_a_bad_name_left_in_an_old_store_cannot_reach_another_account(service: Service) -> None:
    with sftp(service, "demo") as client:
        upload(client, "mine.json", json.dumps(GOOD).encode())
    assert service.wait_report("demo", "mine.json")[0] == "Processed"
    store = service.store()
    try:  # written as an old version would have: no name check
        for name in ("../accounts/demo", "../../outside"):
            store.save(Account.create(
                username=name, password_hash=hash_password(PASSWORD), email=None, country="ZA",
                created_at="2023-01-01T00:00:00+00:00", parent=None,
            ))  # fmt: skip
    finally:
        store.close()
    for name in ("../accounts/demo", "../../outside"):
        assert "invalid username or password" in refusal(service, name)
    assert not (service.data_dir.parent / "outside").exists()
    assert not (service.data_dir / "outside").exists()
    assert service.service_alive()


# ---- file names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a" * 245 + ".json",  # 250 bytes: fits the filesystem, not with ".report.json" after it
        "b" * 300 + ".json",
        "é" * 120 + ".json",  # 240 bytes of UTF-8
        "two\nlines.json",
        "tab\there.json",
        "bell\x07.json",
        "nul\x00.json",
        "back\\slash.json",
    ],
)
def test_a_file_name_the_service_cannot_store_is_refused_at_open(service: Service, name: str) -> None:
    since = len(service.log())
    with sftp(service, "alice") as client:
        with pytest.raises(OSError):
            client.open(f"Send_SMS/{name}", "wb").close()
        after = f"after{abs(hash(name)) % 10**8}.json"
        upload(client, after, json.dumps(GOOD).encode())  # the session goes on
    assert service.wait_report("alice", after)[0] == "Processed"
    assert [p.name for p in service.folder("alice", "Send_SMS").iterdir()] == []
    no_tracebacks(service, since)


def test_the_refusal_says_why(service: Service) -> None:
    with sftp(service, "alice") as client:
        with pytest.raises(OSError, match="at most 200 bytes"):
            client.open("Send_SMS/" + "a" * 245 + ".json", "wb")
        with pytest.raises(OSError, match="control characters"):
            client.open("Send_SMS/two\nlines.json", "wb")
        client.open("Send_SMS/ok.part", "wb").close()
        with pytest.raises(OSError, match="control characters"):
            client.rename("Send_SMS/ok.part", "Send_SMS/two\nlines.json")
        client.remove("Send_SMS/ok.part")


def test_a_newline_in_a_file_name_cannot_forge_a_log_line(service: Service, tmp_path: Path) -> None:
    forged = "FORGED INFO actors.session login account=demo peer=10.9.9.9"
    archive = tmp_path / "names.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr(f"x\n{forged}.json", json.dumps(GOOD))
    with sftp(service, "alice") as client:
        upload(client, "names.zip", archive.read_bytes())
    service.wait_report("alice", "names.zip")
    time.sleep(0.5)
    assert not any(line.startswith("FORGED") for line in service.log().splitlines())


# ---- our own output names ------------------------------------------------------------------------


def test_a_filed_report_cannot_be_overwritten_by_an_upload(service: Service) -> None:
    with sftp(service, "victim") as client:
        upload(client, "victim.json", b"not json")
    folder, report = service.wait_report("victim", "victim.json")
    assert folder == "Errors"
    filed = service.folder("victim", "Errors") / "victim.json.report.json"
    before = filed.read_bytes()
    with sftp(service, "victim") as client:
        for name in ("victim.json.report.json", "VICTIM.JSON.REPORT.JSON", "x.delivery.csv", "victim.json.report.json.part"):
            with pytest.raises(OSError, match="the service's own"):
                client.open(f"Send_SMS/{name}", "wb")
        client.open("Send_SMS/up.part", "wb").close()
        with pytest.raises(OSError, match="the service's own"):
            client.rename("Send_SMS/up.part", "Send_SMS/victim.json.report.json")
    time.sleep(1.5)  # three sweeps
    assert filed.read_bytes() == before


def test_a_second_failing_upload_of_a_name_does_not_replace_the_first_ones_outputs(service: Service) -> None:
    with sftp(service, "victim") as client:
        upload(client, "again.json", b"first, not json")
    assert service.wait_report("victim", "again.json")[0] == "Errors"
    errors = service.folder("victim", "Errors")
    first_report = (errors / "again.json.report.json").read_bytes()
    with sftp(service, "victim") as client:
        upload(client, "again.json", b"second, not json either")
    deadline = time.monotonic() + 30
    while len([p for p in errors.iterdir() if p.name.startswith("again.")]) < 4:
        assert time.monotonic() < deadline, sorted(p.name for p in errors.iterdir())
        time.sleep(0.05)
    assert (errors / "again.json").read_bytes() == b"first, not json"
    assert (errors / "again.json.report.json").read_bytes() == first_report
    second = [p for p in errors.iterdir() if p.name.startswith("again.") and p.name.endswith(".report.json")]
    renamed = next(json.loads(p.read_text()) for p in second if p.name != "again.json.report.json")
    assert renamed["file"] == "again.json" and renamed["filed_as"] != "again.json"
    assert (errors / renamed["filed_as"]).read_bytes() == b"second, not json either"


def test_a_zip_entry_named_like_a_report_does_not_replace_it(service: Service, tmp_path: Path) -> None:
    with sftp(service, "victim") as client:
        upload(client, "target.json", b"not json")
    assert service.wait_report("victim", "target.json")[0] == "Errors"
    report = service.folder("victim", "Errors") / "target.json.report.json"
    before = report.read_bytes()
    archive = tmp_path / "sneaky.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("target.json.report.json", b'{"forged": true')
    with sftp(service, "victim") as client:
        upload(client, "sneaky.zip", archive.read_bytes())
    service.wait_report("victim", "sneaky.zip")
    time.sleep(0.5)
    assert report.read_bytes() == before


# ---- scp -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [[], ["-s"]])
def test_scp_in_sftp_mode_succeeds_and_the_file_is_processed(service: Service, tmp_path: Path, mode: list[str]) -> None:
    name = f"scp{len(mode)}.json"
    local = tmp_path / name
    local.write_text(json.dumps(GOOD))
    with askpass_env(PASSWORD) as env:
        result = subprocess.run(
            ["scp", *mode, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=no",
             "-o", "PubkeyAuthentication=no", "-P", str(service.port), str(local), f"alice@127.0.0.1:Send_SMS/{name}"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert service.wait_report("alice", name)[0] == "Processed"


# ---- connections ---------------------------------------------------------------------------------


def test_connections_over_the_per_address_cap_are_refused_and_others_still_get_in(service: Service) -> None:
    sockets = [socket.create_connection(("127.0.0.1", service.port), source_address=("127.0.0.20", 0)) for _ in range(10)]
    try:
        for sock in sockets:
            assert sock.recv(100).startswith(b"SSH-2.0-")
        refused = openssh(service, "alice", "ls\n", source="127.0.0.20")
        assert refused.returncode != 0 and "too many connections from your address" in refused.stderr
        refusal(service, "alice", source="127.0.0.20")  # paramiko: refused too
        with sftp(service, "alice", source="127.0.0.21") as client:
            assert sorted(client.listdir("/")) == ["Errors", "Processed", "Send_SMS", "Validate"]
    finally:
        for sock in sockets:
            sock.close()


def test_logins_over_the_per_account_cap_are_refused_with_a_message(service: Service) -> None:
    with transport(service, "crowd", source="127.0.0.30"), transport(service, "crowd", source="127.0.0.31"):
        with transport(service, "crowd", source="127.0.0.32"):
            reason = refusal(service, "crowd", source="127.0.0.33")
            assert "too many connections for account crowd" in reason
    with transport(service, "crowd", source="127.0.0.33"):
        pass  # room again once they closed


def test_open_handles_per_connection_are_capped_and_the_service_lives(service: Service) -> None:
    since = len(service.log())
    with sftp(service, "opener") as client:
        upload(client, "keep.part", b"x")
        handles = [client.open("Send_SMS/keep.part", "rb") for _ in range(8)]
        with pytest.raises(OSError, match="too many open files"):
            client.open("Send_SMS/keep.part", "rb")
        with pytest.raises(OSError, match="too many open files"):
            client.open("Send_SMS/new.json", "wb")
        handles.pop().close()
        client.open("Send_SMS/keep.part", "rb").close()
        for handle in handles:
            handle.close()
        client.remove("Send_SMS/keep.part")
    assert service.service_alive()
    no_tracebacks(service, since)


# ---- failed logins -------------------------------------------------------------------------------


def test_an_attackers_failures_do_not_lock_the_user_out_from_another_address(service: Service) -> None:
    for _ in range(5):
        refusal(service, "target", "guess", source="127.0.0.40")
    assert "too many failed logins" in refusal(service, "target", source="127.0.0.40")  # the attacker's pair
    with sftp(service, "target", source="127.0.0.41") as client:  # the user, elsewhere
        assert sorted(client.listdir("/")) == ["Errors", "Processed", "Send_SMS", "Validate"]


def test_guesses_sent_in_parallel_are_checked_no_more_than_the_lockout_allows(service: Service) -> None:
    service.add_account("parallel")
    reasons: list[str] = []

    def guess(n: int) -> None:
        reasons.append(refusal(service, "parallel", f"guess-{n}", source="127.0.0.50"))

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    store = service.store()
    try:
        events = [type(e).__name__ for e in store.events.get(login_record_id("parallel"))]
    finally:
        store.close()
    assert events.count("LoginFailed") <= 3, events
    assert sum("too many failed logins" in reason for reason in reasons) >= 7
    with sftp(service, "parallel", source="127.0.0.51") as client:
        assert client.listdir("/")


# ---- the file-size limit while writing -----------------------------------------------------------


def test_a_write_past_the_size_limit_is_refused_and_the_file_never_processed(service: Service) -> None:
    since = len(service.log())
    body = json.dumps(GOOD).encode()
    with sftp(service, "big") as client:
        remote = client.open("Send_SMS/huge.json", "wb")
        remote.write(body)
        with pytest.raises(OSError, match="too big"):
            remote.write(b" " * 100_001)
            remote.flush()
        remote.close()
        sparse = client.open("Send_SMS/sparse.json", "wb")
        sparse.seek(10**12)
        with pytest.raises(OSError, match="too big"):
            sparse.write(b"x")
            sparse.flush()
        sparse.close()
        with pytest.raises(OSError, match="too big"):
            client.open("Send_SMS/trunc.json", "wb").truncate(10**9)
        upload(client, "fits.json", body)
    assert service.wait_report("big", "fits.json")[0] == "Processed"
    time.sleep(1.5)  # three sweeps: none takes the refused uploads
    for name in ("huge.json", "sparse.json"):
        assert not (service.folder("big", "Processed") / f"{name}.report.json").exists()
        assert not (service.folder("big", "Errors") / f"{name}.report.json").exists()
    assert (service.folder("big", "Send_SMS") / "sparse.json").stat().st_size < 1000
    no_tracebacks(service, since)


# ---- time limits and password checks (services of their own) ------------------------------------


def test_a_connection_that_never_logs_in_is_closed_after_the_grace_time(tmp_path: Path) -> None:
    env = {"SFTPSMS_LOGIN_GRACE_SECONDS": "1", "SFTPSMS_IDLE_TIMEOUT": "1.5"}
    with running_service(tmp_path / "data", env=env) as running:
        running.add_account("idler")
        sock = socket.create_connection(("127.0.0.1", running.port), timeout=10)
        started = time.monotonic()
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        assert data.startswith(b"SSH-2.0-") and time.monotonic() - started < 5
        sock.close()
        with transport(running, "idler") as idle:
            deadline = time.monotonic() + 10
            while idle.is_active():
                assert time.monotonic() < deadline, "the idle connection was not closed"
                time.sleep(0.05)
            assert time.monotonic() - started >= 1.5


def test_password_checks_beyond_the_queue_are_refused_as_busy(tmp_path: Path) -> None:
    env = {"SFTPSMS_PASSWORD_CHECKS": "1", "SFTPSMS_PASSWORD_CHECK_QUEUE": "1", "SFTPSMS_MAX_CONNECTIONS_PER_ADDRESS": "64"}
    with running_service(tmp_path / "data", env=env) as running:
        running.add_account("busy")
        reasons: list[str] = []

        def attempt(n: int) -> None:
            reasons.append(refusal(running, f"user{n}", "wrong"))

        threads = [threading.Thread(target=attempt, args=(n,)) for n in range(24)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert any("the server is busy" in reason for reason in reasons), reasons
        with transport(running, "busy"):
            pass  # and a login afterwards is checked as usual
