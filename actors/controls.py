"""Control files: an upload `<name>.cancel`, `<name>.pause` or `<name>.resume` into Send_SMS asks
that of the account's processed file `<name>` (issue 12), as `sftpsms files cancel|pause|resume`
does. The request is recorded (FileCancelled / FilePaused / FileResumed), the dispatcher honours it
(ControlApplied), the file's report is rewritten, and the control file is consumed: its answer is
`Processed/<name>.<action>.report.json` (`Errors/...` when refused), written before the control
file is removed, so a client that sees it gone finds the answer.
"""

from __future__ import annotations

import logging
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import trio

from eventstore import controls
from eventstore.domain import FileControl
from eventstore.store import SmsStore
from sftpsms import filing, folders
from sftpsms.config import Settings
from sftpsms.control import ControlRefused, control_name, outcome_text
from sftpsms.names import quoted
from sftpsms.report import write_json_atomically

log = logging.getLogger(__name__)

HONOUR_WAIT = 60.0  # seconds a control file waits for the dispatcher's ControlApplied
HONOUR_POLL = 0.05
PROCESSING_POLL = 0.2  # seconds between looks while the file a control file names is processed
SEND_GRACE = 5.0  # seconds a control file waits for its file to be picked up from Send_SMS


def refile_report(settings: Settings, store: SmsStore, file_id: UUID) -> Path | None:
    """Write a processed file's report again from its events (now with its control fields), where
    it was filed. None when its folder is gone."""
    from actors.file import file_report  # the report's one builder

    report = file_report(store, file_id)
    file = store.file(file_id)
    folder = settings.account_root(file.account) / folders.PROCESSED
    if report["status"] != "processed" or not folder.is_dir():
        return None
    filed = filing.filed_name(file.name)
    name = folders.outputs_name(folder, filed, str(file_id))
    if name != filed:
        report["filed_as"] = name
    path = folders.report_path(folder, name)
    write_json_atomically(path, report)
    return path


async def wait_honoured(store: SmsStore, file_id: UUID, version: int) -> FileControl:
    """The file's control once the dispatcher honoured the request at `version` (callers bound
    the wait: the request stays recorded and is honoured whenever a dispatcher can)."""
    while True:
        control = await trio.to_thread.run_sync(controls.file_control, store, file_id)
        if control is not None and control.applied >= version:
            return control
        await trio.sleep(HONOUR_POLL)


def answer(
    *,
    name: str,
    account: str,
    action: str,
    target: str,
    status: str,
    at: datetime,
    file_id: UUID | None = None,
    error_code: str | None = None,
    detail: str,
    control: FileControl | None = None,
) -> dict[str, Any]:
    """A control file's answer (docs/file-format.md, "Cancel, pause, resume")."""
    return {
        "file": name,
        "account": account,
        "action": action,
        "target": target,
        "file_id": None if file_id is None else str(file_id),
        "status": status,  # "done" | "pending" | "failed"
        "error_code": error_code,
        "detail": detail,
        "dispatch": None if control is None else control.state,
        "messages_cancelled": None if control is None else control.messages_cancelled,
        "credits_refunded": None if control is None else control.credits_refunded,
        "at": at.isoformat(),
    }


async def _request(store: Any, root: Path, target: str, action: str, *, account: str, now: datetime) -> Any:
    """Record the request. A control file uploaded right behind its file waits for the file's
    report: up to HONOUR_WAIT seconds while the file is processed, SEND_GRACE while it is still
    waiting in Send_SMS (this worker may be the one it waits for)."""
    started = trio.current_time()
    while True:
        try:
            return await store.run(
                partial(controls.request_control, account=account, name=target, action=action, via="control file", now=now)
            )
        except ControlRefused as refused:
            waited = trio.current_time() - started
            if refused.in_progress:
                if waited > HONOUR_WAIT:
                    raise
            elif waited > SEND_GRACE or not await trio.to_thread.run_sync((root / folders.SEND / target).exists):
                raise
        await trio.sleep(PROCESSING_POLL)


async def run_control_file(
    *, settings: Settings, store: Any, reader: SmsStore, account: str, name: str, path: Path, now: datetime
) -> dict[str, Any]:
    """Act on one control file and consume it; returns its answer. `store` is the writer's
    StoreClient (the request is a write), `reader` the store for waiting and the report."""
    parsed = control_name(name)
    assert parsed is not None, name
    root = settings.account_root(account)
    target, action = parsed.target, parsed.action
    try:
        request = await _request(store, root, target, action, account=account, now=now)
    except ControlRefused as refused:
        content = answer(
            name=name, account=account, action=action, target=target, status="failed", at=now,
            error_code=refused.code, detail=refused.detail,
        )
        folder = root / folders.ERRORS
    else:
        control: FileControl | None
        if request.version is None:
            control = await trio.to_thread.run_sync(controls.file_control, reader, request.file_id)
        else:
            control = None
            with trio.move_on_after(HONOUR_WAIT):
                control = await wait_honoured(reader, request.file_id, request.version)
        if control is None:
            status, detail = "pending", f"{action} recorded; the service honours it as soon as it can"
        else:
            status = "done"
            detail = outcome_text(
                action,
                name=target,
                done=request.version is not None,
                messages_cancelled=control.messages_cancelled,
                credits_refunded=control.credits_refunded,
            )
            await trio.to_thread.run_sync(refile_report, settings, reader, request.file_id)
        content = answer(
            name=name, account=account, action=action, target=target, status=status, at=now,
            file_id=request.file_id, detail=detail, control=control,
        )
        folder = root / folders.PROCESSED

    def consume() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomically(folders.report_path(folder, name), content)
        path.unlink(missing_ok=True)

    await trio.to_thread.run_sync(consume)
    log.info(
        "control=%s account=%s action=%s target=%s status=%s code=%s",
        quoted(name), account, action, quoted(target), content["status"], content["error_code"],
    )
    return content
