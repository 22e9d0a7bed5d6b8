"""The file actor: takes an arrived upload through receipt, pass 1, decision, pass 2 and filing.

Several workers share one inbox. Per file:
  1. record FileReceived (or resume the receipt a restart left in flight; 48-h duplicates fail);
  2. move the bytes to work/<file id>/ so the client can no longer change what we process;
  3. unzip envelopes, each entry then being a file of its own;
  4. pass 1 in a thread (sftpsms.intake): validate, scrub, price, spool outcomes; decide;
  5. accept + reserve credits in one transaction, or fail the file as a whole;
  6. pass 2: the contact-batch actor turns the spool into MessageQueued events, batch by batch;
  7. FileCompleted, then the report and the file land in Processed or Errors, and the status email.
Every step is idempotent, so `recover` can run any file left in work/ to its end after a crash.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any
from uuid import UUID

import outcome
import trio

from actors.contact_batch import BATCH_SIZE, QueueRequest
from actors.notifier import Notify
from actors.pass_one import PassOneWorkers, pass_one_checker
from actors.projector import Projector
from actors.writer import StoreClient
from eventstore.domain import File, InsufficientBalance
from eventstore.projections import ReadModels
from eventstore.store import SmsStore
from sftpsms import folders
from sftpsms.archive import extract_zip
from sftpsms.config import Settings
from sftpsms.errors import ErrorCode, FileRejected
from sftpsms.intake import AccountPolicy, Plan, PlanFailed, plan_file
from sftpsms.names import quoted
from sftpsms.notification import compose_status_email
from sftpsms.numbers import NetworkDirectory
from sftpsms.report import build_report, write_json_atomically

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
# Codes a file fails with before its content was judged (the rest are ParseFailed).
NOT_PARSE_CODES = {ErrorCode.DUPLICATE_FOUND, ErrorCode.INSUFFICIENT_CREDITS, ErrorCode.INTERNAL_SERVER_ERROR}


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class FileArrived:
    """An upload is complete in an account's Send_SMS folder (or was left there, for the sweep)."""

    account: str
    name: str
    path: Path
    arrived_at: datetime
    incomplete: bool = False  # a cut-off upload left for too long: filed as File.Corrupt


@dataclass(frozen=True)
class FileFiled:
    """A file reached Processed or Errors (observers: tests, the bench, logs)."""

    account: str
    name: str
    file_id: UUID
    status: str
    error_code: str | None
    report: Path


class InFlight:
    """Names being processed now, so a close and a sweep never start the same upload twice."""

    def __init__(self) -> None:
        self._names: set[tuple[str, str]] = set()

    def claim(self, account: str, name: str) -> bool:
        key = (account, name)
        if key in self._names:
            return False
        self._names.add(key)
        return True

    def release(self, account: str, name: str) -> None:
        self._names.discard((account, name))

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._names


@dataclass
class FileContext:
    """What the workers share."""

    settings: Settings
    store: StoreClient
    projector: Projector
    queue: trio.MemorySendChannel[QueueRequest]
    in_flight: InFlight
    notify: trio.MemorySendChannel[Notify]
    filed: trio.MemorySendChannel[FileFiled] | None = None
    clock: Clock = utc_now
    pass_one: PassOneWorkers | None = None  # warm processes sharing pass 1 of big files


async def run_file_worker(
    inbox: trio.MemoryReceiveChannel[FileArrived],
    *,
    context: FileContext,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Process arrived files one at a time until the inbox closes.

    Error handling: a failure of one file is logged, the file is filed in Errors with
    InternalServerError (its name stays free to upload again), and the worker goes on.
    """
    task_status.started()
    with inbox:
        async for arrived in inbox:
            try:
                await process_arrival(arrived, context)
            except Exception:
                log.exception("file=%s account=%s code=InternalServerError", quoted(arrived.name), arrived.account)
            finally:
                context.in_flight.release(arrived.account, arrived.name)


def _fingerprint(path: Path) -> tuple[int, str]:
    """Size and modification time: enough to tell a resumed receipt from a new upload, and cheap
    (hashing 100 MB would cost more than the whole pickup budget)."""
    stat = path.stat()
    return stat.st_size, f"{stat.st_size}:{stat.st_mtime_ns}"


def _work_path(settings: Settings, file_id: UUID, name: str) -> Path:
    return settings.work_dir / str(file_id) / name


async def process_arrival(arrived: FileArrived, context: FileContext) -> None:
    if not arrived.path.exists():
        return  # deleted by the client, or already picked up by someone else
    await receive_and_run(
        context, arrived.account, arrived.name, arrived.path, incomplete=arrived.incomplete
    )


async def receive_and_run(
    context: FileContext,
    account: str,
    name: str,
    path: Path,
    *,
    envelope: str | None = None,
    incomplete: bool = False,
) -> UUID:
    """FileReceived, the bytes moved to work/, then duplicates and cut-off uploads filed as
    failures and anything else run to its end. Returns the file id."""
    size, fingerprint = await trio.to_thread.run_sync(_fingerprint, path)
    now = context.clock()
    receipt = await context.store.run(
        partial(
            SmsStore.receive_file,
            account=account,
            name=name,
            size=size,
            fingerprint=fingerprint,
            now=now,
            envelope=envelope,
        )
    )
    log.info("file=%s account=%s file_id=%s received", quoted(name), account, receipt.file_id)
    await trio.to_thread.run_sync(folders.move, path, _work_path(context.settings, receipt.file_id, name))
    if incomplete:
        await _fail(context, receipt.file_id, ErrorCode.CORRUPT, "upload incomplete")
    elif receipt.duplicate_of is not None:
        await _fail(
            context,
            receipt.file_id,
            ErrorCode.DUPLICATE_FOUND,
            f"a file named {name!r} was processed for this account in the last 48 hours",
        )
    else:
        await run_file(context, receipt.file_id)
        return receipt.file_id
    await file_away(context, receipt.file_id)
    return receipt.file_id


async def run_file(context: FileContext, file_id: UUID) -> None:
    """Take a received file (bytes in work/) from wherever it is to filed. Idempotent."""
    file = await context.store.run(lambda s: s.file(file_id))
    try:
        if file.status == "received" and folders.is_zip(file.name):
            await _run_envelope(context, file)
        elif file.status in ("received", "accepted"):
            await _run_contacts(context, file)
    except Exception as error:
        log.exception("file=%s account=%s code=InternalServerError", quoted(file.name), file.account)
        current = await context.store.run(lambda s: s.file(file_id))
        if current.status == "accepted":
            # Credits are reserved and messages may be queued: never fail it now. It stays in
            # work/ and recovery resumes pass 2 (stored batches are skipped) on the next start.
            return
        await _fail(context, file_id, ErrorCode.INTERNAL_SERVER_ERROR, f"internal error: {type(error).__name__}")
    await file_away(context, file_id)


async def _fail(
    context: FileContext,
    file_id: UUID,
    code: ErrorCode,
    detail: str,
    *,
    contacts: int = 0,
    contact_errors: list[dict[str, Any]] | None = None,
    optouts: int = 0,
) -> None:
    now = context.clock()
    await context.store.run(
        lambda s: s.reject_file(
            file_id,
            code,
            detail,
            parse=code not in NOT_PARSE_CODES,
            now=now,
            contacts=contacts,
            contact_errors=sorted(contact_errors or [], key=lambda error: int(error["index"])),
            optouts=optouts,
        )
    )


def _policy(store: SmsStore, username: str) -> tuple[AccountPolicy, dict[str, str]]:
    account = store.account(username)
    policy = AccountPolicy(
        username=username,
        country=account.country,
        allow_custom_sender=account.allow_custom_sender,
        balance=account.balance,
        sender_ids=frozenset(account.sender_ids),
    )
    return policy, dict(store.routes())


PROGRESS_EVERY = 100_000


def _progress(file: File, stage: str, done: int) -> None:
    if done % PROGRESS_EVERY == 0:
        log.info("file=%s account=%s %s=%d", quoted(file.name), file.account, stage, done)


def _pass_one(context: FileContext, file: File, policy: AccountPolicy, routes: dict[str, str]) -> Plan:
    models = ReadModels(context.settings.readmodels_db)
    try:
        context.settings.spool_dir.mkdir(parents=True, exist_ok=True)
        return plan_file(
            _work_path(context.settings, file.id, file.name),
            policy=policy,
            networks=NetworkDirectory(routes),
            opted_out=lambda msisdns: models.opted_out(policy.username, msisdns),
            now=context.clock(),
            spool=context.settings.spool_dir / f"{file.id}.jsonl",
            max_parts=context.settings.max_parts,
            progress=lambda done: _progress(file, "validated", done),
            check_contacts=pass_one_checker(
                context.pass_one,
                parts=context.settings.spool_dir / str(file.id),
                optouts=(context.settings.readmodels_db, policy.username),
            ),
        )
    finally:
        models.close()


async def _run_contacts(context: FileContext, file: File) -> None:
    # Opt-outs and routes added a moment ago must count: catch the read models up first.
    started = time.perf_counter()
    await context.projector.catch_up()
    policy, routes = await context.store.run(lambda s: _policy(s, file.account))
    if file.status == "accepted":
        # Resumed after a crash: its credits are reserved already; pass 1 only rebuilds the spool.
        policy = replace(policy, balance=int(file.summary["credits"]))
    try:
        checking = time.perf_counter()
        plan = await trio.to_thread.run_sync(_pass_one, context, file, policy, routes)
        checked = time.perf_counter()
    except PlanFailed as failure:
        await _fail(
            context,
            file.id,
            failure.code,
            failure.detail,
            contacts=failure.plan.contacts,
            contact_errors=failure.plan.first_errors,
            optouts=failure.plan.optouts,
        )
        return
    except FileRejected as rejection:
        await _fail(context, file.id, rejection.code, rejection.detail)
        return
    summary = {
        "contacts": plan.contacts,
        "messages": plan.messages,
        "rejected": plan.rejected,
        "optouts": plan.optouts,
        "parts": plan.parts,
        "batches": batch_count(plan.contacts),
        "sender_id": plan.sender_id,
        "not_before": plan.not_before.isoformat() if plan.not_before else None,
        "expires_at": plan.expires_at.isoformat() if plan.expires_at else None,
        "email": plan.header.email,
        "warnings": list(plan.header.warnings),
    }
    try:
        await context.store.run(lambda s: s.accept_file(file.id, credits=plan.credits, summary=summary))
    except InsufficientBalance as short:
        await _fail(
            context,
            file.id,
            ErrorCode.INSUFFICIENT_CREDITS,
            f"the file needs {short.needed} credits, the balance is {short.balance}",
            contacts=plan.contacts,
            contact_errors=plan.first_errors,
        )
        return
    queueing = time.perf_counter()
    send, receive = trio.open_memory_channel[outcome.Outcome[int]](1)
    with receive:
        await context.queue.send(
            QueueRequest(file_id=file.id, account=file.account, plan=plan, timestamp=context.clock(), reply=send)
        )
        (await receive.receive()).unwrap()
    queued = time.perf_counter()
    now = context.clock()
    await context.store.run(lambda s: s.complete_file(file.id, now))
    # Where a file's time went (seconds): to tell pass 1 from pass 2 from the rest.
    log.info(
        "file=%s account=%s contacts=%d phases: prepare=%.3f pass1=%.3f accept=%.3f pass2=%.3f complete=%.3f",
        quoted(file.name),
        file.account,
        plan.contacts,
        checking - started,
        checked - checking,
        queueing - checked,
        queued - queueing,
        time.perf_counter() - queued,
    )


def batch_count(contacts: int) -> int:
    return -(-contacts // BATCH_SIZE)


async def _run_envelope(context: FileContext, zip_file: File) -> None:
    """A zip: each .txt/.json entry becomes a file of its own with its own report."""
    work = _work_path(context.settings, zip_file.id, zip_file.name)
    entries_dir = work.parent / "entries"
    await trio.to_thread.run_sync(lambda: shutil.rmtree(entries_dir, ignore_errors=True))
    try:
        contents = await trio.to_thread.run_sync(
            lambda: extract_zip(
                work,
                entries_dir,
                max_entry_bytes=context.settings.max_entry_bytes,
                max_entries=context.settings.max_zip_entries,
            )
        )
    except FileRejected as rejection:
        await _fail(context, zip_file.id, rejection.code, rejection.detail)
        return
    outcomes: list[dict[str, Any]] = []
    for entry in contents.entries:
        entry_id = await receive_and_run(context, zip_file.account, entry.name, entry.path, envelope=zip_file.name)
        entry_file = await context.store.run(partial(SmsStore.file, file=entry_id))
        outcomes.append(
            {"file": entry.name, "file_id": str(entry_file.id), "status": entry_file.outcome, "error_code": entry_file.error_code}
        )
    processed = [o for o in outcomes if o["status"] == "processed"]
    if processed:
        summary = {
            "contacts": 0,
            "messages": 0,
            "rejected": 0,
            "optouts": 0,
            "parts": 0,
            "batches": 0,
            "sender_id": "Fixed",
            "not_before": None,
            "expires_at": None,
            "email": None,
            "warnings": [f"entry {o['file']}: {o['status']} {o['error_code'] or ''}".strip() for o in outcomes]
            + [f"skipped entry {name!r}" for name in contents.skipped],
        }
        await context.store.run(lambda s: s.accept_file(zip_file.id, credits=0, summary=summary))
        now = context.clock()
        await context.store.run(lambda s: s.complete_file(zip_file.id, now))
    else:
        await _fail(context, zip_file.id, ErrorCode.EMPTY_SEND, "no entry of the zip was processed")


def _report(store: SmsStore, file_id: UUID) -> tuple[File, dict[str, Any]]:
    file = store.file(file_id)
    account = store.account(file.account)
    if file.outcome == "processed":
        summary = file.summary
        errors: list[dict[str, Any]] = []
        for sealed in store.sealed_batches(file.id, int(summary.get("batches", 0))):
            errors.extend(sealed.errors)
        report = build_report(
            file=file.name,
            account=file.account,
            status="processed",
            error_code=None,
            detail=None,
            contacts=summary["contacts"],
            messages_queued=summary["messages"],
            optouts_skipped=summary["optouts"],
            parts=summary["parts"],
            credits_used=summary["credits"],
            contact_errors=errors,
            received_at=file.received_at,
            completed_at=file.completed_at,
            warnings=summary.get("warnings", []),
            file_id=str(file.id),
        )
        email = summary.get("email") or account.email
    else:
        optouts = file.failure_optouts or sum(1 for e in file.failure_errors if e.get("code") == ErrorCode.OPTOUT)
        report = build_report(
            file=file.name,
            account=file.account,
            status="failed",
            error_code=file.error_code,
            detail=file.detail,
            contacts=file.failure_contacts,
            messages_queued=0,
            optouts_skipped=optouts,
            parts=0,
            credits_used=0,
            contact_errors=file.failure_errors,
            received_at=file.received_at,
            completed_at=file.completed_at,
            file_id=str(file.id),
        )
        email = account.email
    report["email"] = email
    return file, report


def file_report(store: SmsStore, file_id: UUID) -> dict[str, Any]:
    """The report of a completed file, rebuilt from its events (used by replay and the CLI)."""
    _, report = _report(store, file_id)
    report.pop("email", None)
    return report


async def file_away(context: FileContext, file_id: UUID) -> None:
    """Write the report, move the file into Processed or Errors, send the status email. Idempotent:
    recovery runs it again for a completed file still in work/."""
    file, report = await context.store.run(lambda s: _report(s, file_id))
    email = report.pop("email")
    settings = context.settings
    root = settings.account_root(file.account)
    folder = root / (folders.PROCESSED if file.outcome == "processed" else folders.ERRORS)
    work = _work_path(settings, file.id, file.name)

    def write_and_move() -> Path:
        # The file first, the report last: a client that sees the report finds the file too.
        folder.mkdir(parents=True, exist_ok=True)
        name = folders.filed_name(folder, file.name, str(file.id), moving=work.exists())
        if name != file.name:  # an earlier file's outputs hold the name: never replaced
            report["filed_as"] = name
        report_file = folders.report_path(folder, name)
        if work.exists():
            folders.move(work, folder / name)
        write_json_atomically(report_file, report)
        shutil.rmtree(work.parent, ignore_errors=True)
        (settings.spool_dir / f"{file.id}.jsonl").unlink(missing_ok=True)
        return report_file

    report_file = await trio.to_thread.run_sync(write_and_move)
    if email and not file.notified:
        now = context.clock()
        message = compose_status_email(report, to=email, sender=settings.mail_from, now=now)
        await context.notify.send(Notify(file.id, email, message))
    log.info(
        "file=%s account=%s file_id=%s status=%s code=%s",
        quoted(file.name),
        file.account,
        file.id,
        report["status"],
        report["error_code"],
    )
    if context.filed is not None:
        await context.filed.send(
            FileFiled(file.account, file.name, file.id, report["status"], report["error_code"], report_file)
        )


async def recover(context: FileContext) -> int:
    """Run every file a crash left in work/ to its end. Returns how many were found."""
    work_dir = context.settings.work_dir
    if not work_dir.exists():
        return 0
    found = 0
    for entry in sorted(work_dir.iterdir()):
        try:
            file_id = UUID(entry.name)
        except ValueError:
            continue
        found += 1
        file = await context.store.run(partial(SmsStore.file, file=file_id))
        if file.envelope is not None:
            continue  # a zip entry: its envelope re-runs it
        if file.status == "completed":
            await file_away(context, file_id)
        else:
            await run_file(context, file_id)
    return found
