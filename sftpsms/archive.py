"""Zip envelopes (PRODUCT.md §2, §3, §7): each .txt/.json entry is extracted to become a file of its own."""

from __future__ import annotations

import lzma
import re
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, TypeVar

from sftpsms import filing
from sftpsms.errors import ErrorCode, FileRejected
from sftpsms.limits import DEFAULT_LIMITS, Limits

PROCESSABLE_SUFFIXES = (".txt", ".json")
# What zip tools write for text (deflate nearly always). LZMA is refused: its stream names its own
# dictionary size, up to 4 GiB, which the decompressor allocates; deflate64 zipfile cannot read.
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate", zipfile.ZIP_BZIP2: "bzip2"}
ARCHIVE_SUFFIXES = (".zip",)  # an entry that is itself an archive fails the zip (no nesting)
COPY_CHUNK_BYTES = 1 << 20
ENCRYPTED_FLAG = 0x1
# What an entry's name may take: a file name is at most 255 bytes on the filesystems we file
# into, and the entry's outputs must fit too, written atomically through a temporary name
# (`.<name>.delivery.csv.tmp`, the longest; `.<name>.report.json.tmp`).
MAX_NAME_BYTES = filing.MAX_FILED_BYTES  # the longest name filed as it is, the doors' own bound too
# Below this an entry cannot hurt whatever its compression ratio (a few spaces compress 100 times).
RATIO_FREE_BYTES = 1 << 20
# What one central-directory record may take: its fixed part, a 255-byte name, and generous room
# for extra fields and a comment. zipfile builds an object per record before anyone can count
# them, so the directory's size is bounded by max_zip_entries records of this size beforehand.
MAX_RECORD_BYTES = 46 + filing.NAME_MAX + 2048
_DRIVE = re.compile(r"[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What zipfile and its decompressors raise on a malformed archive or member (a CRC mismatch is a
# BadZipFile raised when the member has been read to its end; a wrong central-directory offset
# makes it seek before the file's start: OSError(EINVAL); bz2 raises OSError, lzma LZMAError (not
# an OSError); a bad header field, struct.error or OverflowError; an encryption flag set in the
# local header only, RuntimeError). Only reads of the archive are
# wrapped in these: an OSError of our own writes (a full disk) is not the customer's fault.
_BROKEN = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    lzma.LZMAError,
    RuntimeError,
    EOFError,
    NotImplementedError,
    ValueError,
    OSError,
    struct.error,
    OverflowError,
    KeyError,
    IndexError,
)
T = TypeVar("T")


@dataclass(frozen=True)
class ZipEntry:
    """One extracted entry: `name` is its basename (what the account sees), `path` the copy."""

    name: str
    path: Path
    size: int


@dataclass(frozen=True)
class ZipContents:
    """The extracted entries in archive order, and the names of the entries that were skipped."""

    entries: tuple[ZipEntry, ...]
    skipped: tuple[str, ...]


def extract_zip(path: Path, dest: Path, limits: Limits = DEFAULT_LIMITS, *, account_bytes: int = 0) -> ZipContents:
    """Extract each .txt/.json entry (any case) to `dest/<n>/<basename>`, n counting from 1.

    `account_bytes` is what the account's folders hold already: with what the zip expands to it
    must stay within limits.max_account_unzip_bytes.

    Error handling: the whole zip fails with FileRejected(File.Corrupt), its detail naming the
    limit where one is passed, when it is over max_file_bytes, not a zip or malformed in any way
    zipfile can tell (a CRC mismatch included), has more than max_zip_entries entries, an unsafe
    entry name (absolute, `..`, NUL or control characters, a name over 255 bytes), an encrypted
    entry, a zip entry (no nesting), an entry over max_entry_bytes or max_zip_ratio, entries over
    max_zip_bytes or the account's allowance in total, two processable entries with one basename,
    or no processable entry at all (a zip is a file like any other, and one with nothing to read
    cannot be read: Corrupt, not EmptySend). Every check of the directory is made before the
    first byte is written; sizes and ratios are checked again on the bytes actually inflated (the
    directory's sizes are not trusted), stopping one chunk past a limit.

    Resource handling: on any failure every directory this call created under `dest` is removed.
    Directories, other extensions, dot-files and macOS `__MACOSX/` metadata are skipped and listed.
    """
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        raise FileRejected(
            ErrorCode.CORRUPT, f"the zip is {size} bytes, over the limit of {limits.max_file_bytes} bytes (max_file_bytes)"
        )
    created: list[Path] = []
    done = False
    try:
        contents = _extract(path, dest, limits, account_bytes, created)
        done = True
        return contents
    finally:
        if not done:
            for folder in created:
                shutil.rmtree(folder, ignore_errors=True)


def _reading(what: str, read: Callable[[], T]) -> T:
    """`read()`, with whatever a malformed archive makes zipfile raise as File.Corrupt."""
    try:
        return read()
    except _BROKEN as error:
        # Some are raised bare: EOFError when the archive ends inside a member's data.
        reason = str(error) or ("its data ends early" if isinstance(error, EOFError) else type(error).__name__)
        raise FileRejected(ErrorCode.CORRUPT, f"the zip is damaged ({what}): {reason}") from None


def _check_directory(path: Path, limits: Limits) -> None:
    """The end record's entry count and directory size, before zipfile reads the directory."""
    with path.open("rb") as data:
        # zipfile's own end-record reader (zip64 included); private, but the exact reading that
        # ZipFile() will make next.
        end = _reading("its end record", lambda: zipfile._EndRecData(data))  # type: ignore[attr-defined]
    if not end:
        raise FileRejected(ErrorCode.CORRUPT, "the file is not a zip (it has no end of central directory record)")
    entries, size = int(end[zipfile._ECD_ENTRIES_TOTAL]), int(end[zipfile._ECD_SIZE])  # type: ignore[attr-defined]
    if entries > limits.max_zip_entries:
        raise _too_many_entries(entries, limits)
    if size > limits.max_zip_entries * MAX_RECORD_BYTES:
        raise FileRejected(
            ErrorCode.CORRUPT,
            f"the zip's directory is {size} bytes, more than {limits.max_zip_entries} entries need (max_zip_entries)",
        )


def _too_many_entries(entries: int, limits: Limits) -> FileRejected:
    return FileRejected(
        ErrorCode.CORRUPT, f"the zip has {entries} entries, over the limit of {limits.max_zip_entries} (max_zip_entries)"
    )


def _extract(path: Path, dest: Path, limits: Limits, account_bytes: int, created: list[Path]) -> ZipContents:
    _check_directory(path, limits)
    with _reading("its directory", lambda: zipfile.ZipFile(path)) as archive:
        infos = archive.infolist()
        if len(infos) > limits.max_zip_entries:  # the end record may under-count
            raise _too_many_entries(len(infos), limits)
        archive_bytes = path.stat().st_size
        budget, budget_name = _budget(limits, account_bytes)
        chosen: list[tuple[str, zipfile.ZipInfo]] = []
        skipped: list[str] = []
        names: set[str] = set()
        declared = 0
        # Every check before the first byte is written: a zip that fails costs no disk.
        for info in infos:
            _check_name(info.orig_filename)  # zipfile cuts `filename` at a NUL; the original keeps it
            if info.flag_bits & ENCRYPTED_FLAG:
                raise FileRejected(ErrorCode.CORRUPT, f"entry {info.filename!r} is encrypted")
            name = _basename(info.filename)
            if name.lower().endswith(ARCHIVE_SUFFIXES) and not info.is_dir():
                raise FileRejected(ErrorCode.CORRUPT, f"entry {info.filename!r} is an archive: a zip inside a zip is not read")
            if not _is_processable(info, name):
                skipped.append(info.filename)
                continue
            if name in names:
                raise FileRejected(ErrorCode.CORRUPT, f"two entries are named {name!r}; entry names must be unique")
            if info.compress_type not in METHODS:
                raise FileRejected(
                    ErrorCode.CORRUPT,
                    f"entry {info.filename!r} is compressed with method {info.compress_type}; "
                    f"only {', '.join(METHODS.values())} can be read",
                )
            _check_size(info, info.file_size, limits, archive_bytes)
            declared += info.file_size
            if declared > budget:
                raise FileRejected(ErrorCode.CORRUPT, _over_budget(declared, budget, budget_name))
            names.add(name)
            chosen.append((name, info))
        if not chosen:
            raise FileRejected(ErrorCode.CORRUPT, "the zip has no .txt or .json entry")
        entries = []
        total = 0
        for number, (name, info) in enumerate(chosen, start=1):
            folder = dest / str(number)
            folder.mkdir(parents=True)
            created.append(folder)
            target = folder / name
            size = _copy(archive, info, target, limits, archive_bytes, budget - total, budget_name)
            total += size
            entries.append(ZipEntry(name, target, size))
    return ZipContents(tuple(entries), tuple(skipped))


def _budget(limits: Limits, account_bytes: int) -> tuple[int, str]:
    allowance = limits.max_account_unzip_bytes - account_bytes
    if allowance < limits.max_zip_bytes:
        return max(allowance, 0), "max_account_unzip_bytes"
    return limits.max_zip_bytes, "max_zip_bytes"


def _over_budget(total: int, budget: int, name: str) -> str:
    if name == "max_zip_bytes":
        return f"the zip's entries expand to more than {budget} bytes, the limit (max_zip_bytes)"
    return f"the zip's entries would take the account's folders past the limit of its allowance, {budget} bytes left ({name})"


def _check_size(info: zipfile.ZipInfo, size: int, limits: Limits, archive_bytes: int) -> None:
    if size > limits.max_entry_bytes:
        raise FileRejected(
            ErrorCode.CORRUPT,
            f"entry {info.filename!r} is larger than the limit of {limits.max_entry_bytes} bytes (max_entry_bytes)",
        )
    # The directory's compressed size may lie too; what zipfile reads of it is within the archive.
    compressed = max(1, min(info.compress_size, archive_bytes))
    if size > RATIO_FREE_BYTES and size > limits.max_zip_ratio * compressed:
        raise FileRejected(
            ErrorCode.CORRUPT,
            f"entry {info.filename!r} expands more than {limits.max_zip_ratio} times, the limit (max_zip_ratio)",
        )


def _copy(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    target: Path,
    limits: Limits,
    archive_bytes: int,
    budget: int,
    budget_name: str,
) -> int:
    size = 0
    what = f"entry {info.filename!r}"
    source: IO[bytes] = _reading(what, lambda: archive.open(info))
    with source, target.open("wb") as out:
        # Asking for one byte past what is left of the tightest limit tells "exactly at" from
        # "over" without ever inflating more than that of a bomb.
        room = min(limits.max_entry_bytes, budget)
        while chunk := _reading(what, partial(source.read, min(COPY_CHUNK_BYTES, room - size + 1))):
            size += len(chunk)
            _check_size(info, size, limits, archive_bytes)
            if size > budget:
                raise FileRejected(ErrorCode.CORRUPT, _over_budget(size, budget, budget_name))
            out.write(chunk)
    return size


def _check_name(name: str) -> None:
    """An entry's name is unsafe when it could reach outside its folder or cannot be a file name:
    absolute (`/`, `\\`, a drive), `..` as a part, NUL or control characters, a basename over
    MAX_NAME_BYTES (255 less room for its outputs' suffixes). Folders inside the zip are allowed
    (the entry is filed by its basename)."""
    # Backslashes count as separators: Windows tools write them and Windows extractors obey them.
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or _DRIVE.match(name) or ".." in parts:
        raise FileRejected(ErrorCode.CORRUPT, f"entry {name!r} has an unsafe path")
    if _CONTROL.search(name):
        raise FileRejected(ErrorCode.CORRUPT, f"entry {name!r} has an unsafe name (a NUL or control character)")
    if len(_basename(name).encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise FileRejected(ErrorCode.CORRUPT, f"entry {name[:64]!r}... has an unsafe name (over {MAX_NAME_BYTES} bytes)")


def _basename(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1]


def _is_processable(info: zipfile.ZipInfo, name: str) -> bool:
    if info.is_dir() or not name or name.startswith("."):
        return False
    # macOS Archive Utility adds __MACOSX/._<name> resource forks next to every file.
    if info.filename.replace("\\", "/").startswith("__MACOSX/"):
        return False
    return name.lower().endswith(PROCESSABLE_SUFFIXES)
