"""The names under which a file and its outputs are filed: ones every filesystem path can hold.

A name comes from the customer (or from a store written by an older version): it may be too long
for the report beside it (`<name>.report.json`, `.<name>.delivery.csv.tmp`), hold a NUL or a `/`,
or be `.`/`..`. Such a name is filed under a safe one instead: its printable start, a `~` and a
hash of the whole name (so two names never meet), and its suffix; the report says so.
"""

from __future__ import annotations

import hashlib
import os

NAME_MAX = 255  # bytes of one path component (Linux, macOS, most filesystems)
# The longest things ever added to a filed name: `.<file id>` when an earlier file's outputs hold
# the name (folders.filed_name), then the delivery CSV's temporary file. 255 - 55 = 200, the
# longest name the doors accept (folders.MAX_UPLOAD_NAME_BYTES).
LONGEST_ADDITION = len(".") + 36 + len(".") + len(".delivery.csv.tmp")
MAX_FILED_BYTES = NAME_MAX - LONGEST_ADDITION
SUFFIXES = (".json", ".txt", ".zip")
HASH_CHARS = 12


def _encoded(name: str) -> bytes | None:
    try:
        return os.fsencode(name)
    except (UnicodeError, ValueError):
        return None


def is_fileable(name: str) -> bool:
    """Whether `name` and every output named after it fit in a folder as they are."""
    encoded = _encoded(name)
    return (
        encoded is not None
        and 0 < len(encoded) <= MAX_FILED_BYTES
        and name not in (".", "..")
        and not name.startswith(".")
        and not any(c in name for c in "/\\\0")
        and all(c.isprintable() for c in name)
    )


def filed_name(name: str) -> str:
    """`name` if it is fileable, else a safe name that keeps its start and suffix and is unique
    to it (pure: the same name always gives the same safe name)."""
    if is_fileable(name):
        return name
    suffix = next((s for s in SUFFIXES if name.lower().endswith(s)), "")
    stem = name[: len(name) - len(suffix)] if suffix else name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
    cleaned = "".join(c if c.isprintable() and c not in "/\\\0" else "_" for c in stem).lstrip(".")
    room = MAX_FILED_BYTES - len(suffix) - 1 - HASH_CHARS
    kept = cleaned.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
    return f"{kept}~{digest}{suffix}"
