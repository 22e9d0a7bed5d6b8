"""The sweeper: every few seconds, picks up uploads left in Send_SMS (e.g. across a restart), and
files uploads cut off long ago as File.Corrupt; the same for Validate, whose uploads (and the
validations a stop or crash left in their working folders) go to the validator."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path

import trio

from actors.faults import log_failure
from actors.file import FileArrived, InFlight
from actors.session import validation_key
from actors.validator import left_over
from sftpsms import folders
from sftpsms.config import Settings
from sftpsms.names import BadName, quoted

log = logging.getLogger(__name__)


def scan(settings: Settings, folder: str = folders.SEND) -> list[tuple[str, str, Path, bool]]:
    """(account, name, path, incomplete-and-stale) for each candidate in every Send_SMS (or
    every Validate)."""
    found: list[tuple[str, str, Path, bool]] = []
    if not settings.accounts_dir.exists():
        return found
    now = time.time()
    for root in sorted(settings.accounts_dir.iterdir()):
        try:
            settings.account_root(root.name)
        except BadName:
            continue  # not an account's folder (a link): never processed
        send = root / folder
        if not send.is_dir():
            continue
        for path in sorted(send.iterdir()):
            if not path.is_file() or path.is_symlink() or not folders.is_allowed(path.name):
                continue
            marker = folders.incomplete_marker(root, path.name, folder)
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
    validations: trio.MemorySendChannel[FileArrived] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    with outbox, validations if validations is not None else nullcontext():
        while True:
            if validations is not None:
                await _sweep_validate(validations, settings=settings, in_flight=in_flight, clock=clock)
            try:
                candidates = await trio.to_thread.run_sync(scan, settings)
            except OSError:
                log_failure(log, "sweep failed")
                candidates = []
            for account, name, path, stale in candidates:
                if in_flight.claim(account, name):
                    if stale:
                        marker = folders.incomplete_marker(settings.account_root(account), name)
                        marker.unlink(missing_ok=True)
                    log.info("file=%s account=%s picked up by sweep%s", quoted(name), account, " (stale partial)" if stale else "")
                    await outbox.send(FileArrived(account, name, path, clock(), incomplete=stale))
            await trio.sleep(settings.sweep_interval)


def _scan_validate(settings: Settings) -> tuple[list[tuple[str, str, Path]], list[tuple[str, str, Path, bool]]]:
    return list(left_over(settings)), scan(settings, folders.VALIDATE)


async def _sweep_validate(
    validations: trio.MemorySendChannel[FileArrived],
    *,
    settings: Settings,
    in_flight: InFlight,
    clock: Callable[[], datetime],
) -> None:
    """Validations a stop or crash left unfinished first (their meta.json as the path), then the
    uploads waiting in Validate."""
    try:
        resumed, waiting = await trio.to_thread.run_sync(_scan_validate, settings)
    except OSError:
        log_failure(log, "sweep of Validate failed")
        return
    for account, name, meta in resumed:
        if in_flight.claim(account, validation_key(name)):
            await validations.send(FileArrived(account, name, meta, clock()))
    for account, name, path, stale in waiting:
        if in_flight.claim(account, validation_key(name)):
            if stale:
                folders.incomplete_marker(settings.account_root(account), name, folders.VALIDATE).unlink(missing_ok=True)
            log.info("file=%s account=%s picked up by sweep for validation%s", quoted(name), account, " (stale partial)" if stale else "")
            await validations.send(FileArrived(account, name, path, clock(), incomplete=stale))
