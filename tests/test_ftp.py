"""The FTP door: the same accounts, channel rules, folders and pickup, with ftplib and curl."""

from __future__ import annotations

import ftplib
import io
import json
import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.service import Service, running_service

BODY = json.dumps({"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": "27831234567"}]}).encode()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("ftp") / "data", "--ftp-port", "0") as running:
        running.add_account("legacy")
        running.add_account("modern", created_at=datetime.now(UTC))
        yield running


def ftp_port(service: Service) -> int:
    match = re.search(r"ftp listening on [\d.]+:(\d+)", service.log())
    assert match, service.log()
    return int(match.group(1))


def connect(service: Service, user: str, password: str = "secret-pw") -> ftplib.FTP:
    client = ftplib.FTP()
    client.connect("127.0.0.1", ftp_port(service), timeout=10)
    client.login(user, password)
    return client


def test_ftp_login_lists_the_four_folders_and_an_upload_is_processed(service: Service) -> None:
    with connect(service, "legacy") as client:
        assert sorted(client.nlst()) == ["Errors", "Processed", "Send_SMS", "Validate"]
        client.storbinary("STOR Send_SMS/ftp.json", io.BytesIO(BODY))
    folder, report = service.wait_report("legacy", "ftp.json")
    assert folder == "Processed" and report["messages_queued"] == 1


def test_refused_extension_and_writes_outside_send_sms(service: Service) -> None:
    with connect(service, "legacy") as client:
        with pytest.raises(ftplib.error_perm):
            client.storbinary("STOR Send_SMS/run.exe", io.BytesIO(b"x"))
        with pytest.raises(ftplib.error_perm):
            client.storbinary("STOR Processed/x.json", io.BytesIO(BODY))
        with pytest.raises(ftplib.error_perm):
            client.mkd("Send_SMS/sub")
        with pytest.raises(ftplib.error_perm):
            client.cwd("/../../etc")
            client.nlst()
            raise ftplib.error_perm("listed outside")


def test_a_new_account_needs_an_ftp_key_and_is_told_so(service: Service) -> None:
    with pytest.raises(ftplib.error_perm) as refused:
        connect(service, "modern")
    assert "ftp channel is not enabled" in str(refused.value).lower()
    result = service.cli("apikey", "create", "modern", "--channel", "ftp", "--json")
    key = json.loads(result.stdout)
    with connect(service, "modern") as client:
        client.storbinary("STOR Send_SMS/modern.json", io.BytesIO(BODY))
    with connect(service, key["key_id"], key["secret"]) as client:
        assert sorted(client.nlst()) == ["Errors", "Processed", "Send_SMS", "Validate"]
    assert service.wait_report("modern", "modern.json")[0] == "Processed"


def test_temporary_name_is_processed_after_rename(service: Service) -> None:
    with connect(service, "legacy") as client:
        client.storbinary("STOR Send_SMS/renamed.json.part", io.BytesIO(BODY))
        client.rename("Send_SMS/renamed.json.part", "Send_SMS/renamed.json")
    assert service.wait_report("legacy", "renamed.json")[0] == "Processed"


def test_curl_uploads_over_ftp(service: Service, tmp_path: Path) -> None:
    local = tmp_path / "curl.json"
    local.write_bytes(BODY)
    result = subprocess.run(
        ["curl", "-sS", "--user", "legacy:secret-pw", "-T", str(local), f"ftp://127.0.0.1:{ftp_port(service)}/Send_SMS/"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert service.wait_report("legacy", "curl.json")[0] == "Processed"


def test_with_a_certificate_the_door_requires_explicit_ftps(tmp_path_factory: pytest.TempPathFactory) -> None:
    import ssl

    keys = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(keys / "key.pem"), "-out", str(keys / "cert.pem")],
        check=True, capture_output=True,
    )
    extra = ("--ftp-port", "0", "--ftp-cert", str(keys / "cert.pem"), "--ftp-key", str(keys / "key.pem"))
    with running_service(tmp_path_factory.mktemp("ftps") / "data", *extra) as secure:
        secure.add_account("legacy")
        with pytest.raises(ftplib.error_perm):
            connect(secure, "legacy")  # clear-text login refused
        context = ssl.create_default_context(cafile=str(keys / "cert.pem"))
        context.check_hostname = False
        client = ftplib.FTP_TLS(context=context)
        client.connect("127.0.0.1", ftp_port(secure), timeout=10)
        client.login("legacy", "secret-pw")
        client.prot_p()
        client.storbinary("STOR Send_SMS/tls.json", io.BytesIO(BODY))
        client.quit()
        assert secure.wait_report("legacy", "tls.json")[0] == "Processed"


def test_revoking_the_ftp_key_closes_an_open_ftp_session(service: Service) -> None:
    import time

    service.add_account("ftpkeyed", created_at=datetime.now(UTC))
    key = json.loads(service.cli("apikey", "create", "ftpkeyed", "--channel", "ftp", "--json").stdout)
    client = connect(service, key["key_id"], key["secret"])
    client.voidcmd("NOOP")
    assert service.cli("apikey", "revoke", key["key_id"]).returncode == 0
    deadline = time.monotonic() + 10
    with pytest.raises((EOFError, OSError, ftplib.Error)):
        while time.monotonic() < deadline:
            client.voidcmd("NOOP")
            time.sleep(0.1)
    with pytest.raises(ftplib.error_perm):
        connect(service, key["key_id"], key["secret"])


def test_passive_ports_come_from_a_small_default_range(service: Service) -> None:
    with connect(service, "legacy") as client:
        for _ in range(5):
            host, port = client.makepasv()
            assert 60000 <= port <= 60099, port
        epsv = client.sendcmd("EPSV")
        assert 60000 <= int(re.search(r"\|(\d+)\|", epsv).group(1)) <= 60099, epsv  # type: ignore[union-attr]


def test_passive_port_ranges_are_parsed_and_checked() -> None:
    from actors.ftp_server import FtpSettingError, parse_port_range

    assert parse_port_range("60000-60099") == range(60000, 60100)
    assert parse_port_range("61000") == range(61000, 61001)
    assert parse_port_range("") is None
    for bad in ("60099-60000", "80-90", "a-b", "60000-70000"):
        with pytest.raises(FtpSettingError, match="ftp_passive_ports"):
            parse_port_range(bad)


def test_a_relative_data_directory_works_and_no_server_path_is_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`scripts/serve --ftp-port 2121` uses the relative `var`: folders list, uploads land, and the
    client sees `/Send_SMS`, never where the data directory is. The door logs its start once and
    stops at once with a client connected."""
    import time

    monkeypatch.chdir(tmp_path)
    env = {"SFTPSMS_FTP_PASSIVE_PORTS": "61000-61009"}
    with running_service(Path("var"), "--ftp-port", "0", env=env) as relative:
        relative.add_account("legacy")
        client = connect(relative, "legacy")
        replies = [client.cwd("Send_SMS"), client.pwd()]
        assert replies[0] == '250 "/Send_SMS" is the current directory.', replies
        assert replies[1] == "/Send_SMS"
        assert 61000 <= client.makepasv()[1] <= 61009
        client.storbinary("STOR rel.json", io.BytesIO(BODY))
        lines: list[str] = []
        client.retrlines("LIST /Processed", lines.append)
        client.cwd("/Errors")
        client.retrlines("LIST", lines.append)
        replies.append(client.cwd(".."))
        assert sorted(client.nlst()) == ["Errors", "Processed", "Send_SMS", "Validate"]
        assert not any(str(tmp_path) in text or "var/" in text for text in replies + lines), (replies, lines)
        assert relative.wait_report("legacy", "rel.json")[0] == "Processed"
        time.sleep(1.0)  # the loop has run a while: its start is still logged once
        assert relative.log().count("starting FTP server") + relative.log().count("ftp door serving") == 1
        started = time.monotonic()
        relative.process.terminate()
        relative.process.wait(timeout=15)
        assert time.monotonic() - started < 5
        client.close()


def test_serve_refuses_an_unusable_passive_port_range(tmp_path: Path) -> None:
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "sftpsms.cli", "serve", "--data-dir", str(tmp_path), "--ftp-port", "0",
         "--ftp-passive-ports", "80-90"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and "ftp_passive_ports" in result.stderr, result.stderr
