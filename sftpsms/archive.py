"""Zip envelopes (PRODUCT.md §2, §3): each .txt/.json entry is extracted to become a file of its own."""

from __future__ import annotations

import re
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from sftpsms.errors import ErrorCode, FileRejected

PROCESSABLE_SUFFIXES = (".txt", ".json")
COPY_CHUNK_BYTES = 1 << 20
ENCRYPTED_FLAG = 0x1
_DRIVE = re.compile(r"[A-Za-z]:")
# What zipfile and its decompressors raise on a damaged archive or member (a CRC mismatch is a
# BadZipFile raised when the member has been read to its end).
_BROKEN = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, NotImplementedError, ValueError)


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


def extract_zip(path: Path, dest: Path, *, max_entry_bytes: int, max_entries: int) -> ZipContents:
    """Extract each .txt/.json entry (any case) to `dest/<n>/<basename>`, n counting from 1.

    Error handling: the whole zip fails with FileRejected(File.Corrupt) when it is not a zip or is
    damaged (a CRC mismatch included), has more than `max_entries` entries, an unsafe entry path, an
    encrypted entry, an entry over `max_entry_bytes` (counted while copying; the header's size is
    not trusted), two processable entries with one basename, or no processable entry at all (a zip
    is a file like any other, and one with nothing to read cannot be read: Corrupt, not EmptySend).

    Resource handling: on any failure every directory this call created under `dest` is removed.
    Directories, other extensions, dot-files and macOS `__MACOSX/` metadata are skipped and listed.
    """
    created: list[Path] = []
    done = False
    try:
        contents = _extract(path, dest, max_entry_bytes, max_entries, created)
        done = True
        return contents
    except _BROKEN as error:
        raise FileRejected(ErrorCode.CORRUPT, f"the zip is damaged: {error}") from None
    finally:
        if not done:
            for folder in created:
                shutil.rmtree(folder, ignore_errors=True)


def _extract(path: Path, dest: Path, max_entry_bytes: int, max_entries: int, created: list[Path]) -> ZipContents:
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        if len(infos) > max_entries:
            raise FileRejected(ErrorCode.CORRUPT, f"the zip has {len(infos)} entries, more than the limit of {max_entries}")
        chosen: list[tuple[str, zipfile.ZipInfo]] = []
        skipped: list[str] = []
        names: set[str] = set()
        # Every check before the first byte is written: a zip that fails costs no disk.
        for info in infos:
            if _is_unsafe(info.filename):
                raise FileRejected(ErrorCode.CORRUPT, f"entry {info.filename!r} has an unsafe path")
            if info.flag_bits & ENCRYPTED_FLAG:
                raise FileRejected(ErrorCode.CORRUPT, f"entry {info.filename!r} is encrypted")
            name = _basename(info.filename)
            if not _is_processable(info, name):
                skipped.append(info.filename)
                continue
            if name in names:
                raise FileRejected(ErrorCode.CORRUPT, f"two entries are named {name!r}; entry names must be unique")
            if info.file_size > max_entry_bytes:
                raise FileRejected(ErrorCode.CORRUPT, _too_big(info, max_entry_bytes))
            names.add(name)
            chosen.append((name, info))
        if not chosen:
            raise FileRejected(ErrorCode.CORRUPT, "the zip has no .txt or .json entry")
        entries = []
        for number, (name, info) in enumerate(chosen, start=1):
            folder = dest / str(number)
            folder.mkdir(parents=True)
            created.append(folder)
            target = folder / name
            entries.append(ZipEntry(name, target, _copy(archive, info, target, max_entry_bytes)))
    return ZipContents(tuple(entries), tuple(skipped))


def _copy(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, limit: int) -> int:
    size = 0
    with archive.open(info) as source, target.open("wb") as out:
        # Asking for one byte past what is left of the limit tells "exactly at" from "over"
        # without ever decompressing more than limit + 1 bytes of a bomb.
        while chunk := source.read(min(COPY_CHUNK_BYTES, limit - size + 1)):
            size += len(chunk)
            if size > limit:
                raise FileRejected(ErrorCode.CORRUPT, _too_big(info, limit))
            out.write(chunk)
    return size


def _is_unsafe(name: str) -> bool:
    # Backslashes count as separators: Windows tools write them and Windows extractors obey them.
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or bool(_DRIVE.match(name)) or ".." in parts or "\x00" in name


def _basename(name: str) -> str:
    return name.replace("\\", "/").rsplit("/", 1)[-1]


def _is_processable(info: zipfile.ZipInfo, name: str) -> bool:
    if info.is_dir() or not name or name.startswith("."):
        return False
    # macOS Archive Utility adds __MACOSX/._<name> resource forks next to every file.
    if info.filename.replace("\\", "/").startswith("__MACOSX/"):
        return False
    return name.lower().endswith(PROCESSABLE_SUFFIXES)


def _too_big(info: zipfile.ZipInfo, limit: int) -> str:
    return f"entry {info.filename!r} is larger than the limit of {limit} bytes"
