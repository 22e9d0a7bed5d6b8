"""Validate-only uploads (issue 12) through the real service: a file uploaded into Validate gets
`Validate/<name>.report.json` saying exactly what a real upload of the same bytes would get, and
nothing is sent, reserved or taken. Each test validates first and then uploads the same bytes
into Send_SMS, with the account in the same state, and compares the two reports field by field."""

from __future__ import annotations

import ftplib
import io
import json
import os
import re
import signal
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.service import Service, running_service

MTN = ["27831234567", "27831234568", "27831234569", "27831234570"]
# A validation's own fields, and the real report's fields it changes (everything else is equal).
OWN = {"validation_id", "would_queue", "credits_needed"}
CHANGED = {"status", "messages_queued", "credits_used", "file_id", "received_at", "completed_at"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("validate") / "data", "--ftp-port", "0") as running:
        running.add_account("acme", credits=100_000)
        yield running


def v7(**fields: Any) -> dict[str, Any]:
    return {"Version": 7, **fields}


def body_bytes(body: dict[str, Any] | str | bytes) -> bytes:
    if isinstance(body, dict):
        return json.dumps(body).encode()
    return body.encode() if isinstance(body, str) else body


def wait_for(condition: Callable[[], Any], service: Service, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if not service.service_alive():
            raise AssertionError(f"server exited while waiting for {what}:\n{service.log()[-4000:]}")
        time.sleep(0.01)
    raise AssertionError(f"no {what} after {timeout} s:\n{service.log()[-4000:]}")


def current_validation(service: Service, account: str, name: str) -> str | None:
    """The validation id of the report in Validate/<name>.report.json now, if any."""
    try:
        return str(json.loads((service.folder(account, "Validate") / f"{name}.report.json").read_text())["validation_id"])
    except (FileNotFoundError, ValueError, KeyError):
        return None


def validation_report(service: Service, account: str, name: str, other_than: str | None = None) -> dict[str, Any]:
    """Wait for Validate/<name>.report.json (another one than validation `other_than`)."""
    path = service.folder(account, "Validate") / f"{name}.report.json"

    def ready() -> dict[str, Any] | None:
        try:
            report = dict(json.loads(path.read_text()))
        except (FileNotFoundError, ValueError):
            return None
        return report if report["validation_id"] != other_than else None

    return dict(wait_for(ready, service, f"validation report of {name}"))


def put(service: Service, account: str, folder: str, name: str, data: bytes) -> None:
    with service.paramiko(account) as sftp, sftp.open(f"{folder}/{name}", "wb") as remote:
        remote.write(data)


def validate(service: Service, account: str, name: str, body: dict[str, Any] | str | bytes) -> dict[str, Any]:
    earlier = current_validation(service, account, name)
    put(service, account, "Validate", name, body_bytes(body))
    return validation_report(service, account, name, earlier)


def send(service: Service, account: str, name: str, body: dict[str, Any] | str | bytes) -> dict[str, Any]:
    put(service, account, "Send_SMS", name, body_bytes(body))
    return service.wait_report(account, name)[1]


def assert_same(validation: dict[str, Any], real: dict[str, Any]) -> None:
    """The validation says what the real upload got: every field of the real report the same but
    those a validation changes, which say the same in their own way."""
    assert set(validation) == set(real) - {"filed_as"} | OWN, sorted(set(validation) ^ set(real))
    for key in set(real) - CHANGED - {"filed_as"}:
        assert validation[key] == real[key], (key, validation[key], real[key])
    processed = real["status"] == "processed"
    assert validation["status"] == ("valid" if processed else "invalid")
    assert validation["would_queue"] == real["messages_queued"]
    if processed:
        assert validation["credits_needed"] == real["credits_used"]
    assert validation["messages_queued"] == 0 and validation["credits_used"] == 0
    assert validation["file_id"] is None and validation["validation_id"]


def balance(service: Service, account: str) -> int:
    store = service.store()
    try:
        return int(store.account(account).balance)
    finally:
        store.close()


def count_events(service: Service, kind: str) -> int:
    return service.count_events(kind)


def name_taken(service: Service, account: str, name: str) -> bool:
    store = service.store()
    try:
        from eventstore.domain import file_name_id

        return store.exists(file_name_id(account, name))
    finally:
        store.close()


def nothing_changed(service: Service, account: str, name: str) -> Callable[[], None]:
    """A check that a validation left the account's balance, the file names and the queue as they were."""
    before = (balance(service, account), count_events(service, "MessageQueued"), count_events(service, "CreditsReserved"))

    def check() -> None:
        after = (balance(service, account), count_events(service, "MessageQueued"), count_events(service, "CreditsReserved"))
        assert after == before, (before, after)
        assert not name_taken(service, account, name)
        assert not (service.folder(account, "Validate") / name).exists()  # the upload is consumed
        assert not (service.folder(account, "Processed") / name).exists()
        assert not (service.folder(account, "Errors") / name).exists()

    return check


# ---- the same file through both folders -------------------------------------------------------


def test_a_validation_reports_exactly_what_the_real_upload_gets_contact_errors_and_optouts_included(
    service: Service, tmp_path: Path
) -> None:
    assert service.cli("optout", "add", "acme", "0831234570").returncode == 0
    body = v7(
        Message_Template="Hi @@value1@@, your balance is @@value2@@.",
        Colour="blue",  # an unknown key: a warning in both reports
        Contacts=[
            {"msisdn": "0831234567", "customerId": "C1", "values": {"value1": "Thandi", "value2": "R120"}},
            {"msisdn": "+27831234568", "message": "A message just for this contact"},
            {"msisdn": "12"},  # not a phone number
            {"msisdn": "27831234569", "message": "café ☕"},  # not GSM
            {"msisdn": "27831234570"},  # opted out
            {"customerId": "no number"},
            {"msisdn": "27831234567", "message": "long " * 60},  # two parts
        ],
    )
    unchanged = nothing_changed(service, "acme", "mixed.json")
    local = tmp_path / "mixed.json"
    local.write_bytes(body_bytes(body))
    result = service.openssh("acme", f"put {local} Validate/mixed.json\n")  # OpenSSH's sftp
    assert result.returncode == 0, result.stderr
    validation = validation_report(service, "acme", "mixed.json")
    unchanged()
    assert validation["status"] == "valid" and validation["would_queue"] == 3, validation
    assert validation["optouts_skipped"] == 1 and validation["parts"] == 1 + 1 + 2
    assert [e["code"] for e in validation["contact_errors"]] == [
        "MSISDN.NoNetworkFound", "File.ParseError", "MSISDN.Optout", "RequiredParameter.Missing"
    ]  # fmt: skip
    real = send(service, "acme", "mixed.json", body)  # paramiko
    assert_same(validation, real)


@pytest.mark.parametrize(
    ("name", "body", "code"),
    [
        ("v6.json", {"Version": 6, "Message_Template": "x", "Contacts": [{"msisdn": MTN[0]}]}, "File.InvalidVersion"),
        ("notjson.txt", "this is not json", "File.Corrupt"),
        ("endpast.json", v7(End="2020-01-01 10:00", Message_Template="x", Contacts=[{"msisdn": MTN[0]}]), "IncorrectScheduledDate"),
        ("maxerrors.json", v7(Max_Errors="1", Message_Template="x", Contacts=[{"msisdn": "12"}, {"msisdn": "13"}, {"msisdn": MTN[0]}]), "File.ParseError"),
        ("nothing.json", v7(Message_Template="x", Contacts=[{"msisdn": "12"}, {"msisdn": "27831234570"}]), "EmptySend.NoValidMessages"),
    ],
)
def test_a_file_that_fails_as_a_whole_is_invalid_with_the_real_code_and_detail(
    service: Service, name: str, body: Any, code: str
) -> None:
    unchanged = nothing_changed(service, "acme", name)
    validation = validate(service, "acme", name, body)
    unchanged()
    assert (validation["status"], validation["error_code"]) == ("invalid", code), validation
    assert_same(validation, send(service, "acme", name, body))


def test_insufficient_credits_is_invalid_and_says_how_many_the_file_needs(service: Service) -> None:
    service.add_account("poor", credits=2)
    body = v7(Message_Template="x", Contacts=[{"msisdn": n} for n in MTN[:3]])
    unchanged = nothing_changed(service, "poor", "poor.json")
    validation = validate(service, "poor", "poor.json", body)
    unchanged()
    assert (validation["status"], validation["error_code"], validation["credits_needed"]) == ("invalid", "InsufficientCredits", 3)
    real = send(service, "poor", "poor.json", body)
    assert_same(validation, real)
    assert balance(service, "poor") == 2


def test_a_name_a_real_upload_would_duplicate_is_reported_so_and_validating_takes_no_name(service: Service) -> None:
    body = v7(Message_Template="x", Contacts=[{"msisdn": MTN[0]}])
    first = validate(service, "acme", "twice.json", body)
    second = validate(service, "acme", "twice.json", body)  # validations never make a duplicate
    assert first["status"] == second["status"] == "valid" and first["validation_id"] != second["validation_id"]
    assert send(service, "acme", "twice.json", body)["status"] == "processed"
    (service.folder("acme", "Processed") / "twice.json.report.json").unlink()
    validation = validate(service, "acme", "twice.json", body)
    assert (validation["status"], validation["error_code"]) == ("invalid", "File.DuplicateFound")
    real = send(service, "acme", "twice.json", body)
    assert real["error_code"] == "File.DuplicateFound"
    assert_same(validation, real)


def zipped(entries: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_a_zip_gets_a_report_per_entry_with_the_credits_earlier_entries_would_reserve(service: Service) -> None:
    service.add_account("zippy", credits=5)
    three = json.dumps(v7(Message_Template="x", Contacts=[{"msisdn": n} for n in MTN[:3]]))
    entries = {"first.json": three, "second.json": three, "broken.json": "{", "notes.csv": "skipped"}
    data = zipped(entries)
    unchanged = nothing_changed(service, "zippy", "bundle.zip")
    own = validate(service, "zippy", "bundle.zip", data)
    unchanged()
    validations = {name: validation_report(service, "zippy", name) for name in ("first.json", "second.json", "broken.json")}
    assert [validations[n]["error_code"] for n in ("first.json", "second.json", "broken.json")] == [
        None, "InsufficientCredits", "File.Corrupt"
    ]  # fmt: skip
    assert own["status"] == "valid" and own["warnings"] == [
        "entry first.json: valid", "entry second.json: invalid InsufficientCredits", "entry broken.json: invalid File.Corrupt",
        "skipped entry 'notes.csv'",
    ]  # fmt: skip
    assert not any(name_taken(service, "zippy", name) for name in validations)
    real_own = send(service, "zippy", "bundle.zip", data)
    for name, validation in validations.items():
        assert_same(validation, service.wait_report("zippy", name)[1])
    assert own["warnings"] == [w.replace("processed", "valid").replace("failed", "invalid") for w in real_own["warnings"]]
    own["warnings"] = real_own["warnings"]
    assert_same(own, real_own)
    assert balance(service, "zippy") == 2


def test_ftp_uploads_into_validate_are_validated_like_sftp_ones(service: Service) -> None:
    match = re.search(r"ftp listening on [\d.]+:(\d+)", service.log())
    assert match
    body = body_bytes(v7(Message_Template="by ftp", Contacts=[{"msisdn": MTN[0]}, {"msisdn": "99"}]))
    with ftplib.FTP() as client:
        client.connect("127.0.0.1", int(match.group(1)), timeout=10)
        client.login("acme", "secret-pw")
        assert sorted(client.nlst()) == ["Errors", "Processed", "Send_SMS", "Validate"]
        with pytest.raises(ftplib.error_perm):
            client.storbinary("STOR Processed/ftp.json", io.BytesIO(body))
        client.storbinary("STOR Validate/ftp.json", io.BytesIO(body))
        validation = validation_report(service, "acme", "ftp.json")
        client.storbinary("STOR Send_SMS/ftp.json", io.BytesIO(body))
        real = service.wait_report("acme", "ftp.json")[1]
        assert_same(validation, real)
        downloaded = io.BytesIO()
        client.retrbinary("RETR Validate/ftp.json.report.json", downloaded.write)
    assert json.loads(downloaded.getvalue()) == validation


def test_validate_follows_the_upload_rules_of_send_sms(service: Service) -> None:
    with service.paramiko("acme") as sftp:
        with pytest.raises(OSError):
            sftp.open("Validate/report.json.report.json", "wb")  # the service's own name
        with pytest.raises(OSError):
            sftp.open("Validate/contacts.csv", "wb")
        with sftp.open("Validate/moved.json.part", "wb") as remote:
            remote.write(body_bytes(v7(Message_Template="x", Contacts=[{"msisdn": MTN[0]}])))
        with pytest.raises(OSError):
            sftp.rename("Validate/moved.json.part", "Send_SMS/moved.json")  # never from one folder to the other
        sftp.rename("Validate/moved.json.part", "Validate/moved.json")
        assert validation_report(service, "acme", "moved.json")["status"] == "valid"
    assert not name_taken(service, "acme", "moved.json")


def test_ten_thousand_contacts_are_reported_within_a_second(service: Service, capsys: pytest.CaptureFixture[str]) -> None:
    body = v7(Message_Template="Hi @@value1@@", Contacts=[{"msisdn": f"2783{i:07d}", "values": {"value1": f"n{i}"}} for i in range(10_000)])
    data = body_bytes(body)
    with service.paramiko("acme") as sftp:
        started = time.perf_counter()
        with sftp.open("Validate/big.json", "wb") as remote:
            remote.set_pipelined(True)
            remote.write(data)
        closed = time.perf_counter()
        validation = validation_report(service, "acme", "big.json")
        seen = time.perf_counter()
    pattern = r"file='?big\.json'? .*validation=.* contacts=10000 .*seconds=([\d.]+)"
    line = wait_for(lambda: re.findall(pattern, service.log()), service, "the validation's log line")  # logged after the report
    with capsys.disabled():  # the measurement, in the test's output (not a timed assertion)
        print(
            f"\nbenchmark: validation of 10 000 contacts: {float(line[-1]):.3f} s in the server "
            f"(pickup to report), {seen - closed:.3f} s from upload close to the report seen "
            f"(upload {closed - started:.3f} s)"
        )
    assert validation["contacts"] == 10_000 and validation["would_queue"] == 10_000
    assert_same(validation, send(service, "acme", "big.json", body))


def test_validations_are_events_and_a_read_model_the_cli_lists(service: Service) -> None:
    validation = validate(service, "acme", "listed.json", v7(Message_Template="x", Contacts=[{"msisdn": MTN[0]}, {"msisdn": "1"}]))
    listed = service.cli("files", "--account", "acme", "--validations", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = [row for row in json.loads(listed.stdout) if row["validation_id"] == validation["validation_id"]]
    assert len(rows) == 1 and rows[0]["status"] == "valid" and rows[0]["would_queue"] == 1 and rows[0]["contact_errors"] == 1
    assert len(rows[0]["sha256"]) == 64
    table = service.cli("files", "--account", "acme", "--validations")
    assert "listed.json" in table.stdout and "WOULD_QUEUE" in table.stdout
    events = service.cli("events", "--file", "listed.json", "--json")
    assert events.returncode == 0, events.stderr
    (item,) = json.loads(events.stdout)
    assert [e["event"] for e in item["events"]] == ["FileValidated"] and item["events"][0]["status"] == "valid"
    text = service.cli("events", "--file", "listed.json")
    assert "FileValidated" in text.stdout and "validated" in text.stdout
    assert "listed.json" not in {row["name"] for row in json.loads(service.cli("files", "--account", "acme", "--json").stdout)}


# ---- stops and crashes --------------------------------------------------------------------------


def test_a_validation_cut_off_by_a_crash_is_finished_after_the_restart_and_recorded_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    contacts = [{"msisdn": f"2783{i:07d}"} for i in range(300_000)]
    body = body_bytes(v7(Message_Template="crash test", Contacts=contacts))
    with running_service(data_dir) as service:
        service.add_account("acme", credits=1_000_000)
        put(service, "acme", "Validate", "crash.json", body)
        working = data_dir / "validating"
        wait_for(lambda: any(working.glob("*/upload.json")), service, "a working folder", timeout=60)
        os.kill(service.process.pid, signal.SIGKILL)
        service.process.wait()
    assert not (data_dir / "accounts" / "acme" / "Validate" / "crash.json.report.json").exists()
    with running_service(data_dir) as service:
        report = validation_report(service, "acme", "crash.json")
        assert "validation resumed" in service.log()
        assert (report["status"], report["contacts"], report["would_queue"]) == ("valid", 300_000, 300_000)
        assert count_events(service, "FileValidated") == 1
        wait_for(lambda: not any(working.iterdir()), service, "the working folder removed")
        assert balance(service, "acme") == 1_000_000 and count_events(service, "MessageQueued") == 0


def test_a_validation_whose_reports_were_made_before_a_crash_is_recorded_and_filed_once(tmp_path: Path) -> None:
    """The crash came after the reports were kept and before FileValidated: the restart records
    the event once and files the kept report, without checking the file again."""
    data_dir = tmp_path / "data"
    body = v7(Message_Template="x", Contacts=[{"msisdn": MTN[0]}])
    with running_service(data_dir) as service:
        service.add_account("acme")
        first = validate(service, "acme", "again.json", body)
    work = data_dir / "validating" / first["validation_id"]
    work.mkdir(parents=True)
    meta = {"account": "acme", "name": "again.json", "received_at": first["received_at"], "incomplete": False, "attempts": 1}
    (work / "meta.json").write_text(json.dumps(meta))
    kept = {"name": "again.json", "report": {**first, "detail": "as kept"}, "event": {}}
    store_event = {
        "account": "acme", "name": "again.json", "received_at": first["received_at"], "sha256": "0" * 64, "size": 1,
        "envelope": None, "status": "valid", "error_code": None, "contacts": 1, "would_queue": 1, "optouts_skipped": 0,
        "contact_errors": 0, "parts": 1, "credits_needed": 1, "validated_at": first["completed_at"],
    }  # fmt: skip
    kept["event"] = store_event
    (work / "reports.json").write_text(json.dumps({"reports": [kept]}))
    report_path = data_dir / "accounts" / "acme" / "Validate" / "again.json.report.json"
    report_path.unlink()
    with running_service(data_dir) as service:
        report = dict(wait_for(lambda: report_path.exists() and json.loads(report_path.read_text()), service, "the kept report"))
        assert report["detail"] == "as kept"
        assert count_events(service, "FileValidated") == 1  # recorded by the first run, not again
        wait_for(lambda: not work.exists(), service, "the working folder removed")


def test_an_upload_cut_off_in_validate_is_never_checked_and_once_stale_is_reported_corrupt(tmp_path: Path) -> None:
    import paramiko

    with running_service(tmp_path / "data", env={"SFTPSMS_INCOMPLETE_UPLOAD_TIMEOUT": "1.5"}) as service:
        service.add_account("acme")
        for folder in ("Validate", "Send_SMS"):
            transport = paramiko.Transport(("127.0.0.1", service.port))
            transport.connect(username="acme", password="secret-pw")
            sftp = paramiko.SFTPClient.from_transport(transport)
            assert sftp is not None
            remote = sftp.open(f"{folder}/cut.json", "wb")
            remote.write(b'{"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": "27831234567"}')
            remote.flush()
            transport.sock.close()  # the connection drops before the client closes the file
        wait_for(lambda: (service.folder("acme", ".incomplete-validate") / "cut.json").exists(), service, "the marker")
        assert (service.folder("acme", "Validate") / "cut.json").exists()  # kept for a resume meanwhile
        validation = validation_report(service, "acme", "cut.json")
        real = service.wait_report("acme", "cut.json")[1]
        assert (validation["status"], validation["error_code"], validation["detail"]) == ("invalid", "File.Corrupt", "upload incomplete")
        assert_same(validation, real)


def test_a_validation_cut_short_by_crashes_too_often_is_reported_as_an_internal_error(tmp_path: Path) -> None:
    """Like a real upload's quarantine: after file_max_failures (2) attempts a crash ended, the
    next start reports it instead of trying again forever."""
    data_dir = tmp_path / "data"
    work = data_dir / "validating" / "poison"
    work.mkdir(parents=True)
    received_at = "2026-12-04T00:00:00+00:00"
    meta = {"account": "acme", "name": "poison.json", "received_at": received_at, "incomplete": False, "attempts": 2}
    (work / "meta.json").write_text(json.dumps(meta))
    (work / "upload.json").write_bytes(body_bytes(v7(Message_Template="x", Contacts=[{"msisdn": MTN[0]}])))
    with running_service(data_dir) as service:
        service.add_account("acme")
        report = validation_report(service, "acme", "poison.json")
        assert (report["status"], report["error_code"]) == ("invalid", "InternalServerError"), report
        assert "cut short 2 times" in report["detail"]
        wait_for(lambda: not work.exists(), service, "the working folder removed")
        assert count_events(service, "FileValidated") == 1
