"""Accounts through the real door: API keys open channels, key logins, revocation closes sessions,
and sender IDs allowed one by one."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import paramiko
import pytest

from eventstore.domain import login_record_id
from tests.service import Service, running_service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("accounts") / "data") as running:
        yield running


def new_account(service: Service, name: str) -> None:
    service.add_account(name, created_at=datetime.now(UTC))


def create_key(service: Service, name: str, channel: str = "sftp") -> tuple[str, str]:
    result = service.cli("apikey", "create", name, "--channel", channel, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    return data["key_id"], data["secret"]


def can_log_in(service: Service, username: str, password: str) -> bool:
    transport = paramiko.Transport(("127.0.0.1", service.port))
    try:
        transport.connect(username=username, password=password)
        return True
    except paramiko.AuthenticationException:
        return False
    finally:
        transport.close()


def test_a_new_account_is_refused_until_a_key_opens_its_channel(service: Service) -> None:
    new_account(service, "fresh")
    assert not can_log_in(service, "fresh", "secret-pw")
    create_key(service, "fresh")
    assert can_log_in(service, "fresh", "secret-pw")


def test_a_key_id_and_secret_log_in_as_the_account(service: Service) -> None:
    new_account(service, "keyed")
    key_id, secret = create_key(service, "keyed")
    with service.paramiko(key_id, password=secret) as sftp:
        with sftp.open("Send_SMS/k.json", "wb") as remote:
            remote.write(json.dumps({"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": "27831234567"}]}).encode())
    assert service.wait_report("keyed", "k.json")[0] == "Processed"
    assert not can_log_in(service, key_id, "wrong-secret")


def test_a_key_for_another_channel_does_not_open_sftp(service: Service) -> None:
    new_account(service, "ftponly")
    key_id, secret = create_key(service, "ftponly", channel="ftp")
    assert not can_log_in(service, "ftponly", "secret-pw")
    assert not can_log_in(service, key_id, secret)


def test_revoking_the_last_key_refuses_logins_and_closes_open_sessions(service: Service) -> None:
    new_account(service, "revoked")
    key_id, secret = create_key(service, "revoked")
    transport = paramiko.Transport(("127.0.0.1", service.port))
    transport.connect(username="revoked", password="secret-pw")
    sftp = paramiko.SFTPClient.from_transport(transport)
    assert sftp is not None and sorted(sftp.listdir("/")) == ["Errors", "Processed", "Send_SMS", "Validate"]
    assert service.cli("apikey", "revoke", key_id).returncode == 0
    deadline = time.monotonic() + 10
    while transport.is_active():
        assert time.monotonic() < deadline, "the open session was not closed"
        time.sleep(0.05)
    assert not can_log_in(service, "revoked", "secret-pw")
    assert not can_log_in(service, key_id, secret)
    listed = json.loads(service.cli("apikey", "list", "revoked", "--json").stdout)
    assert listed[0]["key_id"] == key_id and listed[0]["revoked_at"]


def test_a_legacy_account_needs_no_key(service: Service) -> None:
    service.add_account("veteran")  # created 2023-01-01
    assert can_log_in(service, "veteran", "secret-pw")


def test_an_allowed_sender_id_may_be_used_and_others_may_not(service: Service) -> None:
    service.add_account("shop")
    assert service.cli("senderid", "allow", "shop", "SHOPCO").returncode == 0
    body = {"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": "27831234567"}]}
    with service.paramiko("shop") as sftp:
        for name, sender in (("ok.json", "SHOPCO"), ("no.json", "OTHER")):
            with sftp.open(f"Send_SMS/{name}", "wb") as remote:
                remote.write(json.dumps({**body, "SenderID": sender}).encode())
    assert service.wait_report("shop", "ok.json")[0] == "Processed"
    folder, report = service.wait_report("shop", "no.json")
    assert (folder, report["error_code"]) == ("Errors", "File.ParseError") and "OTHER" in report["detail"]


def test_account_show_tells_channels_keys_and_sender_ids(service: Service) -> None:
    new_account(service, "shown")
    key_id, _ = create_key(service, "shown")
    service.cli("senderid", "allow", "shown", "SHOWN")
    info = json.loads(service.cli("account", "show", "shown", "--json").stdout)
    assert info["channels"] == {"sftp": True, "ftp": False, "rest": False}
    assert info["api_keys"] == {key_id: "sftp"} and info["sender_ids"] == ["SHOWN"]


def test_repeated_failures_lock_out_with_a_clear_message_and_are_events(tmp_path_factory: pytest.TempPathFactory) -> None:
    env = {"SFTPSMS_LOGIN_LOCKOUT_AFTER": "3", "SFTPSMS_LOGIN_SLOWDOWN_AFTER": "2", "SFTPSMS_LOGIN_SLOWDOWN_BASE": "0.05"}
    with running_service(tmp_path_factory.mktemp("lockout") / "data", env=env) as guarded:
        guarded.add_account("target")
        for _ in range(3):
            assert not can_log_in(guarded, "target", "guess")
        result = guarded.openssh("target", "ls\n")  # the right password, too late
        assert result.returncode != 0 and "too many failed logins" in result.stderr
        store = guarded.store()
        try:
            events = [type(e).__name__ for e in store.events.get(login_record_id("target"))]
        finally:
            store.close()
    assert events.count("LoginFailed") >= 3 and "LoginLockedOut" in events


def test_a_success_resets_the_failure_count(service: Service) -> None:
    service.add_account("forgetful")
    for _ in range(2):
        assert not can_log_in(service, "forgetful", "guess")
    assert can_log_in(service, "forgetful", "secret-pw")
    for _ in range(2):
        assert not can_log_in(service, "forgetful", "guess")
    assert can_log_in(service, "forgetful", "secret-pw")


def test_sub_accounts_have_their_own_door_folders_and_credits(service: Service) -> None:
    service.add_account("parentco", credits=100)
    created = service.cli("account", "create", "branch", "--parent", "parentco", "--password", "branch-pw")
    assert created.returncode == 0, created.stderr
    assert not can_log_in(service, "branch", "branch-pw")  # a new sub-account: no channel yet
    create_key(service, "branch")
    moved = json.loads(service.cli("credits", "transfer", "parentco", "branch", "30", "--json").stdout)
    assert moved["balances"] == {"parentco": 70, "branch": 30}
    refused = service.cli("credits", "transfer", "parentco", "branch", "71")
    assert refused.returncode == 2 and "balance" in refused.stderr
    body = {"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": "27831234567"}]}
    with service.paramiko("branch", password="branch-pw") as sftp:
        with sftp.open("Send_SMS/branch.json", "wb") as remote:
            remote.write(json.dumps(body).encode())
        with pytest.raises(OSError):
            sftp.stat("../parentco/Send_SMS")
    assert service.wait_report("branch", "branch.json")[0] == "Processed"
    with service.paramiko("parentco") as sftp:
        assert "branch.json.report.json" not in sftp.listdir("Processed")
        with pytest.raises(OSError):
            sftp.stat("../branch/Processed/branch.json.report.json")
    own = json.loads(service.cli("files", "--account", "parentco", "--json").stdout)
    with_subs = json.loads(service.cli("files", "--account", "parentco", "--with-subaccounts", "--json").stdout)
    assert own == [] and [(r["account"], r["name"]) for r in with_subs] == [("branch", "branch.json")]
    info = json.loads(service.cli("account", "show", "parentco", "--json").stdout)
    assert info["sub_accounts"] == ["branch"] and info["credits"] == 70


def test_credits_cannot_go_to_an_account_that_is_not_a_sub_account(service: Service) -> None:
    service.add_account("one", credits=10)
    service.add_account("two", credits=0)
    result = service.cli("credits", "transfer", "one", "two", "5")
    assert result.returncode == 2 and "not a sub-account" in result.stderr


def test_an_added_ssh_key_logs_in_with_openssh(service: Service, tmp_path_factory: pytest.TempPathFactory) -> None:
    import subprocess

    service.add_account("keyholder")
    keys = tmp_path_factory.mktemp("sshkey")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "id")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "other")], check=True)
    added = service.cli("sshkey", "add", "keyholder", str(keys / "id.pub"))
    assert added.returncode == 0, added.stderr

    def sftp_with(identity: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sftp", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "IdentitiesOnly=yes", "-o", "PreferredAuthentications=publickey", "-i", str(keys / identity),
             "-P", str(service.port), "-b", "-", "keyholder@127.0.0.1"],
            input="ls\n", capture_output=True, text=True, timeout=30,
        )

    accepted = sftp_with("id")
    assert accepted.returncode == 0, accepted.stderr
    assert {"Send_SMS", "Processed", "Errors", "Validate"} <= set(accepted.stdout.split())
    assert sftp_with("other").returncode != 0
    assert json.loads(service.cli("account", "show", "keyholder", "--json").stdout)["ssh_keys"]
