"""The validator: an upload into Validate is checked as a real upload of the same bytes would be,
now, with the account as it is, and gets `Validate/<name>.report.json`. Nothing is sent, no credit
is reserved and no file name is taken (issue 12).

Per upload:
  1. a working folder DATA/validating/<validation id>/ gets `meta.json` (account, name, when it
     arrived), then the bytes are moved into it out of Validate (the client can no longer change
     what is checked; the upload itself is not kept: Validate holds the reports);
  2. the checks of a real upload, in its order (actors/file.py): a cut-off upload is
     File.Corrupt; a name a new upload would be a duplicate of is File.DuplicateFound
     (SmsStore.would_be_duplicate, which only reads); a zip has each entry checked as a file of its
     own, the credits of valid entries taken off the balance the next entries see (as a real zip's
     reservations would); anything else goes through `plan_upload`, the very function that plans
     a real upload's pass 1, and its report is built by the real report's builders;
  3. the reports are kept in the working folder (`reports.json`), FileValidated is recorded for
     each, the reports are put into Validate and the working folder is removed.

A stop or crash anywhere leaves the working folder: the sweep hands it back here (a FileArrived
whose path is its `meta.json`) and the steps go on from where they were: reports already made are
not made again, and FileValidated is recorded once per upload. A validation that raises, or that
was cut short by crashes `file_max_failures` times (a stop does not count), is reported as
InternalServerError.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from actors.faults import is_disk_full
from actors.file import (
    INCOMPLETE_DETAIL,
    NO_ENTRY_PROCESSED,
    FileArrived,
    FileContext,
    FileFailure,
    duplicate_detail,
    envelope_summary,
    envelope_warnings,
    extract_envelope,
    failed_report,
    hold,
    plan_summary,
    plan_upload,
    processed_report,
    release,
    upload_lease,
)
from actors.session import validation_key
from eventstore.contact_rows import spooled_errors
from eventstore.domain import validation_id
from eventstore.store import SmsStore
from sftpsms import filing, folders
from sftpsms.config import Settings
from sftpsms.errors import ErrorCode, FileRejected
from sftpsms.names import quoted
from sftpsms.report import write_json_atomically

log = logging.getLogger(__name__)

VALIDATING = "validating"  # DATA/validating/<validation id>/: uploads being validated
META = "meta.json"
REPORTS = "reports.json"
UPLOAD = "upload"  # the bytes' name in the working folder, with the upload's suffix


def validating_dir(settings: Settings) -> Path:
    return settings.data_dir / VALIDATING


def is_resumption(settings: Settings, path: Path) -> bool:
    """Whether a FileArrived for the validator names a working folder left by a stop or crash."""
    return path.name == META and path.parent.parent == validating_dir(settings)


def left_over(settings: Settings) -> Iterator[tuple[str, str, Path]]:
    """(account, name, meta.json) of each validation a stop or crash left unfinished (for the sweep)."""
    folder = validating_dir(settings)
    if not folder.is_dir():
        return
    for work in sorted(folder.iterdir()):
        try:
            meta = json.loads((work / META).read_bytes())
            yield str(meta["account"]), str(meta["name"]), work / META
        except (OSError, ValueError, KeyError, TypeError):
            # No meta: the upload was never moved here (it is still in Validate). Tidied once old.
            continue


@dataclass
class Checked:
    """One report of a validation (a file, a zip's entry or the zip itself) and its event."""

    name: str
    report: dict[str, Any]
    event: dict[str, Any]

    @property
    def valid(self) -> bool:
        return bool(self.report["status"] == "valid")


async def run_validator(
    inbox: trio.MemoryReceiveChannel[FileArrived],
    *,
    context: FileContext,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Validate uploads one at a time until the inbox closes.

    Error handling: a validation that fails is reported as InternalServerError (its upload gone
    from Validate) and the actor goes on; a full disk leaves the working folder for the sweep.
    """
    task_status.started()
    with inbox:
        async for arrived in inbox:
            try:
                await validate(context, arrived)
            except Exception as error:
                if is_disk_full(error):
                    log.warning("file=%s account=%s validation paused, the disk is full (%s)", quoted(arrived.name), arrived.account, error)
                else:
                    log.exception("file=%s account=%s validation failed", quoted(arrived.name), arrived.account)
            finally:
                context.in_flight.release(arrived.account, validation_key(arrived.name))


async def validate(context: FileContext, arrived: FileArrived) -> None:
    """Validate one upload of Validate (or resume one from its working folder) to its reports.
    Among several nodes, the one holding the name's lease does; the others find it done."""
    lease = upload_lease(arrived.account, validation_key(arrived.name))
    if not await hold(context, lease):
        return  # another node validates it now
    try:
        await _validate(context, arrived)
    finally:
        await release(context, lease)


async def _validate(context: FileContext, arrived: FileArrived) -> None:
    started = time.perf_counter()
    if is_resumption(context.settings, arrived.path):
        if not arrived.path.exists():
            return  # finished meanwhile (the sweep listed it just before it was removed)
        work: Path | None = arrived.path.parent
        log.info("file=%s account=%s validation resumed", quoted(arrived.name), arrived.account)
    else:
        work = await trio.to_thread.run_sync(_take, context.settings, arrived, context.clock().isoformat())
    if work is not None:
        await _finish(context, work, started)


def _upload_path(work: Path, name: str) -> Path:
    suffix = next((s for s in filing.SUFFIXES if name.lower().endswith(s)), "")
    return work / (UPLOAD + suffix)


def _take(settings: Settings, arrived: FileArrived, received_at: str) -> Path | None:
    """The upload moved into a new working folder (None: it is gone, deleted by the client)."""
    if not arrived.path.is_file():
        return None
    work = validating_dir(settings) / str(validation_id(arrived.account, arrived.name, received_at))
    work.mkdir(parents=True, exist_ok=True)
    meta = {
        "account": arrived.account,
        "name": arrived.name,
        "received_at": received_at,
        "incomplete": arrived.incomplete,
        "attempts": 0,
    }
    write_json_atomically(work / META, meta)  # first: a folder with a meta holds the bytes or is done
    try:
        folders.move(arrived.path, _upload_path(work, arrived.name))
    except FileNotFoundError:
        shutil.rmtree(work, ignore_errors=True)
        return None
    return work


async def _finish(context: FileContext, work: Path, started: float) -> None:
    settings = context.settings
    meta = json.loads(await trio.Path(work / META).read_bytes())
    account, name, received_at = meta["account"], meta["name"], meta["received_at"]
    reports_path = work / REPORTS
    if reports_path.exists():
        kept = json.loads(await trio.Path(reports_path).read_bytes())
        checked = [Checked(**item) for item in kept["reports"]]
    else:
        upload = _upload_path(work, name)
        if not upload.exists():
            await trio.to_thread.run_sync(partial(shutil.rmtree, work, ignore_errors=True))
            return
        meta["attempts"] = int(meta.get("attempts", 0)) + 1
        await trio.to_thread.run_sync(write_json_atomically, work / META, meta)
        if meta["attempts"] > settings.file_max_failures:
            why = f"validation was cut short {meta['attempts'] - 1} times (the process stopped or died)"
            checked = [_internal_error(account, name, received_at, context, why)]
        else:
            try:
                checked = await _check(context, work, account, name, upload, received_at, incomplete=bool(meta["incomplete"]))
            except trio.Cancelled:
                # A stop is not the file's fault: this attempt does not count (a crash does).
                meta["attempts"] -= 1
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(write_json_atomically, work / META, meta)
                raise
            except Exception as error:
                if is_disk_full(error):
                    raise
                log.exception("file=%s account=%s validation failed: reported as InternalServerError", quoted(name), account)
                checked = [_internal_error(account, name, received_at, context, f"internal error: {type(error).__name__}")]
        await trio.to_thread.run_sync(write_json_atomically, reports_path, {"reports": [vars(c) for c in checked]})
    for item in checked:
        await context.store.run(partial(SmsStore.record_validation, **item.event))
    root = settings.account_root(account)

    def put_reports() -> None:
        folder = root / folders.VALIDATE
        folder.mkdir(parents=True, exist_ok=True)
        for item in checked:
            write_json_atomically(folders.report_path(folder, filing.filed_name(item.name)), item.report)
        shutil.rmtree(work, ignore_errors=True)

    await trio.to_thread.run_sync(put_reports)
    seconds = time.perf_counter() - started  # from pickup to every report in Validate
    for item in checked:
        report = item.report
        log.info(
            "file=%s account=%s validation=%s status=%s code=%s contacts=%d would_queue=%d credits_needed=%d seconds=%.3f",
            quoted(item.name), account, report["validation_id"], report["status"], report["error_code"],
            report["contacts"], report["would_queue"], report["credits_needed"], seconds,
        )


async def _check(
    context: FileContext, work: Path, account: str, name: str, upload: Path, received_at: str, *, incomplete: bool
) -> list[Checked]:
    """The reports of one upload, as a real upload of it would be decided (actors/file.py
    receive_and_run): cut off, then a zip's entries, then duplicates and pass 1."""
    if incomplete:
        failure = FileFailure(ErrorCode.CORRUPT, INCOMPLETE_DETAIL)
        return [await _checked(context, account, name, upload, received_at, None, failure=failure)]
    if folders.is_zip(name):
        return await _check_envelope(context, work, account, name, upload, received_at)
    return [await _check_file(context, work, account, name, upload, received_at, envelope=None, spent=0)]


async def _check_file(
    context: FileContext,
    work: Path,
    account: str,
    name: str,
    path: Path,
    received_at: str,
    *,
    envelope: str | None,
    spent: int,
) -> Checked:
    now = context.clock()
    duplicate = await context.store.run(partial(SmsStore.would_be_duplicate, account=account, name=name, now=now))
    if duplicate is not None:
        return await _checked(
            context, account, name, path, received_at, envelope,
            failure=FileFailure(ErrorCode.DUPLICATE_FOUND, duplicate_detail(name)),
        )
    key = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]  # one spool per entry of a zip
    spool = work / f"spool-{key}.jsonl"
    planned = await plan_upload(
        context,
        account=account,
        name=name,
        path=path,
        spool=spool,
        parts=work / f"parts-{key}",
        checkpoint=None,
        spent=spent,
    )
    if planned.failure is not None:
        return await _checked(context, account, name, path, received_at, envelope, failure=planned.failure)
    plan = planned.plan
    assert plan is not None

    def errors() -> list[dict[str, Any]]:
        with spool.open("rb") as lines:
            return spooled_errors(lines)

    summary = {**plan_summary(plan), "credits": plan.credits}
    return await _checked(
        context, account, name, path, received_at, envelope, summary=summary, errors=await trio.to_thread.run_sync(errors)
    )


async def _check_envelope(
    context: FileContext, work: Path, account: str, name: str, upload: Path, received_at: str
) -> list[Checked]:
    """A zip: each .txt/.json entry checked as a file of its own with its own report, and the
    zip's report (as `_run_envelope` files a real one)."""
    try:
        contents = await trio.to_thread.run_sync(extract_envelope, context.settings, account, upload, work / "entries")
    except FileRejected as rejection:
        failure = FileFailure(rejection.code, rejection.detail)
        return [await _checked(context, account, name, upload, received_at, None, failure=failure)]
    checked: list[Checked] = []
    spent = 0
    for entry in contents.entries:
        item = await _check_file(context, work, account, entry.name, entry.path, received_at, envelope=name, spent=spent)
        if item.valid:
            spent += int(item.report["credits_needed"])  # a real zip's entry reserves them
        checked.append(item)
    outcomes = [{"file": c.name, "status": c.report["status"], "error_code": c.report["error_code"]} for c in checked]
    if any(c.valid for c in checked):
        summary = {**envelope_summary(envelope_warnings(outcomes, contents.skipped)), "credits": 0}
        own = await _checked(context, account, name, upload, received_at, None, summary=summary, errors=[])
    else:
        failure = FileFailure(ErrorCode.EMPTY_SEND, NO_ENTRY_PROCESSED)
        own = await _checked(context, account, name, upload, received_at, None, failure=failure)
    return [*checked, own]


def _digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as content:
        while chunk := content.read(1 << 20):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()


async def _checked(
    context: FileContext,
    account: str,
    name: str,
    path: Path,
    received_at: str,
    envelope: str | None,
    *,
    failure: FileFailure | None = None,
    summary: dict[str, Any] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> Checked:
    """The report a real upload would get (by the real report's builders), made a validation's."""
    validated_at = context.clock().isoformat()
    if failure is not None:
        real = failed_report(
            name=name,
            account=account,
            error_code=failure.code,
            detail=failure.detail,
            contacts=failure.contacts,
            contact_errors=failure.contact_errors,
            optouts=failure.optouts,
            received_at=received_at,
            completed_at=validated_at,
            file_id=None,
        )
        credits_needed = failure.plan.credits if failure.plan is not None else 0
    else:
        assert summary is not None
        real = processed_report(
            name=name,
            account=account,
            summary=summary,
            contact_errors=errors or [],
            received_at=received_at,
            completed_at=validated_at,
            file_id=None,
        )
        credits_needed = int(summary["credits"])
    size, sha256 = await trio.to_thread.run_sync(_digest, path)
    report = validation_report(real, credits_needed=credits_needed, validation_id=str(validation_id(account, name, received_at)))
    event = {
        "account": account,
        "name": name,
        "received_at": received_at,
        "sha256": sha256,
        "size": size,
        "envelope": envelope,
        "status": report["status"],
        "error_code": None if report["error_code"] is None else str(report["error_code"]),
        "contacts": report["contacts"],
        "would_queue": report["would_queue"],
        "optouts_skipped": report["optouts_skipped"],
        "contact_errors": sum(1 for e in report["contact_errors"] if e.get("code") != ErrorCode.OPTOUT),
        "parts": report["parts"],
        "credits_needed": credits_needed,
        "validated_at": validated_at,
    }
    return Checked(name=name, report=report, event=event)


def validation_report(real: dict[str, Any], *, credits_needed: int, validation_id: str) -> dict[str, Any]:
    """A real report made a validation's: `status` valid or invalid; `would_queue` and
    `credits_needed` say what the upload would queue and need (nothing is queued, nothing used:
    `messages_queued` and `credits_used` are 0); every other field is the real one, word for word."""
    valid = real["status"] == "processed"
    report = dict(real)
    report["status"] = "valid" if valid else "invalid"
    report["would_queue"] = real["messages_queued"]
    report["credits_needed"] = credits_needed
    report["messages_queued"] = 0
    report["credits_used"] = 0
    report["file_id"] = None
    report["validation_id"] = validation_id
    return report


def _internal_error(account: str, name: str, received_at: str, context: FileContext, why: str) -> Checked:
    validated_at = context.clock().isoformat()
    real = failed_report(
        name=name,
        account=account,
        error_code=ErrorCode.INTERNAL_SERVER_ERROR,
        detail=f"the file could not be validated ({why}); upload it again to try again",
        contacts=0,
        contact_errors=[],
        optouts=0,
        received_at=received_at,
        completed_at=validated_at,
        file_id=None,
    )
    report = validation_report(real, credits_needed=0, validation_id=str(validation_id(account, name, received_at)))
    event = {
        "account": account, "name": name, "received_at": received_at, "sha256": "", "size": 0, "envelope": None,
        "status": "invalid", "error_code": ErrorCode.INTERNAL_SERVER_ERROR, "contacts": 0, "would_queue": 0,
        "optouts_skipped": 0, "contact_errors": 0, "parts": 0, "credits_needed": 0, "validated_at": validated_at,
    }  # fmt: skip
    return Checked(name=name, report=report, event=event)
