"""The SFTP door's confinement and refusals, through real clients."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.service import Service, askpass_env, running_service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("door") / "data") as running:
        running.add_account("alice")
        running.add_account("bob")
        running.add_account("newbie", created_at=datetime.now(UTC))  # no legacy rule, no API key
        yield running


def test_a_symlink_planted_in_an_account_is_not_followed(service: Service, tmp_path_factory: pytest.TempPathFactory) -> None:
    secret = tmp_path_factory.mktemp("outside") / "secret.json"
    secret.write_text("top secret")
    with service.paramiko("alice"):
        pass  # the first login creates the folders
    os.symlink(secret, service.folder("alice", "Processed") / "leak.json")
    os.symlink(secret.parent, service.folder("alice", "Errors") / "dir")
    with service.paramiko("alice") as sftp:
        with pytest.raises(OSError):
            sftp.open("Processed/leak.json").read()
        with pytest.raises(OSError):
            sftp.listdir("Errors/dir")
        assert "leak.json" not in sftp.listdir("Processed")


def test_another_accounts_folders_are_unreachable(service: Service) -> None:
    with service.paramiko("bob") as sftp:
        sftp.open("Send_SMS/bob.json", "wb").close()
    with service.paramiko("alice") as sftp:
        for path in ("../bob/Send_SMS/bob.json", "/../bob/Send_SMS/bob.json", "Send_SMS/../../bob/Send_SMS/bob.json"):
            with pytest.raises(OSError):
                sftp.stat(path)
        assert sorted(sftp.listdir("/")) == ["Errors", "Processed", "Send_SMS", "Validate"]
        assert sorted(sftp.listdir("../..")) == ["Errors", "Processed", "Send_SMS", "Validate"]


def test_folders_cannot_be_created_nor_links_made(service: Service) -> None:
    with service.paramiko("alice") as sftp:
        with pytest.raises(OSError):
            sftp.mkdir("Send_SMS/sub")
        with pytest.raises(OSError):
            sftp.symlink("/etc/passwd", "Send_SMS/p.json")


def test_uploads_into_processed_are_refused(service: Service) -> None:
    with service.paramiko("alice") as sftp:
        with pytest.raises(OSError):
            sftp.open("Processed/x.json", "wb").write(b"{}")


def test_scp_is_off(service: Service, tmp_path_factory: pytest.TempPathFactory) -> None:
    local = tmp_path_factory.mktemp("scp") / "x.json"
    local.write_text("{}")
    with askpass_env("secret-pw") as env:
        result = subprocess.run(
            ["scp", "-O", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=no",
             "-P", str(service.port), str(local), "alice@127.0.0.1:Send_SMS/x.json"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, env=env,
        )
    assert result.returncode != 0
    assert not (service.folder("alice", "Send_SMS") / "x.json").exists()


def test_new_account_without_a_key_is_told_how_to_enable_the_channel(service: Service) -> None:
    result = service.openssh("newbie", "ls\n")
    assert result.returncode != 0
    assert "sftp channel is not enabled" in result.stderr
    assert "sftpsms apikey create newbie --channel sftp" in result.stderr


def test_wrong_password_is_refused_with_a_generic_message(service: Service) -> None:
    result = service.openssh("alice", "ls\n", password="nope")
    assert result.returncode != 0
    assert "invalid username or password" in result.stderr
    assert "not enabled" not in result.stderr
