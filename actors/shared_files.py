"""Files that every node of a cluster reads from the shared data directory and one of them makes:
the SSH host key, the control panel's signing key. Made once, never replaced, never seen half-written."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def publish_once(path: Path, make: Callable[[], bytes]) -> bytes:
    """`path`'s bytes, made by `make()` (mode 0600) when it does not exist yet.

    Nodes starting at the same moment may each make one, but only one is ever published: written
    whole and synced under a name of its own, then linked to `path` (os.link never replaces, and is
    atomic on NFS too); whoever loses reads the winner's. A reader never sees a partial file."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    data = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return path.read_bytes()  # another node's, published first
    finally:
        temporary.unlink(missing_ok=True)
    return data
