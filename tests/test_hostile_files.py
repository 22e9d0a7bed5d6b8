"""Hostile uploads through the real SFTP door: every file over a limit (PRODUCT.md §7) fails fast with
File.Corrupt or File.ParseError and a detail naming the limit, in bounded memory, and the service
goes on serving everyone. The files of issue 9 are here byte for byte."""

from __future__ import annotations

import ftplib
import io
import json
import re
import struct
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sftpsms import filing
from tests.service import Service, running_service

GOOD = json.dumps({"Version": 7, "Message_Template": "Hi", "Contacts": [{"msisdn": "27831234567"}]})
PEAK_RSS_LIMIT = 300 << 20
# Time from the upload's close to its report: the issue asks for a second; the shared test machine
# gets some slack, still far from the minutes (or the crash) of before.
REPORT_WITHIN = 3.0


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("hostile") / "data", "--ftp-port", "0") as running:
        running.add_account("mallory")
        running.add_account("alice")
        yield running


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service with small limits, to reach them with small files."""
    env = {
        "SFTPSMS_MAX_FILE_BYTES": "200000",
        "SFTPSMS_MAX_CONTACTS": "5",
        "SFTPSMS_MAX_ZIP_BYTES": "150000",
        "SFTPSMS_MAX_ACCOUNT_UNZIP_BYTES": "300000",
    }
    with running_service(tmp_path_factory.mktemp("tight") / "data", env=env) as running:
        running.add_account("mallory")
        yield running


def upload(service: Service, name: str, data: bytes, account: str = "mallory") -> float:
    """Upload over SFTP (paramiko); returns the moment the handle was closed."""
    with service.paramiko(account) as sftp:
        with sftp.open(f"Send_SMS/{name}", "wb") as remote:
            remote.set_pipelined(True)
            remote.write(data)
        return time.monotonic()


def report_of(service: Service, name: str, data: bytes, account: str = "mallory") -> dict[str, Any]:
    closed = upload(service, name, data, account)
    folder, report = service.wait_report(account, name)
    elapsed = time.monotonic() - closed
    assert elapsed < REPORT_WITHIN, f"{name}: report after {elapsed:.2f} s"
    assert folder == ("Processed" if report["status"] == "processed" else "Errors")
    return report


def failed(service: Service, name: str, data: bytes, code: str = "File.Corrupt", account: str = "mallory") -> str:
    report = report_of(service, name, data, account)
    assert (report["status"], report["error_code"]) == ("failed", code), report
    assert report["detail"]
    return str(report["detail"])


def peak_rss(service: Service) -> int:
    status = Path(f"/proc/{service.process.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def still_serving(service: Service, name: str) -> None:
    assert service.service_alive()
    report = report_of(service, name, GOOD.encode(), account="alice" if "alice" in name else "mallory")
    assert report["status"] == "processed"


# ---- the JSON files of issue 9 -------------------------------------------------------------


def test_the_depth_bomb_fails_fast_naming_the_limit(service: Service, tmp_path: Path) -> None:
    body = b'{"version":7,"message_template":"x","contacts":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    local = tmp_path / "deep.json"
    local.write_bytes(body)
    result = service.openssh("mallory", f"put {local} Send_SMS/deep.json\n")  # the OpenSSH client
    assert result.returncode == 0, result.stderr
    folder, report = service.wait_report("mallory", "deep.json", timeout=REPORT_WITHIN + 5)
    assert (folder, report["error_code"]) == ("Errors", "File.Corrupt")
    assert "max_json_depth" in report["detail"]
    still_serving(service, "alice-after-deep.json")


def test_a_4300_digit_number_no_longer_kills_the_service(service: Service) -> None:
    body = b'{"Version":7,"Message_Template":"x","Contacts":[{"msisdn":1' + b"0" * 4300 + b"}]}"
    assert "max_number_chars" in failed(service, "digits.json", body)
    still_serving(service, "alice-after-digits.json")


def test_a_huge_exponent_is_one_contact_error_in_bounded_time(service: Service) -> None:
    body = b'{"Version":7,"Message_Template":"x","Contacts":[{"msisdn": 1e999999999}, {"msisdn": "27831234567"}]}'
    report = report_of(service, "exponent.json", body)
    assert report["status"] == "processed" and report["messages_queued"] == 1
    assert report["contact_errors"][0]["code"] == "File.ParseError"
    assert "digits" in report["contact_errors"][0]["detail"]


@pytest.mark.parametrize("field", ["template", "value1"])
def test_a_50_mb_string_fails_fast_naming_the_limit(service: Service, field: str) -> None:
    big = b"x" * 50_000_000
    if field == "template":
        body = b'{"Version":7,"Message_Template":"' + big + b'","Contacts":[{"msisdn":"27831234567"}]}'
    else:
        body = b'{"Version":7,"Message_Template":"x","Contacts":[{"msisdn":"27831234567","values":{"value1":"' + big + b'"}}]}'
    assert "max_string_bytes" in failed(service, f"string-{field}.json", body)


def test_too_many_keys_in_a_contact_fail_the_file(service: Service) -> None:
    contact = {"msisdn": "27831234567", **{f"k{n}": n for n in range(300)}}
    body = json.dumps({"Version": 7, "Message_Template": "x", "Contacts": [contact]}).encode()
    assert "max_keys_per_object" in failed(service, "keys.json", body)


def test_a_contact_over_its_size_limit_fails_the_file(service: Service) -> None:
    contact = {"msisdn": "27831234567", "x": [{"a": str(n)} for n in range(200_000)]}
    body = json.dumps({"Version": 7, "Message_Template": "x", "Contacts": [contact]}).encode()
    assert "max_contact_bytes" in failed(service, "fat-contact.json", body)


def test_files_over_the_file_and_contact_limits_fail_naming_them(tight: Service) -> None:
    six = json.dumps({"Version": 7, "Message_Template": "x", "Contacts": [{"msisdn": "27831234567"}] * 6})
    assert "max_contacts" in failed(tight, "six.json", six.encode(), code="File.ParseError")
    big = json.dumps({"Version": 7, "Message_Template": "x", "Foo": "y" * 60_000, "Bar": "y" * 60_000,
                      "Baz": "y" * 60_000, "Qux": "y" * 60_000, "Contacts": [{"msisdn": "27831234567"}]})
    # Through the door, the upload itself is refused once it passes the limit (and never processed) ...
    with pytest.raises(OSError, match="too big"), tight.paramiko("mallory") as sftp:
        with sftp.open("Send_SMS/big.json", "wb") as remote:  # not pipelined: each write answered
            for start in range(0, len(big), 32768):
                remote.write(big[start : start + 32768].encode())
    # ... and a file over it that reached Send_SMS another way (an operator's copy, a limit lowered
    # since) fails when its processing starts, naming the limit.
    (tight.folder("mallory", "Send_SMS") / "placed.json").write_bytes(big.encode())
    folder, report = tight.wait_report("mallory", "placed.json")
    assert (folder, report["error_code"]) == ("Errors", "File.Corrupt") and "max_file_bytes" in report["detail"]
    assert not (tight.folder("mallory", "Errors") / "big.json.report.json").exists()
    (tight.folder("mallory", "Errors") / "placed.json").unlink()  # the customer tidies up
    still_serving(tight, "after-limits.json")


def ftp_upload(service: Service, name: str, data: bytes) -> None:
    match = re.search(r"ftp listening on [\d.]+:(\d+)", service.log())
    assert match, service.log()
    with ftplib.FTP() as client:
        client.connect("127.0.0.1", int(match.group(1)), timeout=10)
        client.login("mallory", "secret-pw")
        client.storbinary(f"STOR Send_SMS/{name}", io.BytesIO(data))


def test_the_ftp_door_meets_the_same_limits(service: Service) -> None:
    bomb = b'{"version":7,"message_template":"x","contacts":' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    ftp_upload(service, "ftp-deep.json", bomb)
    folder, report = service.wait_report("mallory", "ftp-deep.json")
    assert (folder, report["error_code"]) == ("Errors", "File.Corrupt") and "max_json_depth" in report["detail"]
    ftp_upload(service, "ftp-nested.zip", zipped({"inner.zip": zipped({"a.json": GOOD.encode()})}))
    folder, report = service.wait_report("mallory", "ftp-nested.zip")
    assert (folder, report["error_code"]) == ("Errors", "File.Corrupt") and "zip inside a zip" in report["detail"]


# ---- zips ----------------------------------------------------------------------------------


def zipped(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_inside_a_zip_fails(service: Service, tmp_path: Path) -> None:
    local = tmp_path / "nested.zip"
    local.write_bytes(zipped({"a.json": GOOD.encode(), "inner.zip": zipped({"b.json": GOOD.encode()})}))
    result = service.openssh("mallory", f"put {local} Send_SMS/nested.zip\n")  # the OpenSSH client
    assert result.returncode == 0, result.stderr
    folder, report = service.wait_report("mallory", "nested.zip")
    assert (folder, report["error_code"]) == ("Errors", "File.Corrupt")
    assert "zip inside a zip" in report["detail"]
    assert not (service.folder("mallory", "Processed") / "a.json").exists()  # nothing was extracted


@pytest.mark.parametrize("entry", ["bad\nname.json", "x" * 251 + ".json", "x" * 233 + ".json", "../up.json"])
def test_unsafe_entry_names_fail_the_zip(service: Service, entry: str) -> None:
    assert "unsafe" in failed(service, "names.zip", zipped({entry: GOOD.encode()}))
    (service.folder("mallory", "Errors") / "names.zip.report.json").unlink()  # the customer tidies up,
    (service.folder("mallory", "Errors") / "names.zip").unlink()  # so the next one is filed as names.zip


def test_too_many_entries_fail_the_zip(service: Service) -> None:
    data = zipped({f"e{n}.json": GOOD.encode() for n in range(101)})
    assert "max_zip_entries" in failed(service, "many.zip", data)


def test_a_zip_bomb_fails_without_being_inflated(service: Service) -> None:
    data = zipped({"bomb.json": b" " * (64 << 20)})  # 64 MB in about 64 kB
    assert "max_zip_ratio" in failed(service, "bomb.zip", data)
    assert peak_rss(service) < PEAK_RSS_LIMIT


def test_a_bomb_that_lies_about_its_sizes_is_stopped_while_inflating(service: Service) -> None:
    data = bytearray(zipped({"liar.json": b" " * (64 << 20)}))
    declared = (64 << 20).to_bytes(4, "little")
    while declared in data:  # local header and central directory claim 1000 bytes
        at = data.index(declared)
        data[at : at + 4] = (1000).to_bytes(4, "little")
    detail = failed(service, "liar.zip", bytes(data))
    assert "max_zip_ratio" in detail or "damaged" in detail
    work = service.data_dir / "work"
    assert sum(p.stat().st_size for p in work.rglob("*") if p.is_file()) < 4 << 20


def test_a_wrong_central_directory_offset_is_corrupt_not_an_internal_error(service: Service) -> None:
    data = bytearray(zipped({"one.json": GOOD.encode()}))
    end = data.rindex(b"PK\x05\x06")
    offset = struct.unpack("<I", data[end + 16 : end + 20])[0]
    data[end + 16 : end + 20] = struct.pack("<I", offset + 1000)
    assert "damaged" in failed(service, "offset.zip", bytes(data))


def test_an_archive_that_ends_inside_an_entry_has_a_detail(service: Service) -> None:
    data = bytearray(zipped({"one.json": GOOD.encode() * 20}, zipfile.ZIP_STORED))
    central = data.index(b"PK\x01\x02")
    for at in (18, 22, central + 20, central + 24):  # both sizes, local header and directory
        data[at : at + 4] = struct.pack("<I", 5000)
    assert "ends early" in failed(service, "short.zip", bytes(data))


def test_entries_over_the_total_and_the_account_allowance_fail_the_zip(tight: Service) -> None:
    entries = {f"t{n}.json": GOOD.encode() + b" " * 60_000 for n in range(3)}  # 180 kB > 150 kB
    assert "max_zip_bytes" in failed(tight, "total.zip", zipped(entries))
    # Fill the account's folders: failed uploads stay in Errors with their bytes.
    for n in range(2):
        failed(tight, f"filler{n}.json", b"{" + b" " * 140_000)
    detail = failed(tight, "allowance.zip", zipped({"small.json": GOOD.encode() + b" " * 30_000}))
    assert "max_account_unzip_bytes" in detail
    still_serving(tight, "after-allowance.json")


def test_an_entry_with_the_longest_allowed_name_is_filed_with_its_report(service: Service) -> None:
    name = "n" * (filing.MAX_FILED_BYTES - len(".json")) + ".json"  # the longest filed as it is
    report = report_of(service, "longname.zip", zipped({name: GOOD.encode()}))
    assert report["status"] == "processed"
    assert service.wait_report("mallory", name)[0] == "Processed"


# ---- defect 6: a zip's name need not be unique ---------------------------------------------


def wait_new_report(service: Service, name: str, seen: set[str], timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stem, _, suffix = name.rpartition(".")
        for folder in ("Processed", "Errors"):
            # A later file of the name is filed beside the earlier one's outputs, never over them:
            # as <stem>.<id>.<suffix>, which its report's filed_as says.
            for path in sorted(service.folder("mallory", folder).glob(f"{stem}*.{suffix}.report.json")):
                try:
                    report = json.loads(path.read_text())
                except (FileNotFoundError, json.JSONDecodeError):
                    continue
                if report.get("file_id") not in seen and report.get("file") == name:
                    seen.add(report["file_id"])
                    return dict(report)
        time.sleep(0.02)
    raise AssertionError(f"no new report for {name}:\n{service.log()[-3000:]}")


def test_a_second_zip_of_the_same_name_is_processed_and_only_entry_names_are_duplicates(service: Service) -> None:
    seen: set[str] = set()
    upload(service, "batch.zip", zipped({"first.json": GOOD.encode()}))
    assert wait_new_report(service, "batch.zip", seen)["status"] == "processed"
    upload(service, "batch.zip", zipped({"second.json": GOOD.encode()}))
    again = wait_new_report(service, "batch.zip", seen)
    assert (again["status"], again["error_code"]) == ("processed", None)
    assert service.wait_report("mallory", "second.json")[0] == "Processed"
    upload(service, "batch.zip", zipped({"first.json": GOOD.encode()}))  # an entry name seen before
    third = wait_new_report(service, "batch.zip", seen)
    assert (third["status"], third["error_code"]) == ("failed", "EmptySend.NoValidMessages")
    entry = service.folder("mallory", "Errors") / "first.json.report.json"
    assert json.loads(entry.read_text())["error_code"] == "File.DuplicateFound"


# ---- after all of it -----------------------------------------------------------------------


def test_the_service_stayed_within_its_memory_and_serves_everyone(service: Service) -> None:
    still_serving(service, "alice-at-the-end.json")
    assert peak_rss(service) < PEAK_RSS_LIMIT, f"peak RSS {peak_rss(service) >> 20} MB"
    assert "code=InternalServerError" not in service.log()
