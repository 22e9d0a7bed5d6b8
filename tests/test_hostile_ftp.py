"""The FTP door against hostile or broken clients, with real clients (ftplib, lftp, curl): uploads
cut off every way FTP can cut them off, oversized uploads and unstorable names, idle connections
from one address, and wrong passwords from one client (PRODUCT.md §2, §7)."""

from __future__ import annotations

import ftplib
import io
import json
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service import Service, running_service
from tests.test_ftp import ftp_port

MAX_FILE_BYTES = 2_000_000
GRACE = 5  # seconds a connection may stay without logging in
IDLE = 7  # seconds a logged-in connection may stay without a command
PER_ACCOUNT = 4  # connections at once per account, both doors together
REFUSED_ADDRESS = b"from your address"  # the doors' shared per-address refusal
PAD = 1_500_000  # JSON allows whitespace: a big file with one contact


def big_body(pad: int = PAD) -> bytes:
    head = json.dumps({"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": "27831234567"}]})
    return (head[:-1] + " " * pad + "}").encode()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    env = {
        "SFTPSMS_MAX_FILE_BYTES": str(MAX_FILE_BYTES),
        "SFTPSMS_LOGIN_GRACE_SECONDS": str(GRACE),
        "SFTPSMS_IDLE_TIMEOUT": str(IDLE),
        "SFTPSMS_MAX_CONNECTIONS_PER_ACCOUNT": str(PER_ACCOUNT),
        # The second failure of an address or username waits 3 s: long enough to see who waits.
        "SFTPSMS_LOGIN_SLOWDOWN_AFTER": "1",
        "SFTPSMS_LOGIN_SLOWDOWN_BASE": "3",
    }
    with running_service(tmp_path_factory.mktemp("hostile-ftp") / "data", "--ftp-port", "0", env=env) as running:
        for name in ("legacy", "target", "cutter", "crowd"):
            running.add_account(name)
        yield running


def connect(service: Service, user: str = "cutter", password: str = "secret-pw", source: str = "127.0.0.1") -> ftplib.FTP:
    client = ftplib.FTP()
    client.connect("127.0.0.1", ftp_port(service), timeout=20, source_address=(source, 0))
    client.login(user, password)
    return client


def send_path(service: Service, name: str, user: str = "cutter") -> Path:
    return service.folder(user, "Send_SMS") / name


def wait_for(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def assert_kept_unprocessed(service: Service, name: str, user: str = "cutter", watch: float = 2.5) -> int:
    """The cut-off file stays in Send_SMS, unprocessed, across a few sweeps (0.5 s in tests);
    returns its size."""
    deadline = time.monotonic() + watch
    while time.monotonic() < deadline:
        for folder in ("Processed", "Errors"):
            report = service.folder(user, folder) / f"{name}.report.json"
            assert not report.exists(), f"a cut-off upload was processed: {report.read_text()}"
        time.sleep(0.1)
    path = send_path(service, name, user)
    assert path.exists(), "the cut-off upload should stay in Send_SMS for a resume"
    return path.stat().st_size


def resume_and_expect_processed_once(service: Service, name: str, body: bytes, offset: int) -> None:
    with connect(service) as client:
        client.storbinary(f"STOR Send_SMS/{name}", io.BytesIO(body[offset:]), rest=offset)
    folder, report = service.wait_report("cutter", name)
    assert folder == "Processed", report
    assert report["contacts"] == 1 and report["messages_queued"] == 1
    time.sleep(1.0)  # two sweeps: nothing picks the same upload up again
    files = service.cli("files", "--account", "cutter", "--json")
    received = [row for row in json.loads(files.stdout) if row["name"] == name]
    assert len(received) == 1, files.stdout


# ---- uploads cut off ----------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("lftp") is None, reason="lftp is not installed")
def test_killing_lftp_mid_put_keeps_the_upload_for_a_resume(service: Service, tmp_path: Path) -> None:
    body = big_body()
    local = tmp_path / "killed.json"
    local.write_bytes(body)
    script = (
        "set net:limit-rate 300000; set net:max-retries 1; set ftp:passive-mode on; "
        f"open -u cutter,secret-pw -p {ftp_port(service)} 127.0.0.1; cd Send_SMS; put {local}"
    )
    lftp = subprocess.Popen(["lftp", "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: send_path(service, "killed.json").exists() and send_path(service, "killed.json").stat().st_size > 100_000)
    finally:
        lftp.send_signal(signal.SIGKILL)
        lftp.wait()
    size = assert_kept_unprocessed(service, "killed.json")
    assert 0 < size < len(body)
    resume_and_expect_processed_once(service, "killed.json", body, size)


def test_curl_cut_off_by_max_time_keeps_the_upload_and_resumes_with_c(service: Service, tmp_path: Path) -> None:
    body = big_body()
    local = tmp_path / "curled.json"
    local.write_bytes(body)
    url = f"ftp://127.0.0.1:{ftp_port(service)}/Send_SMS/"
    common = ["curl", "-sS", "--user", "cutter:secret-pw", "--limit-rate", "300k", "-T", str(local)]
    cut = subprocess.run([*common, "--max-time", "2", url], capture_output=True, text=True, timeout=30)
    assert cut.returncode == 28, cut.stderr  # curl: operation timed out
    size = assert_kept_unprocessed(service, "curled.json")
    assert 0 < size < len(body)
    resumed = subprocess.run(["curl", "-sS", "--user", "cutter:secret-pw", "-C", "-", "-T", str(local), url],
                             capture_output=True, text=True, timeout=30)
    assert resumed.returncode == 0, resumed.stderr
    folder, report = service.wait_report("cutter", "curled.json")
    assert folder == "Processed" and report["messages_queued"] == 1, report


def _start_upload(service: Service, name: str, part: bytes) -> tuple[ftplib.FTP, socket.socket]:
    client = connect(service)
    client.voidcmd("TYPE I")
    data = client.transfercmd(f"STOR Send_SMS/{name}")
    data.sendall(part)
    wait_for(lambda: send_path(service, name).exists() and send_path(service, name).stat().st_size == len(part))
    return client, data


def drop(client: ftplib.FTP) -> None:
    """Close the control connection for real (ftplib's reader file keeps the socket open)."""
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()


def test_abor_during_a_transfer_keeps_the_upload(service: Service) -> None:
    body = big_body()
    client, data = _start_upload(service, "aborted.json", body[:300_000])
    # ftplib's abort(): ABOR sent as urgent data while the data connection is still open.
    replies = [client.abort(), client.getline()]
    data.close()
    assert replies[0].startswith("426") and replies[1].startswith("226"), replies
    client.quit()
    assert assert_kept_unprocessed(service, "aborted.json") == 300_000
    resume_and_expect_processed_once(service, "aborted.json", body, 300_000)


@pytest.mark.skipif(shutil.which("lftp") is None, reason="lftp is not installed")
def test_interrupting_lftp_mid_put_keeps_the_upload_and_put_c_resumes_it(service: Service, tmp_path: Path) -> None:
    body = big_body()
    local = tmp_path / "interrupted.json"
    local.write_bytes(body)
    opening = f"set net:max-retries 1; open -u cutter,secret-pw -p {ftp_port(service)} 127.0.0.1; cd Send_SMS"
    lftp = subprocess.Popen(["lftp", "-c", f"set net:limit-rate 300000; {opening}; put {local}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: send_path(service, "interrupted.json").exists()
                 and send_path(service, "interrupted.json").stat().st_size > 100_000)
        lftp.send_signal(signal.SIGINT)  # Ctrl-C: lftp aborts the transfer and exits
        lftp.wait(timeout=15)
    finally:
        if lftp.poll() is None:
            lftp.kill()
    size = assert_kept_unprocessed(service, "interrupted.json")
    assert 0 < size < len(body)
    resumed = subprocess.run(["lftp", "-c", f"{opening}; put -c {local}"], capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    folder, report = service.wait_report("cutter", "interrupted.json")
    assert folder == "Processed" and report["messages_queued"] == 1, report


def test_abor_right_after_the_data_connection_closed_keeps_the_upload(service: Service) -> None:
    body = big_body()
    client, data = _start_upload(service, "late-abor.json", body[:200_000])
    data.close()  # what a client interrupted mid-file does: close the data, then ABOR
    client.sock.sendall(b"ABOR\r\n")
    replies = [client.getline(), client.getline()]
    assert replies[0].startswith("426") and replies[1].startswith("226"), replies
    client.quit()
    assert assert_kept_unprocessed(service, "late-abor.json") == 200_000


def test_control_connection_lost_mid_transfer_keeps_the_upload(service: Service) -> None:
    client, data = _start_upload(service, "lost.json", big_body()[:250_000])
    drop(client)
    data.close()
    assert assert_kept_unprocessed(service, "lost.json") == 250_000


def test_a_reset_data_connection_keeps_the_upload(service: Service) -> None:
    client, data = _start_upload(service, "reset.json", big_body()[:250_000])
    data.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    data.close()  # RST instead of FIN: the transfer did not end, it broke
    reply = client.getline()
    assert reply.startswith("426") and "reset" in reply, reply
    client.quit()
    assert assert_kept_unprocessed(service, "reset.json") == 250_000
    assert "Traceback" not in service.log()


def test_data_and_control_closed_together_like_a_killed_client_keeps_the_upload(service: Service) -> None:
    client, data = _start_upload(service, "killed-at-once.json", big_body()[:250_000])
    data.close()
    drop(client)
    assert assert_kept_unprocessed(service, "killed-at-once.json") == 250_000


def test_a_complete_upload_is_still_answered_and_processed(service: Service) -> None:
    body = big_body(10_000)
    with connect(service) as client:
        started = time.monotonic()
        reply = client.storbinary("STOR Send_SMS/whole.json", io.BytesIO(body))
        elapsed = time.monotonic() - started
    assert reply.startswith("226"), reply
    assert elapsed < 3.0
    folder, report = service.wait_report("cutter", "whole.json")
    assert folder == "Processed" and report["messages_queued"] == 1


def test_quit_sent_right_after_the_data_without_waiting_is_a_whole_upload(service: Service) -> None:
    body = big_body(20_000)
    client = connect(service)
    client.voidcmd("TYPE I")
    data = client.transfercmd("STOR Send_SMS/hasty.json")
    data.sendall(body)
    data.close()
    client.sock.sendall(b"QUIT\r\n")  # no wait for the 226: the client is alive and done
    replies = [client.getline(), client.getline()]
    client.close()
    assert replies[0].startswith("226") and replies[1].startswith("221"), replies
    folder, report = service.wait_report("cutter", "hasty.json")
    assert folder == "Processed" and report["messages_queued"] == 1


# ---- file size and names ------------------------------------------------------------------------


def test_an_upload_past_max_file_bytes_is_refused_while_written_and_never_processed(service: Service) -> None:
    body = big_body(MAX_FILE_BYTES + 500_000)
    with connect(service) as client:
        try:
            client.storbinary("STOR Send_SMS/huge.json", io.BytesIO(body))
        except ftplib.Error as error:
            reply = str(error)
        except OSError:  # the server closed the data connection while we were still sending
            reply = client.getline()
        else:
            raise AssertionError("an upload past max_file_bytes was accepted")
        assert reply.startswith("552") and str(MAX_FILE_BYTES) in reply, reply
        client.voidcmd("NOOP")  # the connection still serves
        with pytest.raises(ftplib.Error) as resumed:
            client.storbinary("STOR Send_SMS/huge2.json", io.BytesIO(b"x"), rest=MAX_FILE_BYTES + 1)
        assert str(resumed.value).startswith(("552", "554")), resumed.value
    assert not send_path(service, "huge.json").exists()
    time.sleep(1.0)
    for folder in ("Processed", "Errors"):
        assert not (service.folder("cutter", folder) / "huge.json.report.json").exists()


@pytest.mark.parametrize(
    ("name", "code", "says"),
    [
        ("a" * 251 + ".json", "553", "at most"),
        ("é" * 130 + ".json", "553", "at most"),  # 265 bytes in UTF-8
        ("nul\x00byte.json", "501", "control characters"),
        ("tab\tname.json", "501", "control characters"),
        ("bell\x07.json", "501", "control characters"),
        ("line\u2028separator.json", "501", "control characters"),
        ("back\\slash.json", "553", "cannot contain '/'"),
        ("victim.json.report.json", "553", "service's own"),
        ("victim.json.delivery.csv", "553", "service's own"),
    ],
)
def test_names_that_cannot_be_stored_or_are_outputs_are_refused_clearly(service: Service, name: str, code: str, says: str) -> None:
    with connect(service) as client:
        with pytest.raises(ftplib.Error) as refused:
            client.storbinary(f"STOR Send_SMS/{name}", io.BytesIO(b"{}"))
        assert str(refused.value).startswith(code) and says in str(refused.value).lower(), refused.value
        client.storbinary("STOR Send_SMS/rename-me.json.part", io.BytesIO(b"{}"))
        client.sendcmd("RNFR Send_SMS/rename-me.json.part")
        with pytest.raises(ftplib.Error) as renamed:
            client.sendcmd(f"RNTO Send_SMS/{name}")
        assert str(renamed.value).startswith(code), renamed.value
        client.delete("Send_SMS/rename-me.json.part")
        client.voidcmd("NOOP")  # never an internal error: the connection still serves
    assert service.service_alive()
    assert "Traceback" not in service.log()


def test_stou_is_refused(service: Service) -> None:
    with connect(service) as client:
        client.cwd("Send_SMS")
        with pytest.raises(ftplib.Error) as refused:
            client.storbinary("STOU", io.BytesIO(BODY_SMALL))
        assert str(refused.value).startswith("502")


BODY_SMALL = json.dumps({"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": "27831234567"}]}).encode()


# ---- connections ----------------------------------------------------------------------------------


def test_idle_connections_from_one_address_do_not_shut_out_another_address(service: Service) -> None:
    port = ftp_port(service)
    held: list[socket.socket] = []
    try:
        refused = 0
        for _ in range(600):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0))
            held.append(sock)
            greeting = sock.recv(200)
            refused += greeting.startswith(b"421") and REFUSED_ADDRESS in greeting
        # The first connections of that address are served; the rest are refused with a reason.
        assert refused >= 500, refused
        with connect(service, "legacy") as client:  # another address logs in and uploads
            client.storbinary("STOR Send_SMS/not-shut-out.json", io.BytesIO(BODY_SMALL))
    finally:
        for sock in held:
            sock.close()
    assert service.wait_report("legacy", "not-shut-out.json")[0] == "Processed"


def test_connections_per_account_are_capped_across_both_doors(service: Service) -> None:
    with service.paramiko("crowd") as sftp:
        sftp.listdir("/")
        clients = [connect(service, "crowd") for _ in range(PER_ACCOUNT - 1)]
        try:
            with pytest.raises(ftplib.Error) as refused:
                connect(service, "crowd")
            assert str(refused.value).startswith("421") and "account crowd" in str(refused.value), refused.value
        finally:
            for client in clients:
                client.quit()
    with connect(service, "crowd") as client:  # closed connections no longer count
        client.voidcmd("NOOP")


def test_a_connection_that_never_logs_in_is_closed_after_the_login_grace(service: Service) -> None:
    client = ftplib.FTP()
    client.connect("127.0.0.1", ftp_port(service), timeout=IDLE + 10)
    started = time.monotonic()
    with pytest.raises((ftplib.Error, EOFError, OSError)) as closed:
        while time.monotonic() - started < IDLE + 5:
            client.voidcmd("NOOP")  # busy, so the idle timeout never fires, but never logged in
            time.sleep(0.3)
    assert "log in within" in str(closed.value).lower(), closed.value
    assert GRACE - 1 < time.monotonic() - started < GRACE + 2
    client.close()


def test_an_idle_logged_in_connection_is_closed_after_the_idle_timeout(service: Service) -> None:
    client = connect(service)
    client.sock.settimeout(IDLE + 10)
    started = time.monotonic()
    with pytest.raises(ftplib.Error) as closed:
        client.getresp()
    assert str(closed.value).startswith("421"), closed.value
    assert IDLE - 1 < time.monotonic() - started < IDLE + 3


def test_wrong_passwords_from_one_client_do_not_delay_another_users_login(service: Service) -> None:
    with pytest.raises(ftplib.error_perm):
        connect(service, "target", "wrong-1", source="127.0.0.2")
    attacker = ftplib.FTP()
    attacker.connect("127.0.0.1", ftp_port(service), timeout=30, source_address=("127.0.0.2", 0))
    attacker.sendcmd("USER target")
    attacker.putcmd("PASS wrong-2")  # this failure's answer is slowed down by 3 s
    started = time.monotonic()
    with connect(service, "legacy") as client:
        client.voidcmd("NOOP")
    elapsed = time.monotonic() - started
    slowed = attacker.getline()
    attacker_waited = time.monotonic() - started
    attacker.close()
    assert slowed.startswith("530"), slowed
    assert elapsed < 2.5, f"another user's login took {elapsed:.1f} s while one client's failure was slowed down"
    assert attacker_waited > 2.5, "the failing client itself is slowed down"


def test_the_service_survived_it_all(service: Service) -> None:
    assert service.service_alive()
    with connect(service, "legacy") as client:
        client.storbinary("STOR Send_SMS/after.json", io.BytesIO(BODY_SMALL))
    assert service.wait_report("legacy", "after.json")[0] == "Processed"
    assert "Traceback" not in service.log()  # nothing above was an internal error of the door
