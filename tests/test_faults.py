"""Faults, against the real service: start-up never waits on work/, poison files are quarantined
(and reprocessed on request), stops are prompt and lose nothing, no name can break recovery, and a
full disk pauses the service instead of breaking it."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from eventstore.domain import ContactBatch, File, batch_id
from eventstore.store import open_store
from sftpsms.config import Settings
from tests.service import Service, running_service


def contacts_file(path: Path, contacts: int, prefix: str = "2783") -> bytes:
    body = {"Version": 7, "Message_Template": "Hello", "Contacts": [{"msisdn": f"{prefix}{i:07d}"} for i in range(contacts)]}
    data = json.dumps(body).encode()
    path.write_bytes(data)
    return data


def make_account(data: Path, username: str = "acme", credits: int = 1000) -> None:
    with running_service(data) as service:
        service.add_account(username, credits=credits)
        with service.paramiko(username):
            pass  # creates the folders


def leave_in_work(data: Path, account: str, name: str, content: bytes, *, legacy: bool = True) -> UUID:
    """What a crash leaves: a receipt in the store and the bytes in work/<file id>/ (under the
    upload's own name, as every version before this one did, or under the id-derived name)."""
    store = open_store(data)
    try:
        receipt = store.receive_file(
            account=account, name=name, size=len(content), fingerprint=f"{len(content)}:1", now=datetime.now(UTC)
        )
    finally:
        store.close()
    folder = data / "work" / str(receipt.file_id)
    folder.mkdir(parents=True)
    (folder / (name if legacy else "upload.json")).write_bytes(content)
    return receipt.file_id


def file_events(data: Path, account: str, name: str) -> list[Any]:
    store = open_store(data)
    try:
        return list(store.events.get(store.file_by_name(account, name).id))
    except Exception:
        return []
    finally:
        store.close()


def attempts_started(data: Path, account: str, name: str) -> int:
    return sum(isinstance(e, File.ProcessingStarted) for e in file_events(data, account, name))


def wait_for(condition: Any, service: Service, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert service.service_alive(), f"server exited:\n{service.log()[-4000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{service.log()[-4000:]}"
        time.sleep(0.01)


def queued_once(data: Path, file_id: UUID, contacts: int) -> None:
    store = open_store(data)
    try:
        indexes: Counter[int] = Counter()
        for number in range(-(-contacts // 1000)):
            for event in store.events.get(batch_id(file_id, number)):
                if isinstance(event, ContactBatch.MessageQueued):
                    indexes[event.index] += 1
    finally:
        store.close()
    assert len(indexes) == contacts and set(indexes.values()) == {1}


# ---- start-up never waits on work -------------------------------------------------------------


def test_the_doors_open_while_a_backlog_left_in_work_is_still_being_recovered(tmp_path: Path) -> None:
    contacts = 200_000
    data = tmp_path / "data"
    make_account(data, credits=contacts)
    content = contacts_file(tmp_path / "big.json", contacts)
    file_id = leave_in_work(data, "acme", "big.json", content)
    with running_service(data) as service:
        # The door answers a login while the backlog's file is demonstrably not done yet.
        with service.paramiko("acme") as sftp:
            assert "big.json" not in sftp.listdir("Processed")
        assert (data / "work" / str(file_id)).exists(), "recovery must not run before the doors open"
        folder, report = service.wait_report("acme", "big.json", timeout=180)
    assert (folder, report["messages_queued"]) == ("Processed", contacts)
    queued_once(data, file_id, contacts)


# ---- names in work/ never break recovery --------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "legacy"),
    [("n" * 245 + ".json", True), ("../../outside.json", False), ("new\nline.json", True)],
    ids=["250-characters", "dot-dot-slash", "newline"],
)
def test_no_name_left_in_work_breaks_recovery_and_an_unstorable_one_is_filed_under_a_safe_name(
    tmp_path: Path, name: str, legacy: bool
) -> None:
    data = tmp_path / "data"
    make_account(data)
    body = {"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": "27831234567"}]}
    content = json.dumps(body).encode()
    file_id = leave_in_work(data, "acme", name, content, legacy=legacy)
    with running_service(data) as service:
        processed = service.folder("acme", "Processed")
        wait_for(lambda: any(p.name.endswith(".report.json") for p in processed.iterdir()), service, what="a report")
        time.sleep(1.5)  # a delivery-CSV round or two: a name must not break them either
        log = service.log()
    reports = [p for p in processed.iterdir() if p.name.endswith(".report.json")]
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    filed = reports[0].name.removesuffix(".report.json")
    assert report["file"] == name and report["status"] == "processed" and report["file_id"] == str(file_id)
    assert (processed / filed).read_bytes() == content
    assert f"filed as {filed!r}" in " ".join(report["warnings"])
    assert len(os.fsencode(filed)) <= 200 and "/" not in filed and "\n" not in filed
    assert not (data / "work" / str(file_id)).exists()
    assert not (data / "accounts" / "outside.json").exists() and not (data / "outside.json").exists()
    assert "Traceback" not in log, log[-3000:]
    # Restarting again is clean too (main exited with rc 1 at every restart).
    with running_service(data) as service:
        assert service.service_alive()


# ---- poison files are quarantined ---------------------------------------------------------------


def test_a_file_over_the_time_budget_twice_is_quarantined_with_its_bytes_and_reprocessed_on_request(
    tmp_path: Path,
) -> None:
    contacts = 200_000
    data = tmp_path / "data"
    content = contacts_file(tmp_path / "big.json", contacts)
    with running_service(data, env={"SFTPSMS_FILE_TIME_BUDGET": "0.05"}) as service:
        service.add_account("acme", credits=contacts)
        with service.paramiko("acme") as sftp:
            sftp.put(str(tmp_path / "big.json"), "Send_SMS/big.json")
        folder, report = service.wait_report("acme", "big.json", timeout=120)
        time.sleep(1.0)  # a few recovery looks: the quarantined file is never tried again
        assert attempts_started(data, "acme", "big.json") == 2
    assert (folder, report["error_code"]) == ("Errors", "InternalServerError")
    assert "failed 2 times" in report["detail"] and "time budget" in report["detail"], report["detail"]
    assert (data / "accounts/acme/Errors/big.json").read_bytes() == content

    # The budget was the problem: with the default one, the operator retries it while serving.
    with running_service(data) as service:
        result = service.cli("files", "reprocess", "acme", "big.json", "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["action"] == "requeued"
        folder, report = service.wait_report("acme", "big.json", timeout=120)
    assert (folder, report["messages_queued"]) == ("Processed", contacts)
    queued_once(data, UUID(report["file_id"]), contacts)


def test_a_file_that_crashes_the_process_twice_is_quarantined_and_start_up_carries_on(tmp_path: Path) -> None:
    contacts = 300_000
    data = tmp_path / "data"
    content = contacts_file(tmp_path / "big.json", contacts)
    kills = 0
    # SIGKILL as each attempt starts, in pass 1: what a crash of its processing looks like. Two
    # crashes quarantine it; a kill that lands after a checkpoint of pass 1 made progress and
    # is forgiven (that is a healthy file stopped the hard way), hence up to four.
    while kills < 4 and not (data / "accounts/acme/Errors/big.json.report.json").exists():
        with running_service(data) as service:
            if kills == 0:
                service.add_account("acme", credits=contacts)
                with service.paramiko("acme") as sftp:
                    sftp.put(str(tmp_path / "big.json"), "Send_SMS/big.json")
            deadline = time.monotonic() + 60
            while attempts_started(data, "acme", "big.json") <= kills:
                assert service.service_alive() and time.monotonic() < deadline, service.log()[-4000:]
                if (data / "accounts/acme/Errors/big.json.report.json").exists():
                    break
                time.sleep(0.005)
            else:
                service.process.send_signal(signal.SIGKILL)
                service.process.wait()
                kills += 1
        assert not list((data / "accounts/acme/Processed").glob("*.report.json")), "the kill must land in pass 1"
    assert 2 <= kills <= 4
    with running_service(data) as service:
        folder, report = service.wait_report("acme", "big.json", timeout=60)
        assert (folder, report["error_code"]) == ("Errors", "InternalServerError")
        assert "failed 2 times" in report["detail"] and "process died" in report["detail"], report["detail"]
        assert (data / "accounts/acme/Errors/big.json").read_bytes() == content
        assert attempts_started(data, "acme", "big.json") == kills  # no start ran it after that

        result = service.cli("files", "reprocess", "acme", "big.json")
        assert result.returncode == 0, result.stderr
        folder, report = service.wait_report("acme", "big.json", timeout=120)
    assert (folder, report["messages_queued"]) == ("Processed", contacts)
    queued_once(data, UUID(report["file_id"]), contacts)


def test_reprocess_refuses_a_file_that_did_not_fail_with_an_internal_error(tmp_path: Path) -> None:
    with running_service(tmp_path / "data") as service:
        service.add_account("acme")
        body = {"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": "27831234567"}]}
        with service.paramiko("acme") as sftp, sftp.open("Send_SMS/fine.json", "w") as remote:
            remote.write(json.dumps(body))
        service.wait_report("acme", "fine.json")
        fine = service.cli("files", "reprocess", "acme", "fine.json")
        unknown = service.cli("files", "reprocess", "acme", "nope.json")
    assert fine.returncode == 2 and "only files that failed with InternalServerError" in fine.stderr
    assert unknown.returncode == 2 and "no file named 'nope.json'" in unknown.stderr


# ---- stops are prompt and lossless --------------------------------------------------------------


def in_pass_one(data: Path, *, since: float) -> bool:
    """Pass 1 of this run is under way: the spool is being written (again) since `since`."""
    for spool in (data / "spool").glob("*.jsonl"):
        try:
            stat = spool.stat()
        except FileNotFoundError:
            continue
        if stat.st_mtime > since and stat.st_size > 0:
            return True
    return False


def checkpointed(data: Path) -> int:
    """Contacts counted by the last checkpoint of pass 1 (0 without one)."""
    for path in (data / "spool").glob("*.checkpoint.json"):
        try:
            return int(json.loads(path.read_bytes())["contacts"])
        except (OSError, ValueError):
            continue
    return 0


def test_sigterm_during_pass_one_stops_at_once_and_restarts_resume_pass_one_where_it_was(tmp_path: Path) -> None:
    contacts = 1_000_000
    data = tmp_path / "data"
    contacts_file(tmp_path / "big.json", contacts)
    reached = 0
    for stop in range(3):
        with running_service(data) as service:
            if stop == 0:
                service.add_account("acme", credits=contacts)
                with service.paramiko("acme") as sftp:
                    sftp.put(str(tmp_path / "big.json"), "Send_SMS/big.json")
            else:  # pass 1 goes on from the last checkpoint, not from the first contact
                wait_for(lambda n=reached: f"pass 1 resumes at contact {n}" in service.log(), service, what="the resume")
            started = time.time()
            wait_for(lambda t=started, n=reached: in_pass_one(data, since=t) and checkpointed(data) > n, service, what="pass 1")
            reached = checkpointed(data)
            stopped_at = time.monotonic()
            service.process.send_signal(signal.SIGTERM)
            service.process.wait(timeout=30)
            took = time.monotonic() - stopped_at
        assert took < 10, f"the stop took {took:.1f} s"
        events = file_events(data, "acme", "big.json")
        assert not any(isinstance(e, File.FileAccepted) for e in events), "the stop must land in pass 1"
        # The stop did not wait for pass 1 to end, and is not counted against the file.
        assert isinstance(events[-1], File.ProcessingEnded) and not events[-1].failed
    with running_service(data) as service:
        folder, report = service.wait_report("acme", "big.json", timeout=300)
    assert (folder, report["messages_queued"]) == ("Processed", contacts)
    queued_once(data, UUID(report["file_id"]), contacts)


def submitted(data: Path) -> int:
    store = open_store(data)
    try:
        return len(store.notifications(0, 100_000, topics=["eventstore.domain:DispatchLog.MessageSubmitted"]))
    finally:
        store.close()


def test_sigterm_during_dispatch_stops_at_once_and_no_message_is_submitted_twice(tmp_path: Path) -> None:
    contacts = 400
    data = tmp_path / "data"
    body = {"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": f"2783{i:07d}"} for i in range(contacts)]}
    for stop in range(3):
        with running_service(data, "--send-rate", "100") as service:
            if stop == 0:
                service.add_account("acme", credits=contacts)
                with service.paramiko("acme") as sftp, sftp.open("Send_SMS/send.json", "wb") as remote:
                    remote.write(json.dumps(body).encode())
            wait_for(lambda n=stop: submitted(data) > 50 * (n + 1), service, what="dispatch")
            stopped_at = time.monotonic()
            service.process.send_signal(signal.SIGTERM)
            service.process.wait(timeout=30)
            assert time.monotonic() - stopped_at < 10
        assert submitted(data) < contacts, "the stop must land mid-dispatch"
    with running_service(data, "--send-rate", "100") as service:
        wait_for(lambda: submitted(data) >= contacts, service, what="the rest of the dispatch")
        time.sleep(0.5)  # a few more rounds: nothing more may be submitted
    assert submitted(data) == contacts
    journal = (Settings.from_env(data_dir=data).simulator_dir / "accepted.log").read_text().split("\n")
    accepted = Counter(line.split(" ")[0] for line in journal if line)
    assert len(accepted) == contacts and set(accepted.values()) == {1}, "the simulator got a message twice"


def test_a_zip_entry_cut_off_by_a_crash_resumes_after_restart_instead_of_failing_as_a_duplicate(tmp_path: Path) -> None:
    contacts = 300_000
    data = tmp_path / "data"
    body = {"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": f"2783{i:07d}"} for i in range(contacts)]}
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("inner.json", json.dumps(body))
    (tmp_path / "batch.zip").write_bytes(archive.getvalue())
    with running_service(data) as service:
        service.add_account("acme", credits=contacts)
        with service.paramiko("acme") as sftp:
            sftp.put(str(tmp_path / "batch.zip"), "Send_SMS/batch.zip")
        wait_for(lambda: attempts_started(data, "acme", "inner.json") >= 1, service, what="the entry's pass 1")
        service.process.send_signal(signal.SIGKILL)
        service.process.wait()
    with running_service(data) as service:
        folder, _ = service.wait_report("acme", "batch.zip", timeout=120)
        inner = json.loads((data / "accounts/acme/Processed/inner.json.report.json").read_text())
    assert folder == "Processed" and inner["messages_queued"] == contacts
    assert not list((data / "work").iterdir()), "nothing is left behind in work/"
    queued_once(data, UUID(inner["file_id"]), contacts)


# ---- disk full ----------------------------------------------------------------------------------


@contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path, leave: int) -> Path:
    """Fill the filesystem of `path` until only about `leave` bytes are free."""
    filler = path / "filler"
    stat = os.statvfs(path)
    free = stat.f_bavail * stat.f_frsize
    with filler.open("wb") as out:
        remaining = max(0, free - leave)
        chunk = b"\0" * (1 << 20)
        try:
            while remaining > 0:
                out.write(chunk[: min(len(chunk), remaining)])
                remaining -= min(len(chunk), remaining)
            out.flush()
        except OSError:
            pass
    return filler


def test_a_full_disk_pauses_files_and_they_carry_on_without_a_restart_once_space_is_freed(tmp_path: Path) -> None:
    contacts = 20_000
    with small_disk(tmp_path / "disk", "64m") as disk:
        data = disk / "data"
        staged = disk / "staged.json"  # on the same filesystem: moved in once the disk is full
        contacts_file(staged, contacts)
        env = {"SFTPSMS_WORK_RETRY_INTERVAL": "0.5"}
        with running_service(data, env=env) as service:
            service.add_account("acme", credits=contacts)
            with service.paramiko("acme"):
                pass
            filler = fill(disk, leave=400_000)  # room for the receipt, not for pass 1 and 2
            staged.rename(service.folder("acme", "Send_SMS") / "big.json")
            time.sleep(6)  # several sweeps, recovery looks and delivery-CSV rounds while full
            full_log = service.log()
            filler.unlink()
            folder, report = service.wait_report("acme", "big.json", timeout=120)
            time.sleep(1)
            log = service.log()
            replay = service.cli("replay", "--account", "acme", "--file", "big.json")
        assert (folder, report["messages_queued"]) == ("Processed", contacts), report
        assert replay.returncode == 0, replay.stderr
        assert not list((data / "work").iterdir())
        assert "disk is full" in full_log, full_log[-3000:]
        assert log.count("Traceback") == 0, log[-5000:]
        queued_once(data, UUID(report["file_id"]), contacts)
        store = open_store(data)
        try:
            assert store.account("acme").balance == 0
        finally:
            store.close()


def test_an_upload_while_the_disk_is_full_is_refused_clearly_never_processed_and_works_once_freed(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "64m") as disk:
        with running_service(disk / "data") as service:
            service.add_account("acme", credits=30_000)
            contacts = [{"msisdn": "27831234567", "customerId": f"customer-{n:08}"} for n in range(30_000)]
            padded = json.dumps({"Version": 7, "Message_Template": "x", "Contacts": contacts})  # ~1.6 MB
            filler = fill(disk, leave=500_000)
            with service.paramiko("acme") as sftp:
                with pytest.raises(OSError, match="disk is full"):
                    with sftp.open("Send_SMS/full.json", "wb") as remote:
                        remote.write(padded.encode())
            time.sleep(6)  # a sweep and more: the partial upload is never processed
            assert not (service.folder("acme", "Errors") / "full.json.report.json").exists()
            assert not (service.folder("acme", "Processed") / "full.json.report.json").exists()
            filler.unlink()
            with service.paramiko("acme") as sftp:  # the customer uploads again: it goes through
                with sftp.open("Send_SMS/full.json", "wb") as remote:
                    remote.write(padded.encode())
            folder, report = service.wait_report("acme", "full.json")
            log = service.log()
        assert (folder, report["messages_queued"]) == ("Processed", 30_000), report
        assert log.count("Traceback") == 0, log[-5000:]
