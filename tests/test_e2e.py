"""End to end through the real door: `sftpsms serve` in a subprocess, the OpenSSH sftp client and
paramiko uploading, reports read from the account's folders, events read from the store."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from eventstore.domain import DeliveryLog, DispatchLog, batch_id, delivery_log_id, dispatch_log_id
from tests.service import Service, running_service
from tests.smsc_server import smsc_process

MTN = ["27831234567", "27831234568", "27831234569", "27831234570"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("e2e") / "data") as running:
        running.add_account("acme")
        running.add_account("other")
        yield running


def upload(service: Service, account: str, name: str, content: bytes | str) -> None:
    data = content.encode() if isinstance(content, str) else content
    with service.paramiko(account) as sftp:
        with sftp.open(f"Send_SMS/{name}", "wb") as remote:
            remote.write(data)


def send(service: Service, account: str, name: str, body: dict[str, Any] | str | bytes) -> tuple[str, dict[str, Any]]:
    content = json.dumps(body) if isinstance(body, dict) else body
    upload(service, account, name, content)
    return service.wait_report(account, name)


def v7(**fields: Any) -> dict[str, Any]:
    return {"Version": 7, **fields}


# ---- the happy path, through both clients ---------------------------------------------------


def test_openssh_client_sees_four_folders_and_its_upload_is_processed(service: Service, tmp_path: Path) -> None:
    local = tmp_path / "hello.json"
    local.write_text(json.dumps(v7(Message_Template="Hello to the SMS world.", Contacts=[{"msisdn": n} for n in MTN])))
    result = service.openssh("acme", f"ls -1\nput {local} Send_SMS/hello.json\n")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(["sftp>", "ls", "-1", "Errors", "Processed", "Send_SMS", "Validate", "sftp>", "put", str(local), "Send_SMS/hello.json"])
    folder, report = service.wait_report("acme", "hello.json")
    assert folder == "Processed"
    assert report["status"] == "processed" and report["messages_queued"] == 4
    assert (service.folder("acme", "Processed") / "hello.json").exists()
    assert not (service.folder("acme", "Send_SMS") / "hello.json").exists()


def test_report_has_every_contract_field(service: Service) -> None:
    _, report = send(service, "acme", "fields.json", v7(Message_Template="Hi", Contacts=[{"msisdn": MTN[0]}]))
    for key in (
        "file", "account", "status", "error_code", "detail", "contacts", "messages_queued", "optouts_skipped",
        "parts", "credits_used", "contact_errors", "received_at", "completed_at",
    ):
        assert key in report
    assert report["file"] == "fields.json" and report["account"] == "acme"
    assert report["credits_used"] == report["parts"] == 1


def test_templates_values_and_per_contact_message(service: Service) -> None:
    body = v7(
        Message_Template="Message sent to @@value1@@, Welcome @@value2@@ @@value3@@ @@value4@@",
        Contacts=[
            {"msisdn": MTN[0], "values": {"value1": "1111111111", "value2": "Title", "value3": "1stName", "value4": "Surname"}},
            {"msisdn": MTN[1], "values": {"value1": "2222222222", "value3": "Jane", "value4": "Doe"}},
            {"msisdn": MTN[2], "message": "Specific message for msisdn 3333333333"},
        ],
    )
    folder, report = send(service, "acme", "values.json", body)
    assert folder == "Processed" and report["messages_queued"] == 3
    history = json.loads(service.cli("events", "--file", "values.json", "--account", "acme", "--json").stdout)
    assert history[0]["batch_events"]["MessageQueued"] == 3
    store = service.store()
    try:
        file_id = history[0]["file_id"]
        from uuid import UUID

        texts = {e.index: e.text for e in store.events.get(batch_id(UUID(file_id), 0)) if type(e).__name__ == "MessageQueued"}
    finally:
        store.close()
    assert texts == {
        0: "Message sent to 1111111111, Welcome Title 1stName Surname",
        1: "Message sent to 2222222222, Welcome  Jane Doe",
        2: "Specific message for msisdn 3333333333",
    }


# ---- file-level error codes -----------------------------------------------------------------


def balance(service: Service, account: str) -> int:
    store = service.store()
    try:
        return int(store.account(account).balance)
    finally:
        store.close()


@pytest.mark.parametrize(
    ("name", "body", "code"),
    [
        ("noversion.json", {"Message_Template": "x", "Contacts": [{"msisdn": MTN[0]}]}, "File.InvalidVersion"),
        ("v6.json", {"Version": 6, "Message_Template": "x", "Contacts": [{"msisdn": MTN[0]}]}, "File.InvalidVersion"),
        ("notjson.txt", "this is not json", "File.Corrupt"),
        ("truncated.json", '{"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": "27831234567"}, {"ms', "File.Corrupt"),
        ("latin1.json", b'{"Version": 7, "Message_Template": "caf\xe9", "Contacts": [{"msisdn": "27831234567"}]}', "File.Corrupt"),
        ("nocontacts.json", {"Version": 7, "Message_Template": "x"}, "RequiredParameter.Missing"),
        ("emptycontacts.json", {"Version": 7, "Message_Template": "x", "Contacts": []}, "RequiredParameter.Missing"),
        ("notemplate.json", {"Version": 7, "Contacts": [{"msisdn": MTN[0], "message": "a"}, {"msisdn": MTN[1]}]}, "RequiredParameter.Missing"),
        ("endbeforestart.json", v7(Start="2030-01-02 10:00", End="2030-01-01 10:00", Message_Template="x", Contacts=[{"msisdn": MTN[0]}]), "IncorrectScheduledDate"),
        ("endpast.json", v7(End="2020-01-01 10:00", Message_Template="x", Contacts=[{"msisdn": MTN[0]}]), "IncorrectScheduledDate"),
        ("badfield.json", v7(Max_Errors="lots", Message_Template="x", Contacts=[{"msisdn": MTN[0]}]), "File.ParseError"),
        ("badplaceholder.json", v7(Message_Template="Hi @@name@@", Contacts=[{"msisdn": MTN[0]}]), "File.ParseError"),
        ("sender.json", v7(SenderID="ACME", Message_Template="x", Contacts=[{"msisdn": MTN[0]}]), "File.ParseError"),
        ("maxerrors.json", v7(Max_Errors="1", Message_Template="x", Contacts=[{"msisdn": "12"}, {"msisdn": "13"}, {"msisdn": MTN[0]}]), "File.ParseError"),
        ("nothing.json", v7(Message_Template="x", Contacts=[{"msisdn": "12"}, {"msisdn": "1111111111"}]), "EmptySend.NoValidMessages"),
    ],
)
def test_file_level_errors_land_in_errors_with_their_code(service: Service, name: str, body: Any, code: str) -> None:
    before = balance(service, "acme")
    folder, report = send(service, "acme", name, body)
    assert (folder, report["status"], report["error_code"]) == ("Errors", "failed", code), report
    assert report["messages_queued"] == 0 and report["credits_used"] == 0, report
    assert (service.folder("acme", "Errors") / name).exists(), sorted(p.name for p in service.folder("acme", "Errors").iterdir())
    assert balance(service, "acme") == before, (before, report)


def test_insufficient_credits_fails_the_whole_file(service: Service) -> None:
    service.add_account("poor", credits=2)
    folder, report = send(service, "poor", "poor.json", v7(Message_Template="x", Contacts=[{"msisdn": n} for n in MTN[:3]]))
    assert (folder, report["error_code"]) == ("Errors", "InsufficientCredits")
    assert balance(service, "poor") == 2


def test_same_name_twice_is_a_duplicate(service: Service) -> None:
    body = v7(Message_Template="x", Contacts=[{"msisdn": MTN[0]}])
    assert send(service, "acme", "twice.json", body)[0] == "Processed"
    (service.folder("acme", "Processed") / "twice.json.report.json").unlink()
    folder, report = send(service, "acme", "twice.json", body)
    assert (folder, report["error_code"]) == ("Errors", "File.DuplicateFound")


# ---- contact-level errors -------------------------------------------------------------------


def test_contact_errors_are_listed_and_the_rest_is_sent(service: Service) -> None:
    service.cli("optout", "add", "acme", "0831234570")
    body = v7(
        Message_Template="Hello @@value1@@",
        Contacts=[
            {"msisdn": MTN[0], "values": {"value1": "ok"}},
            {"customerId": "nomsisdn"},
            {"msisdn": "1111111111"},
            {"msisdn": MTN[1], "message": "snow ☃ man"},
            {"msisdn": MTN[3]},
        ],
    )
    folder, report = send(service, "acme", "mixed.json", body)
    assert folder == "Processed"
    codes = {e["index"]: e["code"] for e in report["contact_errors"]}
    assert codes == {1: "RequiredParameter.Missing", 2: "MSISDN.NoNetworkFound", 3: "File.ParseError", 4: "MSISDN.Optout"}
    assert report["messages_queued"] == 1 and report["optouts_skipped"] == 1


def test_check_optouts_false_sends_to_opted_out_numbers(service: Service) -> None:
    service.cli("optout", "add", "acme", MTN[2])
    body = v7(Check_OptOuts="False", Message_Template="x", Contacts=[{"msisdn": MTN[2]}])
    folder, report = send(service, "acme", "nocheck.json", body)
    assert folder == "Processed" and report["messages_queued"] == 1 and report["optouts_skipped"] == 0


def test_a_file_where_everyone_opted_out_reports_its_optouts(service: Service) -> None:
    service.cli("optout", "add", "acme", "27831240002", "27831240003")
    body = v7(Message_Template="x", Contacts=[{"msisdn": "27831240002"}, {"msisdn": "0831240003"}, {"msisdn": "1"}])
    folder, report = send(service, "acme", "all-opted-out.json", body)
    assert folder == "Errors" and report["error_code"] == "EmptySend.NoValidMessages"
    assert report["optouts_skipped"] == 2
    assert [(e["index"], e["code"]) for e in report["contact_errors"]] == [
        (0, "MSISDN.Optout"), (1, "MSISDN.Optout"), (2, "MSISDN.NoNetworkFound")
    ]
    assert report["detail"] == "no valid message to send: 1 contact errors, 2 opted out"


def test_long_message_costs_its_parts(service: Service) -> None:
    before = balance(service, "acme")
    folder, report = send(service, "acme", "long.json", v7(Message_Template="a" * 161, Contacts=[{"msisdn": MTN[0]}]))
    assert folder == "Processed" and report["parts"] == 2 and report["credits_used"] == 2
    assert balance(service, "acme") == before - 2


def test_route_prefix_gives_a_number_a_network_without_restart(service: Service) -> None:
    body = v7(Message_Template="x", Contacts=[{"msisdn": "+999 5550001"}])
    assert send(service, "acme", "unrouted.json", body)[1]["error_code"] == "EmptySend.NoValidMessages"
    assert service.cli("route", "add", "9995").returncode == 0
    folder, report = send(service, "acme", "routed.json", body)
    assert folder == "Processed", report


# ---- zips -----------------------------------------------------------------------------------


def zipped(entries: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in entries.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def test_zip_entries_are_processed_as_files_of_their_own(service: Service) -> None:
    good = json.dumps(v7(Message_Template="x", Contacts=[{"msisdn": MTN[0]}]))
    data = zipped({"z-good.json": good, "z-bad.txt": "garbage"})
    folder, report = send(service, "acme", "bundle.zip", data)
    assert folder == "Processed"
    assert service.wait_report("acme", "z-good.json")[0] == "Processed"
    folder_bad, bad = service.wait_report("acme", "z-bad.txt")
    assert (folder_bad, bad["error_code"]) == ("Errors", "File.Corrupt")


def test_broken_zip_is_corrupt(service: Service) -> None:
    folder, report = send(service, "acme", "broken.zip", b"PK\x03\x04 this is not really a zip")
    assert (folder, report["error_code"]) == ("Errors", "File.Corrupt")


# ---- admin while serving, dispatch and events -----------------------------------------------


def test_credits_added_while_serving_take_effect_without_restart(service: Service) -> None:
    service.add_account("topup", credits=0)
    body = v7(Message_Template="x", Contacts=[{"msisdn": MTN[0]}])
    assert send(service, "topup", "one.json", body)[1]["error_code"] == "InsufficientCredits"
    assert service.cli("credits", "add", "topup", "5").returncode == 0
    assert send(service, "topup", "two.json", body)[0] == "Processed"


def test_queued_messages_are_submitted_and_get_delivery_reports(service: Service) -> None:
    numbers = ["27831230001", "27831230002", "27831230003"]  # never opted out by another test
    _, report = send(service, "acme", "deliver.json", v7(Message_Template="x", Contacts=[{"msisdn": n} for n in numbers]))
    assert report["messages_queued"] == 3
    from uuid import UUID

    file_id = UUID(report["file_id"])
    store = service.store()
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            submitted = [e for e in store.events.get(dispatch_log_id(batch_id(file_id, 0))) if isinstance(e, DispatchLog.MessageSubmitted)]
            reported = [e for e in store.events.get(delivery_log_id(batch_id(file_id, 0))) if isinstance(e, DeliveryLog.DeliveryReported)]
            if len(submitted) == 3 and len(reported) == 3:
                break
            time.sleep(0.05)
    finally:
        store.close()
    assert sorted(e.index for e in submitted) == [0, 1, 2]
    assert {e.status for e in reported} <= {"delivered", "failed", "expired"}
    assert len(reported) == 3


def test_start_in_the_future_holds_messages_back(service: Service) -> None:
    start = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%d %H:%M")
    _, report = send(service, "acme", "later.json", v7(Start=start, Message_Template="x", Contacts=[{"msisdn": MTN[0]}]))
    from uuid import UUID

    time.sleep(1.0)  # several dispatcher rounds; a message must not go out before Start
    store = service.store()
    try:
        events = store.events.get(dispatch_log_id(batch_id(UUID(report["file_id"]), 0)))
        assert not [e for e in events if isinstance(e, DispatchLog.MessageSubmitted)]
    finally:
        store.close()


def test_start_is_kept_to_the_second(service: Service) -> None:
    from uuid import UUID

    start = (datetime.now(UTC) + timedelta(seconds=4)).replace(microsecond=0)
    # A number no other test opts out (the service is shared by the module's tests).
    body = v7(Start=start.strftime("%Y-%m-%d %H:%M:%S"), Message_Template="x", Contacts=[{"msisdn": "27831240001"}])
    folder, report = send(service, "acme", "on-the-second.json", body)
    assert folder == "Processed", report
    store = service.store()
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            events = store.events.get(dispatch_log_id(batch_id(UUID(report["file_id"]), 0)))
            if submitted := [e for e in events if isinstance(e, DispatchLog.MessageSubmitted)]:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("not sent after its Start")
    finally:
        store.close()
    lag = (datetime.fromisoformat(submitted[0].submitted_at) - start).total_seconds()
    assert 0 <= lag < 1.0, lag


def test_a_batch_waiting_for_its_start_does_not_hold_back_later_files(service: Service) -> None:
    start = (datetime.now(UTC) + timedelta(hours=3)).strftime("%Y-%m-%d %H:%M")
    send(service, "acme", "waits.json", v7(Start=start, Message_Template="x", Contacts=[{"msisdn": MTN[0]}]))
    _, report = send(service, "acme", "after.json", v7(Message_Template="x", Contacts=[{"msisdn": MTN[1]}]))
    from uuid import UUID

    store = service.store()
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            events = store.events.get(dispatch_log_id(batch_id(UUID(report["file_id"]), 0)))
            if [e for e in events if isinstance(e, DispatchLog.MessageSubmitted)]:
                break
            time.sleep(0.05)
        else:
            raise AssertionError("after.json was held back by a file scheduled for later")
    finally:
        store.close()


def test_files_command_lists_outcomes_as_json(service: Service) -> None:
    send(service, "other", "o.json", v7(Message_Template="x", Contacts=[{"msisdn": MTN[0]}]))
    rows = json.loads(service.cli("files", "--account", "other", "--json").stdout)
    assert [(r["name"], r["status"]) for r in rows] == [("o.json", "processed")]


def test_replay_rebuilds_the_filed_report_from_events(service: Service) -> None:
    send(service, "acme", "replay.json", v7(Message_Template="x", Contacts=[{"msisdn": MTN[0]}, {"msisdn": "12"}]))
    result = service.cli("replay", "--account", "acme", "--file", "replay.json", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["matches_filed_report"] is True


def test_replay_of_an_unknown_file_says_so_without_a_traceback(service: Service) -> None:
    result = service.cli("replay", "--account", "acme", "--file", "never-uploaded.json")
    assert result.returncode == 2
    assert "no file named 'never-uploaded.json' for account 'acme'" in result.stderr
    assert "Traceback" not in result.stderr and "AggregateNotFoundError" not in result.stderr


def test_replay_says_the_filed_report_is_missing_when_the_customer_deleted_it(service: Service) -> None:
    send(service, "acme", "deleted.json", v7(Message_Template="x", Contacts=[{"msisdn": MTN[0]}]))
    (service.folder("acme", "Processed") / "deleted.json.report.json").unlink()
    result = service.cli("replay", "--account", "acme", "--file", "deleted.json")
    assert result.returncode == 1
    assert "is missing" in result.stderr and "NO" not in result.stderr
    assert json.loads(result.stdout)["messages_queued"] == 1  # rebuilt from the events all the same
    as_json = json.loads(service.cli("replay", "--account", "acme", "--file", "deleted.json", "--json").stdout)
    assert (as_json["filed_report"], as_json["matches_filed_report"]) == ("missing", False)


def test_replay_says_no_when_the_filed_report_was_changed(service: Service) -> None:
    send(service, "acme", "changed.json", v7(Message_Template="x", Contacts=[{"msisdn": MTN[0]}]))
    filed = service.folder("acme", "Processed") / "changed.json.report.json"
    filed.write_text(json.dumps({**json.loads(filed.read_text()), "credits_used": 99}))
    result = service.cli("replay", "--account", "acme", "--file", "changed.json")
    assert result.returncode == 1 and "NO" in result.stderr


def test_files_command_gives_a_failed_files_counts_as_its_report_does(service: Service) -> None:
    service.add_account("short", credits=1)
    service.cli("optout", "add", "short", MTN[3])
    body = v7(Message_Template="x", Contacts=[{"msisdn": n} for n in MTN])
    folder, report = send(service, "short", "short.json", body)
    assert (folder, report["error_code"], report["contacts"], report["optouts_skipped"]) == ("Errors", "InsufficientCredits", 4, 1)
    rows = json.loads(service.cli("files", "--account", "short", "--json").stdout)
    assert [(r["contacts"], r["optouts_skipped"], r["error_code"]) for r in rows] == [(4, 1, "InsufficientCredits")]
    table = service.cli("files", "--account", "short").stdout.splitlines()
    assert table[1].split()[:5] == ["short", "short.json", "failed", "InsufficientCredits", "4"]


@pytest.mark.parametrize("document", ["README.md", "docs/file-format.md"])
def test_the_sample_file_of_the_docs_is_processed(service: Service, document: str) -> None:
    text = (Path(__file__).parent.parent / document).read_text()
    sample = text.split("```json\n", 1)[1].split("```", 1)[0]
    name = f"sample-{document.replace('/', '-')}.json"
    folder, report = send(service, "acme", name, sample)
    assert (folder, report["status"], report["messages_queued"]) == ("Processed", "processed", 2), report


def test_status_email_is_written_to_the_outbox(service: Service) -> None:
    send(service, "acme", "mail.json", v7(Email="boss@example.com", Message_Template="x", Contacts=[{"msisdn": MTN[0]}]))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        mails = [p.read_text() for p in (service.data_dir / "outbox").glob("*.eml")]
        matching = [m for m in mails if "mail.json" in m and "boss@example.com" in m]
        if matching:
            break
        time.sleep(0.05)
    assert matching and "processed" in matching[0]


# ---- the door ---------------------------------------------------------------------------------


def test_wrong_password_is_refused(service: Service) -> None:
    result = service.openssh("acme", "ls\n", password="wrong")
    assert result.returncode != 0


def test_refused_extension_is_not_stored(service: Service) -> None:
    with service.paramiko("acme") as sftp:
        with pytest.raises(OSError):
            sftp.open("Send_SMS/run.exe", "wb").write(b"x")
    assert not (service.folder("acme", "Send_SMS") / "run.exe").exists()


def test_paths_outside_the_account_are_unreachable(service: Service) -> None:
    with service.paramiko("acme") as sftp:
        for path in ("../other/Send_SMS", "/../../etc", "Send_SMS/../../other"):
            with pytest.raises(OSError):
                names = sftp.listdir(path)
                assert "passwd" not in names and "o.json" not in names
                raise OSError("listed")


def test_temporary_upload_is_processed_after_rename(service: Service) -> None:
    body = json.dumps(v7(Message_Template="x", Contacts=[{"msisdn": MTN[0]}])).encode()
    with service.paramiko("acme") as sftp:
        with sftp.open("Send_SMS/renamed.json.filepart", "wb") as remote:
            remote.write(body)
        time.sleep(1.5)  # several sweeps: a temporary name is never picked up
        assert not (service.folder("acme", "Processed") / "renamed.json.filepart.report.json").exists()
        sftp.rename("Send_SMS/renamed.json.filepart", "Send_SMS/renamed.json")
    assert service.wait_report("acme", "renamed.json")[0] == "Processed"


def test_upload_cut_off_mid_file_is_never_processed(service: Service) -> None:
    import paramiko

    transport = paramiko.Transport(("127.0.0.1", service.port))
    transport.connect(username="acme", password="secret-pw")
    sftp = paramiko.SFTPClient.from_transport(transport)
    assert sftp is not None
    remote = sftp.open("Send_SMS/cut.json", "wb")
    remote.write(b'{"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": "27831234567"}')
    remote.flush()
    transport.sock.close()  # the connection drops before the client closes the file
    time.sleep(2.0)  # four sweeps
    assert (service.folder("acme", "Send_SMS") / "cut.json").exists()
    assert not (service.folder("acme", "Errors") / "cut.json.report.json").exists()
    assert not (service.folder("acme", "Processed") / "cut.json.report.json").exists()


def test_custom_sender_id_is_accepted_where_the_account_may_set_one(service: Service) -> None:
    service.add_account("brand", allow_custom_sender=True)
    folder, report = send(service, "brand", "brand.json", v7(SenderID="ACME", Message_Template="x", Contacts=[{"msisdn": MTN[0]}]))
    assert folder == "Processed", report


def test_unknown_keys_are_ignored_and_listed_as_warnings(service: Service) -> None:
    folder, report = send(service, "acme", "unknown.json", v7(Colour="blue", Message_Template="x", Contacts=[{"msisdn": MTN[0]}]))
    assert folder == "Processed"
    assert any("Colour" in warning for warning in report["warnings"])


def test_an_internal_error_files_the_upload_in_errors_and_frees_its_name(tmp_path: Path) -> None:
    with running_service(tmp_path / "data") as isolated:
        isolated.add_account("acme")
        spool = isolated.data_dir / "spool"
        if spool.is_dir():
            spool.rmdir()
        spool.write_text("not a folder")  # a broken disk layout: pass 1 cannot spool
        body = v7(Message_Template="x", Contacts=[{"msisdn": MTN[0]}])
        folder, report = send(isolated, "acme", "fault.json", body)
        assert (folder, report["error_code"]) == ("Errors", "InternalServerError")
        assert isolated.service_alive()
        spool.unlink()
        (isolated.folder("acme", "Errors") / "fault.json.report.json").unlink()
        folder, report = send(isolated, "acme", "fault.json", body)
        assert folder == "Processed", report


def test_delivery_csv_lists_every_message_with_its_final_status(service: Service) -> None:
    import csv
    from uuid import UUID

    from eventstore.domain import message_id

    numbers = ["27831239001", "27831239002", "27831239003"]
    _, report = send(service, "acme", "receipts.json", v7(
        Message_Template="x", Contacts=[{"msisdn": n, "customerId": f"C{i}"} for i, n in enumerate(numbers)],
    ))
    path = service.folder("acme", "Processed") / "receipts.json.delivery.csv"
    deadline = time.monotonic() + 40
    rows: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        if path.exists():
            rows = list(csv.DictReader(path.read_text().splitlines()))
            if len(rows) == 3 and all(r["status"] in ("delivered", "failed", "expired") for r in rows):
                break
        time.sleep(0.1)
    else:
        raise AssertionError(f"no final delivery CSV: {rows}")
    file_id = UUID(report["file_id"])
    assert [(r["index"], r["msisdn"], r["customerId"]) for r in rows] == [
        ("0", numbers[0], "C0"), ("1", numbers[1], "C1"), ("2", numbers[2], "C2"),
    ]
    assert [r["message_id"] for r in rows] == [str(message_id(file_id, i)) for i in range(3)]
    assert all(r["submitted_at"] and r["status_at"] and r["parts"] == "1" for r in rows)


# ---- a real SMSC over SMPP ------------------------------------------------------------------


def test_a_routed_prefix_is_sent_over_smpp_and_gets_receipts(tmp_path: Path) -> None:
    numbers = ["27841230001", "27841230002"]
    with smsc_process(receipts="first", ids="hex") as port:
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        (data_dir / "gateways.toml").write_text(
            f'[gateways.smsc]\ntype = "smpp"\nhost = "127.0.0.1"\nport = {port}\n'
            'system_id = "acme"\npassword = "pw"\nreconnect_backoff = 0.1\n'
        )
        with running_service(data_dir) as service:
            service.add_account("acme")
            assert service.cli("route", "add", "2784", "--gateway", "smsc").returncode == 0
            body = v7(Message_Template="Your parcel is on its way. " * 8, Contacts=[{"msisdn": n} for n in numbers])
            _, report = send(service, "acme", "smpp.json", body)
            assert report["messages_queued"] == 2, report
            file_id = UUID(report["file_id"])
            store = service.store()
            deadline = time.monotonic() + 30
            try:
                while time.monotonic() < deadline:
                    submitted = [e for e in store.events.get(dispatch_log_id(batch_id(file_id, 0))) if isinstance(e, DispatchLog.MessageSubmitted)]
                    reported = [e for e in store.events.get(delivery_log_id(batch_id(file_id, 0))) if isinstance(e, DeliveryLog.DeliveryReported)]
                    if len(submitted) == 2 and len(reported) == 2:
                        break
                    time.sleep(0.05)
            finally:
                store.close()
    assert {e.gateway for e in submitted} == {"smsc"}
    assert sorted((e.index, e.status, e.gateway) for e in reported) == [(0, "delivered", "smsc"), (1, "delivered", "smsc")]


def test_webhook_added_through_the_cli_gets_signed_delivery_statuses(tmp_path: Path) -> None:
    from standardwebhooks.webhooks import Webhook

    from tests.receiver import running_receiver

    env = {"SFTPSMS_SIMULATOR_DELIVERY_DELAY": "0.05", "SFTPSMS_WEBHOOK_BACKOFF": "0.1"}
    with running_receiver() as receiver, running_service(tmp_path / "data", env=env) as isolated:
        isolated.add_account("acme")
        added = isolated.cli("webhook", "add", "acme", receiver.url, "--events", "delivery", "--json")
        assert added.returncode == 0, added.stderr
        secret = json.loads(added.stdout)["secret"]
        numbers = MTN[:3]
        _, report = send(isolated, "acme", "hooked.json", v7(Message_Template="x", Contacts=[{"msisdn": n} for n in numbers]))
        assert report["messages_queued"] == 3
        posts = receiver.wait(3, timeout=30)
        listed = isolated.cli("webhook", "list", "acme", "--json")
    payloads = [Webhook(secret).verify(post.body, post.headers) for post in posts]
    assert sorted(p["data"]["msisdn"] for p in payloads) == sorted(numbers)
    assert {p["type"] for p in payloads} == {"delivery"}
    assert {p["data"]["file_id"] for p in payloads} == {report["file_id"]}
    assert {p["data"]["status"] for p in payloads} <= {"delivered", "failed", "expired"}
    assert len({post.id for post in posts}) == 3
    [row] = json.loads(listed.stdout)
    assert row["url"] == receiver.url and row["delivered"] + row["failed"] <= 3
