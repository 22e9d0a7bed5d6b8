"""Zip envelopes: entries extracted by basename; every unsafe or broken case fails the whole zip."""

from __future__ import annotations

import struct
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from sftpsms import filing
from sftpsms.archive import ZipContents, extract_zip
from sftpsms.errors import ErrorCode, FileRejected
from sftpsms.limits import Limits

BODY = b'{"Version": 7, "Contacts": [{"msisdn": "27831234567"}]}'


def make_zip(path: Path, entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def extract(path: Path, tmp_path: Path, *, size: int = 1000, entries: int = 10) -> ZipContents:
    return extract_zip(path, tmp_path / "out", Limits(max_entry_bytes=size, max_zip_entries=entries))


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


# ---- limits (PRODUCT.md §7) and malformed archives ----------------------------------------


def rejected_with(path: Path, tmp_path: Path, limits: Limits, *, account_bytes: int = 0) -> str:
    with pytest.raises(FileRejected) as caught:
        extract_zip(path, tmp_path / "out", limits, account_bytes=account_bytes)
    assert caught.value.code == ErrorCode.CORRUPT
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == []
    assert caught.value.detail and not caught.value.detail.rstrip().endswith(":")
    return caught.value.detail


def patch_central(path: Path, field: int, fmt: str, value: int, *, local: int | None = None) -> None:
    """Overwrite a field of the first central-directory record (and of the local header at `local`)."""
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    size = struct.calcsize(fmt)
    data[central + field : central + field + size] = struct.pack(fmt, value)
    if local is not None:
        data[local : local + size] = struct.pack(fmt, value)
    path.write_bytes(bytes(data))


def test_a_wrong_central_directory_offset_is_corrupt_not_an_internal_error(tmp_path: Path) -> None:
    # The end record says the directory starts 1000 bytes later than it does: zipfile then seeks
    # each member to a negative offset (OSError EINVAL), which used to escape as InternalServerError.
    path = make_zip(tmp_path / "a.zip", {"one.json": BODY})
    data = bytearray(path.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    offset = struct.unpack("<I", data[end + 16 : end + 20])[0]
    data[end + 16 : end + 20] = struct.pack("<I", offset + 1000)
    path.write_bytes(bytes(data))
    assert "damaged" in rejected_with(path, tmp_path, Limits())


def test_an_archive_that_ends_inside_a_member_says_so(tmp_path: Path) -> None:
    # Sizes that run past the end of the file: zipfile raises a bare EOFError, once an empty detail.
    path = make_zip(tmp_path / "a.zip", {"one.json": BODY * 20}, zipfile.ZIP_STORED)
    for field in (20, 24):  # compressed and uncompressed sizes, central directory and local header
        patch_central(path, field, "<I", 5000, local=field - 2)
    assert "ends early" in rejected_with(path, tmp_path, Limits())


@pytest.mark.parametrize("name", ["bad\x01name.json", "tab\there.json", "del\x7f.json", "dir/new\nline.json"])
def test_control_characters_in_an_entry_name_fail_the_zip(tmp_path: Path, name: str) -> None:
    assert "unsafe name" in rejected_with(make_zip(tmp_path / "a.zip", {"ok.json": BODY, name: BODY}), tmp_path, Limits())


def test_a_nul_in_an_entry_name_fails_the_zip(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {"nulX.json": BODY})
    path.write_bytes(path.read_bytes().replace(b"nulX.json", b"nul\x00.json"))  # zipfile cannot write one
    assert "unsafe name" in rejected_with(path, tmp_path, Limits())


def test_an_entry_name_is_refused_exactly_past_the_longest_name_that_is_filed_as_it_is(tmp_path: Path) -> None:
    longest = "a" * (filing.MAX_FILED_BYTES - len(".json")) + ".json"
    assert filing.filed_name(longest) == longest
    extract_zip(make_zip(tmp_path / "ok.zip", {longest: BODY}), tmp_path / "ok", Limits())
    detail = rejected_with(make_zip(tmp_path / "long.zip", {"a" + longest: BODY}), tmp_path, Limits())
    assert "unsafe name" in detail


def test_an_entry_name_over_255_bytes_fails_the_zip(tmp_path: Path) -> None:
    name = "é" * 126 + ".json"  # 257 bytes in UTF-8, 131 characters
    detail = rejected_with(make_zip(tmp_path / "a.zip", {name: BODY}), tmp_path, Limits())
    assert f"over {filing.MAX_FILED_BYTES} bytes" in detail


def test_a_zip_inside_a_zip_fails_the_zip(tmp_path: Path) -> None:
    inner = make_zip(tmp_path / "inner.zip", {"one.json": BODY}).read_bytes()
    path = make_zip(tmp_path / "a.zip", {"ok.json": BODY, "sub/inner.ZIP": inner})
    assert "zip inside a zip" in rejected_with(path, tmp_path, Limits())


def test_entries_over_the_total_limit_fail_before_anything_is_written(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {f"{n}.json": b" " * 400 for n in range(3)})
    detail = rejected_with(path, tmp_path, Limits(max_zip_bytes=1000))
    assert "max_zip_bytes" in detail


def test_entries_exactly_at_the_total_limit_are_extracted(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {f"{n}.json": b" " * 500 for n in range(2)})
    assert len(extract_zip(path, tmp_path / "out", Limits(max_zip_bytes=1000)).entries) == 2


def test_declared_sizes_that_lie_are_caught_against_the_total_while_inflating(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {"a.json": b"0" * 3000, "b.json": b"0" * 3000})
    data = bytearray(path.read_bytes())
    declared = (3000).to_bytes(4, "little")
    while declared in data:  # every header claims 10 bytes
        at = data.index(declared)
        data[at : at + 4] = (10).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    detail = rejected_with(path, tmp_path, Limits(max_zip_bytes=4000))
    assert "max_zip_bytes" in detail or "damaged" in detail


def test_an_entry_that_expands_too_many_times_fails_the_zip(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {"bomb.json": b" " * (4 << 20)})  # about 1000 to 1
    assert "max_zip_ratio" in rejected_with(path, tmp_path, Limits())


def test_a_small_entry_may_compress_well(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {"spaces.json": b" " * 100_000})
    assert extract_zip(path, tmp_path / "out").entries[0].size == 100_000


def test_an_account_near_its_allowance_cannot_expand_a_zip(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {"one.json": b" " * 600})
    detail = rejected_with(path, tmp_path, Limits(max_account_unzip_bytes=1000), account_bytes=500)
    assert "max_account_unzip_bytes" in detail
    assert extract_zip(path, tmp_path / "out", Limits(max_account_unzip_bytes=1000), account_bytes=400).entries


def test_a_zip_over_the_file_size_limit_fails_unopened(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {"one.json": BODY})
    assert "max_file_bytes" in rejected_with(path, tmp_path, Limits(max_file_bytes=10))


def test_a_full_disk_while_extracting_is_not_called_corrupt(tmp_path: Path) -> None:
    # Our own write failing is not the customer's archive being broken: it must not be File.Corrupt.
    path = make_zip(tmp_path / "a.zip", {"one.json": BODY})
    (tmp_path / "out").write_bytes(b"a file where the folder should be")
    with pytest.raises(OSError):
        extract_zip(path, tmp_path / "out")


def test_a_directory_of_too_many_records_is_refused_before_zipfile_reads_it(tmp_path: Path) -> None:
    # The end record under-counts (says 5); the directory itself holds 20 000 records, which
    # zipfile would turn into 20 000 objects before anyone could count them.
    path = make_zip(tmp_path / "a.zip", {f"{n}": b"" for n in range(20_000)}, zipfile.ZIP_STORED)
    data = bytearray(path.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    data[end + 8 : end + 12] = struct.pack("<HH", 5, 5)  # entries on this disk, entries in total
    path.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        detail = rejected_with(path, tmp_path, Limits())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "directory" in detail and "max_zip_entries" in detail
    assert peak < 2 << 20


def test_an_end_record_counting_too_many_entries_is_refused_at_once(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {"one.json": BODY})
    data = bytearray(path.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    data[end + 8 : end + 12] = struct.pack("<HH", 60_000, 60_000)
    path.write_bytes(bytes(data))
    assert "max_zip_entries" in rejected_with(path, tmp_path, Limits())


def test_an_lzma_entry_is_refused_before_its_dictionary_is_allocated(tmp_path: Path) -> None:
    path = make_zip(tmp_path / "a.zip", {"one.json": BODY}, zipfile.ZIP_LZMA)
    assert "only stored, deflate, bzip2 can be read" in rejected_with(path, tmp_path, Limits())


def test_a_bzip2_entry_is_read(tmp_path: Path) -> None:
    contents = extract_zip(make_zip(tmp_path / "a.zip", {"one.json": BODY}, zipfile.ZIP_BZIP2), tmp_path / "out")
    assert contents.entries[0].path.read_bytes() == BODY


@pytest.mark.parametrize(("method", "offset", "value"), [(zipfile.ZIP_BZIP2, 2, 0), (zipfile.ZIP_DEFLATED, 0, 0xFF)])
def test_damaged_compressed_data_is_corrupt_whatever_the_method(tmp_path: Path, method: int, offset: int, value: int) -> None:
    # bz2 raises OSError on a damaged stream, zlib its own error.
    path = make_zip(tmp_path / "a.zip", {"one.json": BODY * 50}, method)
    data = bytearray(path.read_bytes())
    data[30 + len("one.json") + offset] = value  # in the member's data, after its local header
    path.write_bytes(bytes(data))
    assert "damaged" in rejected_with(path, tmp_path, Limits())
