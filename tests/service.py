"""Test harness: the real `sftpsms serve` in a subprocess, and real SFTP clients against it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paramiko

from eventstore.store import SmsStore, open_store
from sftpsms.config import Settings
from sftpsms.passwords import hash_password

LEGACY = datetime(2023, 1, 1, tzinfo=UTC)
READY = re.compile(r"sftp on [\d.]+:(\d+)")
HTTP_READY = re.compile(r"http on [\d.]+:(\d+)")


def count_events(store: SmsStore, kind: str) -> int:
    """How many events of the class named `kind` the store's log holds, on either backend."""
    count, position = 0, 0
    while notifications := store.notifications(position, 5000):
        count += sum(1 for n in notifications if n.topic.endswith(f".{kind}"))
        position = notifications[-1].id
    return count


@dataclass
class Service:
    data_dir: Path
    port: int
    process: subprocess.Popen[str]
    log_path: Path
    http_port: int | None = None  # the inbound HTTP endpoint, when started with --http-port
    store_url: str | None = None  # the service's --store (None: SFTPSMS_STORE, else SQLite)

    def store(self) -> SmsStore:
        return open_store(self.data_dir, self.store_url)

    @property
    def settings(self) -> Settings:
        """The service's settings as the test's environment gives them: where its node keeps its
        own files (read models, history, simulator journal) on either store."""
        return Settings.from_env(data_dir=self.data_dir)

    def count_events(self, kind: str) -> int:
        """How many events of the class named `kind` (e.g. MessageQueued) the store holds."""
        store = self.store()
        try:
            return count_events(store, kind)
        finally:
            store.close()

    def add_account(
        self,
        username: str,
        password: str = "secret-pw",
        *,
        credits: int = 1000,
        created_at: datetime = LEGACY,
        email: str | None = "ops@example.com",
        country: str = "ZA",
        allow_custom_sender: bool = False,
    ) -> None:
        store = self.store()
        try:
            store.create_account(
                username=username,
                password_hash=hash_password(password),
                email=email,
                country=country,
                created_at=created_at,
            )
            if credits:
                store.add_credits(username, credits)
            if allow_custom_sender:
                store.set_sender_policy(username, True)
        finally:
            store.close()

    def folder(self, username: str, name: str) -> Path:
        return self.data_dir / "accounts" / username / name

    def wait_report(self, username: str, name: str, timeout: float = 30.0) -> tuple[str, dict[str, Any]]:
        """Wait until `<name>.report.json` lands in Processed or Errors; returns (folder, report)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for folder in ("Processed", "Errors"):
                path = self.folder(username, folder) / f"{name}.report.json"
                if path.exists():
                    return folder, json.loads(path.read_text())
            if self.process.poll() is not None:
                raise AssertionError(f"server exited:\n{self.log()}")
            time.sleep(0.02)
        raise AssertionError(f"no report for {name} after {timeout}s:\n{self.log()[-4000:]}")

    def service_alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sftpsms.cli", *args, "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
        )

    # ---- clients ------------------------------------------------------------------------------

    @contextmanager
    def paramiko(self, username: str, password: str = "secret-pw") -> Iterator[paramiko.SFTPClient]:
        transport = paramiko.Transport(("127.0.0.1", self.port))
        try:
            transport.connect(username=username, password=password)
            client = paramiko.SFTPClient.from_transport(transport)
            assert client is not None
            yield client
        finally:
            transport.close()

    def openssh(self, username: str, commands: str, password: str = "secret-pw") -> subprocess.CompletedProcess[str]:
        """Run the OpenSSH sftp client in batch mode, answering the password prompt via SSH_ASKPASS."""
        with askpass_env(password) as env, tempfile.TemporaryDirectory() as scratch:
            batch = Path(scratch) / "batch"
            batch.write_text(commands)
            return subprocess.run(
                [
                    "sftp",
                    "-o", "BatchMode=no",
                    "-o", "StrictHostKeyChecking=no",
                    "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "PreferredAuthentications=password,keyboard-interactive",
                    "-o", "PubkeyAuthentication=no",
                    "-o", "LogLevel=INFO",
                    "-P", str(self.port),
                    "-b", str(batch),
                    f"{username}@127.0.0.1",
                ],
                capture_output=True,
                text=True,
                env=env,
                stdin=subprocess.DEVNULL,
                timeout=60,
            )


@contextmanager
def askpass_env(password: str) -> Iterator[dict[str, str]]:
    """An environment in which OpenSSH clients (sftp, scp) read `password` from an SSH_ASKPASS
    script: no sshpass on this machine. Put `-o BatchMode=no` before `-b`, which would forbid it."""
    with tempfile.TemporaryDirectory() as scratch:
        askpass = Path(scratch) / "askpass"
        askpass.write_text(f"#!/bin/sh\necho '{password}'\n")
        askpass.chmod(0o700)
        yield dict(os.environ, SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force", DISPLAY=":0")


def stop_process(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited after `grace` seconds (nothing if it has exited)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def running_service(
    data_dir: Path, *extra: str, env: dict[str, str] | None = None, log_path: Path | None = None,
    store_url: str | None = None,
) -> Iterator[Service]:
    """`sftpsms serve` on `data_dir` (with `--store store_url` when given) until the block ends
    (SIGTERM, then SIGKILL after 10 s). Its log goes to `log_path` (default data_dir/server.log)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_path or data_dir / "server.log"
    if store_url is not None:
        extra = ("--store", store_url, *extra)
    log = log_path.open("a")  # a restarted service appends, so one log tells the whole story
    environment = dict(os.environ, SFTPSMS_SWEEP_INTERVAL="0.5", **(env or {}))
    process = subprocess.Popen(
        [sys.executable, "-m", "sftpsms.cli", "serve", "--data-dir", str(data_dir), "--sftp-port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=environment,
    )
    try:
        assert process.stdout is not None
        port = http_port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            match = READY.search(line)
            if match:
                port = int(match.group(1))
                http = HTTP_READY.search(line)
                http_port = int(http.group(1)) if http else None
        if port is None:
            process.kill()
            raise AssertionError(f"server did not start:\n{log_path.read_text()}")
        yield Service(data_dir, port, process, log_path, http_port, store_url)
    finally:
        stop_process(process)
        log.close()
