"""Folders: account roots stay inside DATA/accounts, upload names, filing never replaces outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftpsms import folders
from sftpsms.config import Settings
from sftpsms.names import BadName


def test_account_root_refuses_names_that_leave_the_accounts_folder(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.account_root("demo") == tmp_path / "accounts" / "demo"
    for name in ("../accounts/demo", "..", "", "a/b", "/etc"):
        with pytest.raises(BadName):
            settings.account_root(name)


def test_an_old_stores_odd_but_contained_name_keeps_its_folder(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).account_root("sp ace") == tmp_path / "accounts" / "sp ace"


def test_account_root_refuses_a_link(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    settings.accounts_dir.mkdir()
    (settings.accounts_dir / "linked").symlink_to(tmp_path)
    with pytest.raises(BadName):
        settings.account_root("linked")


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("x.json", None),
        ("x.part", None),
        ("x.exe", "only .txt"),
        ("a" * 196 + ".json", "at most 200 bytes"),
        ("v.json.report.json", "service's own"),
        ("V.JSON.REPORT.JSON", "service's own"),
        ("v.json.delivery.csv", "service's own"),
        ("v.json.report.json.part", "service's own"),
        ("two\nlines.json", "control characters"),
    ],
)
def test_upload_refusal(name: str, reason: str | None) -> None:
    refusal = folders.upload_refusal(name)
    assert refusal is None if reason is None else reason in (refusal or "")


def test_refused_names_are_never_processed_however_they_got_there() -> None:
    for name in ("x.json.report.json", "a" * 245 + ".json", "two\nlines.json"):
        assert not folders.is_allowed(name)
    assert folders.is_allowed("ok.JSON")


def file_as(folder: Path, name: str, file_id: str, data: bytes) -> str:
    """What file_away does: the file, then its report."""
    filed = folders.filed_name(folder, name, file_id, moving=True)
    (folder / filed).write_bytes(data)
    folders.report_path(folder, filed).write_text(json.dumps({"file": name, "file_id": file_id}))
    return filed


def test_a_second_file_of_a_name_is_filed_beside_the_first(tmp_path: Path) -> None:
    first = file_as(tmp_path, "v.json", "1111111122223333", b"first")
    second = file_as(tmp_path, "v.json", "4444444455556666", b"second")
    assert (first, second) == ("v.json", "v.44444444.json")
    assert (tmp_path / "v.json").read_bytes() == b"first"
    assert folders.outputs_name(tmp_path, "v.json", "4444444455556666") == "v.44444444.json"


def test_filing_again_after_a_crash_finds_its_own_name(tmp_path: Path) -> None:
    file_as(tmp_path, "v.json", "1111111122223333", b"first")
    second = file_as(tmp_path, "v.json", "4444444455556666", b"second")
    assert folders.filed_name(tmp_path, "v.json", "4444444455556666", moving=False) == second
    (tmp_path / "w.json").write_bytes(b"moved before the crash, no report yet")
    assert folders.filed_name(tmp_path, "w.json", "7777777788889999", moving=False) == "w.json"


def test_a_report_name_taken_by_an_entry_is_not_replaced(tmp_path: Path) -> None:
    file_as(tmp_path, "v.json", "1111111122223333", b"first")
    report = (tmp_path / "v.json.report.json").read_bytes()
    assert folders.filed_name(tmp_path, "v.json.report.json", "4444444455556666", moving=True) != "v.json.report.json"
    assert (tmp_path / "v.json.report.json").read_bytes() == report
