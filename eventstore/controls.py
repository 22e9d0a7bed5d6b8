"""The store's intents for cancel, pause and resume (issue 12): record a request, read a file's
control, record that the dispatcher honoured one. Rules are sftpsms.control's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from eventstore.domain import File, FileControl, FileName, file_control_id, file_id, file_name_id
from eventstore.store import SmsStore
from sftpsms.control import check_request, unknown_file


@dataclass(frozen=True)
class ControlRequest:
    """A request as recorded: `version` is the FileControl version to wait for (None when the
    file was already so and nothing was recorded)."""

    file_id: UUID
    account: str
    name: str
    action: str
    version: int | None
    state: str


def processed_file(store: SmsStore, account: str, name: str) -> File:
    """The latest processed upload of `name` for the account. Raises ControlRefused
    (Control.UnknownFile) for a name it has none of, saying why (unknown, in progress, failed)."""
    try:
        receipts = store.get(FileName, file_name_id(account, name)).receipts
    except AggregateNotFoundError:
        raise unknown_file(name, account) from None
    latest: File | None = None
    for receipt in range(receipts, 0, -1):
        try:
            file = store.file(file_id(account, name, receipt))
        except AggregateNotFoundError:
            continue
        latest = latest or file
        if file.status == "completed" and file.outcome == "processed":
            return file
    raise unknown_file(name, account, latest.status if latest is not None and latest.status != "completed" else "failed")


def file_control(store: SmsStore, file: UUID) -> FileControl | None:
    try:
        return store.get(FileControl, file_control_id(file))
    except AggregateNotFoundError:
        return None


def request_control(store: SmsStore, account: str, name: str, action: str, *, via: str, now: datetime) -> ControlRequest:
    """Record `action` on the account's processed file `name` (FileCancelled / FilePaused /
    FileResumed). Raises ControlRefused when the file or its state does not allow it."""

    def command() -> ControlRequest:
        file = processed_file(store, account, name)
        control = file_control(store, file.id) or FileControl.start(file=file.id, account=account, name=name)
        if not check_request(action, control.state, name=name):
            return ControlRequest(file.id, account, name, action, None, control.state)
        version = control.request(action, via=via, at=now.isoformat())
        store.save(control)
        return ControlRequest(file.id, account, name, action, version, control.state)

    return store._retrying(command)


def record_applied(
    store: SmsStore,
    file: UUID,
    *,
    action: str,
    requested_version: int,
    messages_cancelled: int = 0,
    credits_refunded: int = 0,
    now: datetime,
) -> None:
    """ControlApplied: the dispatcher honours the request at `requested_version`."""

    def command() -> None:
        control = store.get(FileControl, file_control_id(file))
        control.applied_request(
            action=action,
            requested_version=requested_version,
            messages_cancelled=messages_cancelled,
            credits_refunded=credits_refunded,
            at=now.isoformat(),
        )
        store.save(control)

    store._retrying(command)


def report_fields(control: FileControl | None) -> dict[str, Any]:
    """What a file's report adds once its dispatch was controlled (nothing otherwise)."""
    if control is None:
        return {}
    return {
        "dispatch": control.state,  # "running" | "paused" | "cancelled"
        "paused_at": control.paused_at,
        "cancelled_at": control.cancelled_at,
        "messages_cancelled": control.messages_cancelled,
        "credits_refunded": control.credits_refunded,
    }
