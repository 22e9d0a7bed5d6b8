"""Zip envelopes (PRODUCT.md §3): each .txt/.json entry becomes a file of its own.

The whole zip fails as File.Corrupt for a broken archive, a CRC mismatch, an unsafe entry path,
an entry over the size limit (enforced while extracting: header sizes are not trusted), too many
entries, two entries with one name, an encrypted entry, or no processable entry at all.
"""

from __future__ import annotations

import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from sftpsms.errors import ErrorCode, FileRejected

PROCESSABLE = (".txt", ".json")
CHUNK = 1 << 20


@dataclass(frozen=True)
class ZipEntry:
    name: str
    path: Path
    size: int


@dataclass(frozen=True)
class ZipContents:
    entries: list[ZipEntry]
    skipped: list[str]


def _unsafe(name: str) -> bool:
    if name.startswith(("/", "\\")) or PureWindowsPath(name).drive:
        return True
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return ".." in parts


def extract_zip(path: Path, dest: Path, *, max_entry_bytes: int, max_entries: int) -> ZipContents:
    try:
        return _extract(path, dest, max_entry_bytes=max_entry_bytes, max_entries=max_entries)
    except FileRejected:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError, RuntimeError) as error:
        shutil.rmtree(dest, ignore_errors=True)
        raise FileRejected(ErrorCode.CORRUPT, f"broken zip: {error}") from None


def _extract(path: Path, dest: Path, *, max_entry_bytes: int, max_entries: int) -> ZipContents:
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        if len(infos) > max_entries:
            raise FileRejected(ErrorCode.CORRUPT, f"the zip has {len(infos)} entries, more than {max_entries}")
        entries: list[ZipEntry] = []
        skipped: list[str] = []
        seen: set[str] = set()
        for info in infos:
            if _unsafe(info.filename):
                raise FileRejected(ErrorCode.CORRUPT, f"unsafe entry path {info.filename!r}")
            if info.is_dir():
                continue
            name = PurePosixPath(info.filename.replace("\\", "/")).name
            if not name.lower().endswith(PROCESSABLE):
                skipped.append(info.filename)
                continue
            if info.flag_bits & 0x1:
                raise FileRejected(ErrorCode.CORRUPT, f"entry {info.filename!r} is encrypted")
            if name in seen:
                raise FileRejected(ErrorCode.CORRUPT, f"two entries are named {name!r}")
            seen.add(name)
            target = dest / str(len(entries)) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            size = 0
            with archive.open(info) as source, target.open("wb") as out:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if size > max_entry_bytes:
                        raise FileRejected(
                            ErrorCode.CORRUPT, f"entry {info.filename!r} is larger than {max_entry_bytes} bytes"
                        )
                    out.write(chunk)
            entries.append(ZipEntry(name, target, size))
    if not entries:
        raise FileRejected(ErrorCode.CORRUPT, "the zip has no .txt or .json entry")
    return ZipContents(entries, skipped)
