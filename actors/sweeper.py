"""The sweeper: every few seconds, picks up uploads left in Send_SMS (e.g. across a restart), and
files uploads cut off long ago as File.Corrupt."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import trio

from actors.file import FileArrived, InFlight
from sftpsms import folders
from sftpsms.config import Settings
from sftpsms.names import BadName, quoted

log = logging.getLogger(__name__)


def scan(settings: Settings) -> list[tuple[str, str, Path, bool]]:
    """(account, name, path, incomplete-and-stale) for each candidate in every Send_SMS."""
    found: list[tuple[str, str, Path, bool]] = []
    if not settings.accounts_dir.exists():
        return found
    now = time.time()
    for root in sorted(settings.accounts_dir.iterdir()):
        try:
            settings.account_root(root.name)
        except BadName:
            continue  # not an account's folder (a link): never processed
        send = root / folders.SEND
        if not send.is_dir():
            continue
        for path in sorted(send.iterdir()):
            if not path.is_file() or path.is_symlink() or not folders.is_allowed(path.name):
                continue
            marker = folders.incomplete_marker(root, path.name)
            if marker.exists():
                try:
                    age = now - marker.stat().st_mtime
                except FileNotFoundError:
                    continue  # the upload just completed
                if age >= settings.incomplete_upload_timeout:
                    found.append((root.name, path.name, path, True))
                continue  # open, or cut off: never processed (PRODUCT.md §2)
            found.append((root.name, path.name, path, False))
    return found


async def run_sweeper(
    outbox: trio.MemorySendChannel[FileArrived],
    *,
    settings: Settings,
    in_flight: InFlight,
    clock: Callable[[], datetime],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    with outbox:
        while True:
            try:
                candidates = await trio.to_thread.run_sync(scan, settings)
            except OSError:
                log.exception("sweep failed")
                candidates = []
            for account, name, path, stale in candidates:
                if in_flight.claim(account, name):
                    if stale:
                        marker = folders.incomplete_marker(settings.account_root(account), name)
                        marker.unlink(missing_ok=True)
                    log.info("file=%s account=%s picked up by sweep%s", quoted(name), account, " (stale partial)" if stale else "")
                    await outbox.send(FileArrived(account, name, path, clock(), incomplete=stale))
            await trio.sleep(settings.sweep_interval)
