"""Zip envelopes: entries extracted by basename; every unsafe or broken case fails the whole zip."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from sftpsms.archive import ZipContents, extract_zip
from sftpsms.errors import ErrorCode, FileRejected

BODY = b'{"Version": 7, "Contacts": [{"msisdn": "27831234567"}]}'


def make_zip(path: Path, entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def extract(path: Path, tmp_path: Path, *, size: int = 1000, entries: int = 10) -> ZipContents:
    return extract_zip(path, tmp_path / "out", max_entry_bytes=size, max_entries=entries)


def rejected(path: Path, tmp_path: Path, *, size: int = 1000, entries: int = 10) -> str:
    with pytest.raises(FileRejected) as caught:
        extract(path, tmp_path, size=size, entries=entries)
    assert caught.value.code == ErrorCode.CORRUPT
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []
    return caught.value.detail


def test_json_and_txt_entries_are_extracted_under_numbered_folders(tmp_path: Path) -> None:
    contents = extract(make_zip(tmp_path / "a.zip", {"one.json": BODY, "TWO.TXT": b"[]"}), tmp_path)
    out = tmp_path / "out"
    assert contents.entries[0].path == out / "1" / "one.json"
    assert contents.entries[1].path == out / "2" / "TWO.TXT"
    assert [e.path.read_bytes() for e in contents.entries] == [BODY, b"[]"]


def test_entry_names_are_basenames(tmp_path: Path) -> None:
    contents = extract(make_zip(tmp_path / "a.zip", {"dir/sub/one.json": BODY, "win\\two.txt": BODY}), tmp_path)
    assert [e.name for e in contents.entries] == ["one.json", "two.txt"]


def test_entry_size_is_the_extracted_byte_count(tmp_path: Path) -> None:
    contents = extract(make_zip(tmp_path / "a.zip", {"one.json": BODY}), tmp_path)
    assert contents.entries[0].size == len(BODY)


def test_other_extensions_directories_and_macos_metadata_are_skipped_and_listed(tmp_path: Path) -> None:
    path = make_zip(
        tmp_path / "a.zip",
        {"one.json": BODY, "readme.md": b"x", "dir/": b"", "__MACOSX/._one.json": b"\x00", ".hidden.json": b"{}"},
    )
    contents = extract(path, tmp_path)
    assert [e.name for e in contents.entries] == ["one.json"]
    assert contents.skipped == ("readme.md", "dir/", "__MACOSX/._one.json", ".hidden.json")


def test_crc_mismatch_fails_the_zip(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {"one.json": BODY}, zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    data[data.index(b"27831234567")] ^= 0x01  # inside the stored member's data, not its headers
    path.write_bytes(bytes(data))
    assert "CRC" in rejected(path, tmp_path)


def test_crc_mismatch_removes_entries_extracted_before_it(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {"good.json": b"{}", "bad.json": BODY}, zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    data[data.index(b"27831234567")] ^= 0x01
    path.write_bytes(bytes(data))
    rejected(path, tmp_path)
    assert not (tmp_path / "out" / "1").exists()


def test_not_a_zip_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "a.zip"
    path.write_bytes(b"PK\x03\x04 this is not really a zip")
    rejected(path, tmp_path)


def test_truncated_central_directory_is_corrupt(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {"one.json": BODY})
    path.write_bytes(path.read_bytes()[:-10])
    rejected(path, tmp_path)


@pytest.mark.parametrize(
    "name", ["../evil.json", "/etc/evil.json", "a/../../evil.json", "..\\evil.json", "a\\..\\evil.json", "\\evil.json", "C:\\evil.json", "c:evil.json"]
)
def test_unsafe_entry_paths_fail_the_zip(tmp_path: Path, name: str) -> None:
    assert "unsafe" in rejected(make_zip(tmp_path / "a.zip", {"ok.json": BODY, name: BODY}), tmp_path)


def test_unsafe_path_fails_even_for_an_entry_that_would_be_skipped(tmp_path: Path) -> None:
    assert "unsafe" in rejected(make_zip(tmp_path / "a.zip", {"ok.json": BODY, "../x.md": b"x"}), tmp_path)


def test_entry_over_the_limit_fails_the_zip(tmp_path: Path) -> None:
    assert "larger" in rejected(make_zip(tmp_path / "a.zip", {"big.json": b" " * 5000}), tmp_path, size=1000)


def test_entry_exactly_at_the_limit_is_extracted(tmp_path: Path) -> None:
    contents = extract(make_zip(tmp_path / "a.zip", {"edge.json": b" " * 1000}), tmp_path, size=1000)
    assert contents.entries[0].size == 1000


def test_lying_header_size_is_caught_while_copying(tmp_path: Path) -> None:
    # A bomb that claims to be small: the declared size says 10 bytes, the data inflates to 100 kB.
    path = make_zip(tmp_path / "a.zip", {"bomb.json": b"0" * 100_000})
    data = bytearray(path.read_bytes())
    declared = (100_000).to_bytes(4, "little")
    for at in (data.index(declared), data.rindex(declared)):  # local header and central directory
        data[at : at + 4] = (10).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    detail = rejected(path, tmp_path, size=1000)
    assert "larger" in detail or "damaged" in detail
    assert not (tmp_path / "out" / "1").exists()


def test_too_many_entries_fail_the_zip(tmp_path: Path) -> None:
    rejected(make_zip(tmp_path / "a.zip", {f"{n}.json": b"{}" for n in range(4)}), tmp_path, entries=3)


def test_same_basename_twice_fails_the_zip(tmp_path: Path) -> None:
    assert "unique" in rejected(make_zip(tmp_path / "a.zip", {"a/x.json": BODY, "b/x.json": BODY}), tmp_path)


def test_encrypted_entry_fails_the_zip(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {"one.json": BODY}, zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    # Set the "encrypted" bit in the local header and the central directory record alike.
    data[6] |= 0x01
    central = data.index(b"PK\x01\x02")
    data[central + 8] |= 0x01
    path.write_bytes(bytes(data))
    assert "encrypted" in rejected(path, tmp_path)


def test_zip_without_processable_entries_is_corrupt(tmp_path: Path) -> None:
    assert "no .txt or .json" in rejected(make_zip(tmp_path / "a.zip", {"notes.md": b"x"}), tmp_path)
