"""Zip envelopes: entries extracted as files; every unsafe or broken case fails the whole zip."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from sftpsms.archive import extract_zip
from sftpsms.errors import ErrorCode, FileRejected


def make_zip(path: Path, entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def extract(path: Path, tmp_path: Path, **limits: int) -> object:
    return extract_zip(path, tmp_path / "out", max_entry_bytes=limits.get("size", 1000), max_entries=limits.get("entries", 10))


def rejected(path: Path, tmp_path: Path, **limits: int) -> str:
    with pytest.raises(FileRejected) as caught:
        extract(path, tmp_path, **limits)
    assert caught.value.code == ErrorCode.CORRUPT
    assert not (tmp_path / "out").exists()
    return caught.value.detail


def test_json_and_txt_entries_are_extracted_by_basename(tmp_path: Path) -> None:
    contents = extract(make_zip(tmp_path / "a.zip", {"dir/one.json": b"{}", "TWO.TXT": b"[]", "readme.md": b"x"}), tmp_path)
    assert [(e.name, e.path.read_bytes()) for e in contents.entries] == [("one.json", b"{}"), ("TWO.TXT", b"[]")]  # type: ignore[attr-defined]
    assert contents.skipped == ["readme.md"]  # type: ignore[attr-defined]


def test_crc_mismatch_fails_the_zip(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {"one.json": b'{"Version": 7, "Contacts": []}'}, zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    at = data.index(b'"Version"')
    data[at + 1] ^= 0x01
    path.write_bytes(bytes(data))
    assert "CRC" in rejected(path, tmp_path) or "Bad" in rejected(path, tmp_path)


def test_not_a_zip_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(b"PK\x03\x04 nope")
    rejected(path, tmp_path)


@pytest.mark.parametrize("name", ["../evil.json", "/etc/evil.json", "a/../../evil.json", "..\\evil.json", "C:\\evil.json"])
def test_unsafe_entry_paths_fail_the_zip(tmp_path: Path, name: str) -> None:
    assert "unsafe" in rejected(make_zip(tmp_path / "a.zip", {name: b"{}"}), tmp_path)


def test_entry_over_the_limit_fails_while_extracting(tmp_path: Path) -> None:
    assert "larger" in rejected(make_zip(tmp_path / "a.zip", {"big.json": b" " * 5000}), tmp_path, size=1000)


def test_too_many_entries_fail_the_zip(tmp_path: Path) -> None:
    rejected(make_zip(tmp_path / "a.zip", {f"{n}.json": b"{}" for n in range(4)}), tmp_path, entries=3)


def test_same_basename_twice_fails_the_zip(tmp_path: Path) -> None:
    assert "two entries" in rejected(make_zip(tmp_path / "a.zip", {"a/x.json": b"{}", "b/x.json": b"{}"}), tmp_path)


def test_zip_without_processable_entries_is_corrupt(tmp_path: Path) -> None:
    rejected(make_zip(tmp_path / "a.zip", {"notes.md": b"x"}), tmp_path)
