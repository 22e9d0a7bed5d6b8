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

Several nodes share the data directory on a PostgreSQL store: any node's door or sweep may see an
upload, and every node's recovery sees every work/ entry. Two leases (eventstore/leases.py) keep a
file to one node at a time: `upload:<account>/<name>` while a node picks a name up (what InFlight's
name claims are within one process), and `file:<file id>` while a node processes the file. A node
that dies loses both with its store connection, and another node's recovery takes its work/
entries over within takeover_interval seconds. On SQLite (one node) every lease is granted.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import orjson
import outcome
import trio
from eventsourcing.application import AggregateNotFoundError

from actors.contact_batch import BATCH_SIZE, QueueRequest
from actors.controls import run_control_file
from actors.faults import is_disk_full
from actors.notifier import Notify
from actors.pass_one import PassOneWorkers, pass_one_checker
from actors.projector import Projector
from actors.writer import StoreClient
from eventstore import controls
from eventstore.domain import MAX_ERRORS_IN_EVENT, File, InsufficientBalance
from eventstore.leases import Leases, LocalLeases
from eventstore.projections import ReadModels
from eventstore.store import Attempt, SmsStore
from sftpsms import filing, folders
from sftpsms.archive import ZipContents, extract_zip
from sftpsms.config import Settings
from sftpsms.control import is_control
from sftpsms.credits import shortfall
from sftpsms.errors import ErrorCode, FileRejected
from sftpsms.fileformat import Header
from sftpsms.intake import (
    AccountPolicy,
    CheckContacts,
    Checkpoint,
    ContactChecker,
    Outcome,
    Plan,
    PlanFailed,
    Tally,
    plan_file,
    resume_from,
)
from sftpsms.limits import Limits
from sftpsms.names import quoted
from sftpsms.notification import compose_status_email
from sftpsms.numbers import NetworkDirectory
from sftpsms.report import build_report, write_json_atomically

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
T = TypeVar("T")
# Codes a file fails with before its content was judged (the rest are ParseFailed).
NOT_PARSE_CODES = {ErrorCode.DUPLICATE_FOUND, ErrorCode.INSUFFICIENT_CREDITS, ErrorCode.INTERNAL_SERVER_ERROR}


# Details of the failures a file meets before pass 1 (a validation reports the same words).
INCOMPLETE_DETAIL = "upload incomplete"
NO_ENTRY_PROCESSED = "no entry of the zip was processed"


def duplicate_detail(name: str) -> str:
    return f"a file named {name!r} was processed for this account in the last 48 hours"


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
    """Names and files being processed now, so a close, a sweep and recovery never start the same
    upload or file twice; and the attempts this process has open (ended as paused at a stop)."""

    def __init__(self) -> None:
        self._names: set[tuple[str, str]] = set()
        self._files: set[UUID] = set()
        self.attempts: dict[UUID, int] = {}  # file id -> the attempt this process runs
        self.unrecorded: dict[UUID, str] = {}  # attempts paused whose end could not be recorded yet
        self.held: set[UUID] = set()  # accepted files held after too many failures (logged once)
        self.unknown: set[UUID] = set()  # work/ entries the store does not know (logged once)
        self.broken: set[UUID] = set()  # files whose recovery raised (logged once)
        self.abandoned: set[UUID] = set()  # files whose pass 1 did not stop when told (a failure)
        self.next_look: dict[UUID, float] = {}  # work/ entries recovery left: when it looks again (trio time)

    def claim_file(self, file_id: UUID) -> bool:
        if file_id in self._files:
            return False
        self._files.add(file_id)
        return True

    def release_file(self, file_id: UUID) -> None:
        self._files.discard(file_id)


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
    leases: Leases = field(default_factory=LocalLeases)  # what this node holds among several


def upload_lease(account: str, key: str) -> str:
    """The lease of an upload's name while a node picks it up (`key`: an InFlight name)."""
    return f"upload:{account}/{key}"


def file_lease(file_id: UUID) -> str:
    """The lease of a file while a node processes it."""
    return f"file:{file_id}"


async def hold(context: FileContext, key: str) -> bool:
    """Take the lease `key` for this node (False: another node holds it)."""
    return await trio.to_thread.run_sync(context.leases.try_hold, key)


class LeaseLost(Exception):
    """This node no longer holds a file's lease (its store connection broke): another node may run
    the file now, so this one stops writing for it."""


def check_lease(context: FileContext, file_id: UUID) -> None:
    """Raise LeaseLost unless this node still holds `file_id`'s lease (no round trip: what the
    lease connection last showed)."""
    if not context.leases.holds(file_lease(file_id)):
        raise LeaseLost(f"file {file_id}: this node lost its lease")


async def release(context: FileContext, key: str) -> None:
    """Give the lease `key` up, even while cancelled (a stop closes every lease anyway)."""
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(context.leases.release, key)


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
            except Exception as error:
                if is_disk_full(error):  # the sweep offers it again
                    log.warning("file=%s account=%s not picked up, the disk is full (%s)", quoted(arrived.name), arrived.account, error)
                else:
                    log.exception("file=%s account=%s code=InternalServerError", quoted(arrived.name), arrived.account)
            finally:
                context.in_flight.release(arrived.account, arrived.name)


def _fingerprint(path: Path, by_content: bool = False) -> tuple[int, str]:
    """Size and modification time: enough to tell a resumed receipt from a new upload, and cheap
    (hashing 100 MB would cost more than the whole pickup budget). A zip's entry is extracted
    again when its envelope is resumed after a crash (a new modification time): its content
    tells that it is the same entry, so its receipt resumes instead of failing as a duplicate."""
    stat = path.stat()
    if not by_content:
        return stat.st_size, f"{stat.st_size}:{stat.st_mtime_ns}"
    digest = hashlib.sha256()
    with path.open("rb") as content:
        while chunk := content.read(1 << 20):
            digest.update(chunk)
    return stat.st_size, f"{stat.st_size}:sha256:{digest.hexdigest()}"


WORK_UPLOAD = "upload"  # the bytes' name in work/<file id>/, whatever the upload was called


def _work_path(settings: Settings, file_id: UUID, name: str) -> Path:
    """Where a file's bytes wait while it is processed: derived from its id, so no name (too
    long, odd characters, whatever a store holds) can break the work path. A file left by an
    older version under its own name is found there."""
    folder = settings.work_dir / str(file_id)
    suffix = next((s for s in filing.SUFFIXES if name.lower().endswith(s)), "")
    path = folder / (WORK_UPLOAD + suffix)
    if not path.exists() and "/" not in name and name not in (".", ".."):
        legacy = folder / name
        try:
            if legacy.exists():
                return legacy
        except (OSError, ValueError):
            pass
    return path


async def process_arrival(arrived: FileArrived, context: FileContext) -> None:
    if not arrived.path.exists():
        return  # deleted by the client, or already picked up by someone else
    # Another node's door or sweep may see the same upload: the one that holds its name's lease
    # picks it up; the others find it gone from Send_SMS once they hold it in turn.
    lease = upload_lease(arrived.account, arrived.name)
    if not await hold(context, lease):
        log.debug("file=%s account=%s picked up by another node", quoted(arrived.name), arrived.account)
        return
    try:
        if await trio.to_thread.run_sync(arrived.path.exists):
            await _process_held_arrival(arrived, context)
    finally:
        await release(context, lease)


async def _process_held_arrival(arrived: FileArrived, context: FileContext) -> None:
    if is_control(arrived.name):  # `<name>.cancel|pause|resume`: a request, never a file to send
        await run_control_file(
            settings=context.settings,
            store=context.store,
            reader=context.projector.store,
            account=arrived.account,
            name=arrived.name,
            path=arrived.path,
            now=context.clock(),
        )
        return
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
    size, fingerprint = await trio.to_thread.run_sync(_fingerprint, path, envelope is not None)
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
    if not context.in_flight.claim_file(receipt.file_id):
        return receipt.file_id  # a resumed receipt that recovery is running now
    lease = file_lease(receipt.file_id)
    if not await hold(context, lease):
        # A resumed receipt another node runs now (its recovery took the file over).
        context.in_flight.release_file(receipt.file_id)
        log.info("file=%s account=%s file_id=%s processed by another node", quoted(name), account, receipt.file_id)
        return receipt.file_id
    log.info("file=%s account=%s file_id=%s received", quoted(name), account, receipt.file_id)
    try:
        await trio.to_thread.run_sync(folders.move, path, _work_path(context.settings, receipt.file_id, name))
        if incomplete:
            await _fail(context, receipt.file_id, ErrorCode.CORRUPT, INCOMPLETE_DETAIL)
        elif receipt.duplicate_of is not None and not folders.is_zip(name):
            # A zip's name need not be unique (upstream: "The .zip file names don't need to be
            # unique"); its entries' names are, and each entry's own receipt checks that.
            await _fail(context, receipt.file_id, ErrorCode.DUPLICATE_FOUND, duplicate_detail(name))
        else:
            await run_file(context, receipt.file_id)
            return receipt.file_id
        await file_away(context, receipt.file_id)
    finally:
        await release(context, lease)
        context.in_flight.release_file(receipt.file_id)
    return receipt.file_id


class BudgetExceeded(Exception):
    """An attempt at a file ran past SFTPSMS_FILE_TIME_BUDGET."""


class _Stopping(Exception):
    """Raised in pass 1's thread when it is told to stop (the budget, or the service stopping)."""


class StopFlag:
    """Tells a pass 1 running in a thread to give up: checked at every contact."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def check(self) -> None:
        if self._event.is_set():
            raise _Stopping

    def wrap(self, check_contacts: CheckContacts) -> CheckContacts:
        def stoppable(path: Path, header: Header, checker: ContactChecker) -> Generator[Outcome | Tally, None, None]:
            inner = check_contacts(path, header, checker)
            try:
                for item in inner:
                    if self._event.is_set():
                        raise _Stopping
                    yield item
            finally:
                close = getattr(inner, "close", None)
                if close is not None:
                    close()

        return stoppable


STOP_GRACE = 5.0  # seconds a stopped pass 1 has to notice; after that its thread is left behind


async def run_stoppable(
    work: Callable[[StopFlag], T], *, budget: float, abandoned: Callable[[], None] = lambda: None
) -> T:
    """Run pass 1 in a thread, stopping it at the time budget (BudgetExceeded) or when cancelled.

    Cancellation is prompt: the thread is told to stop and given STOP_GRACE seconds; one stuck in
    a single call past that is left behind (a daemon thread) and `abandoned` is called: a stuck
    pass 1 is the file's fault, so its attempt is ended as failed, not paused."""
    flag = StopFlag()
    done = trio.Event()
    result: list[outcome.Outcome[T]] = []
    token = trio.lowlevel.current_trio_token()

    def deliver(value: outcome.Outcome[T]) -> None:
        result.append(value)
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:
            pass

    trio.lowlevel.start_thread_soon(partial(work, flag), deliver)
    try:
        with trio.move_on_after(budget):
            await done.wait()
    except trio.Cancelled:
        flag.set()
        with trio.CancelScope(shield=True), trio.move_on_after(STOP_GRACE):
            await done.wait()
        if not done.is_set():
            abandoned()
        raise
    if not done.is_set():
        flag.set()
        with trio.move_on_after(STOP_GRACE):
            await done.wait()
        raise BudgetExceeded(f"processing ran past the time budget of {budget:g} s")
    return result[0].unwrap()


async def _position(context: FileContext, file: File) -> int:
    """How far the file has got, for telling a crashed attempt that made progress from a poison
    one: contacts checkpointed in pass 1, or all contacts and those queued since (pass 2, as
    counted by the batches stored)."""
    if file.status != "accepted":
        settings = context.settings
        spool = settings.spool_dir / f"{file.id}.jsonl"
        resume = await trio.to_thread.run_sync(read_checkpoint, _checkpoint_path(settings, file.id), spool)
        return 0 if resume is None else resume.contacts
    batches = int(file.summary.get("batches", 0))

    def stored(store: SmsStore) -> int:
        # Batches are stored in order: the stored ones are a prefix.
        low, high = 0, batches
        while low < high:
            middle = (low + high) // 2
            if store.batch_exists(file.id, middle):
                low = middle + 1
            else:
                high = middle
        return low

    return int(file.summary.get("contacts", 0)) + BATCH_SIZE * await context.store.run(stored)


async def run_file(context: FileContext, file_id: UUID) -> None:
    """Take a received file (bytes in work/) from wherever it is to filed. Idempotent.

    Each try is an attempt recorded before any work (File.ProcessingStarted), so a crash of the
    process during it is counted at the next start. An attempt that raises or runs past the time
    budget is ended as failed and tried again at once; a file that failed file_max_failures times
    is quarantined: filed in Errors with InternalServerError and its bytes, when it was not
    accepted yet; held in work/ otherwise (its credits are reserved and messages may be queued),
    until `sftpsms files reprocess`. A full disk pauses the file (not its fault): it stays in work/
    and recovery tries it again. A stop leaves the attempt open in InFlight; the supervisor ends
    it as paused once every actor has stopped. A node that finds it lost the file's lease (between
    phases: accept, queueing, completion) stops there and leaves the file to the lease's holder.
    """
    in_flight = context.in_flight
    settings = context.settings
    while True:
        file = await context.store.run(lambda s: s.file(file_id))
        if file.status == "completed":
            break
        unrecorded = in_flight.unrecorded.get(file_id)
        if unrecorded is not None:
            attempt_number = in_flight.attempts[file_id]
            await context.store.run(
                partial(SmsStore.end_processing, ends=[(file_id, attempt_number)], failed=False, reason=unrecorded)
            )
            del in_flight.unrecorded[file_id]
            in_flight.attempts.pop(file_id, None)
        position = await _position(context, file)
        attempt: Attempt = await context.store.run(
            partial(
                SmsStore.start_processing,
                file=file_id,
                position=position,
                now=context.clock(),
                max_failures=settings.file_max_failures,
            )
        )
        if attempt.number is None:
            if not await _quarantine(context, file, attempt):
                return
            break
        number = attempt.number
        in_flight.attempts[file_id] = number
        try:
            check_lease(context, file_id)
            if file.status == "received" and folders.is_zip(file.name):
                await _run_envelope(context, file)
            elif file.status in ("received", "accepted"):
                await _run_contacts(context, file)
            in_flight.attempts.pop(file_id, None)
            break
        except Exception as error:
            if isinstance(error, LeaseLost):
                # Left to the node that holds the lease now: it ends this attempt (not counted
                # against the file when it had made progress) and runs the file to its end.
                log.warning("file=%s account=%s file_id=%s attempt=%d stopped: %s", quoted(file.name), file.account, file.id, number, error)
                in_flight.attempts.pop(file_id, None)
                return
            if is_disk_full(error):
                log.warning(
                    "file=%s account=%s file_id=%s paused, the disk is full (%s): tried again later",
                    quoted(file.name), file.account, file.id, error,
                )
                in_flight.unrecorded[file_id] = "the disk was full"
                return
            if isinstance(error, BudgetExceeded):
                reason = str(error)
                log.warning("file=%s account=%s file_id=%s attempt=%d %s", quoted(file.name), file.account, file.id, number, reason)
            else:
                reason = f"internal error: {type(error).__name__}"
                log.exception(
                    "file=%s account=%s file_id=%s attempt=%d code=InternalServerError",
                    quoted(file.name), file.account, file.id, number,
                )
            await context.store.run(
                partial(SmsStore.end_processing, ends=[(file_id, number)], failed=True, reason=reason)
            )
            in_flight.attempts.pop(file_id, None)
    await file_away(context, file_id)


async def _quarantine(context: FileContext, file: File, attempt: Attempt) -> bool:
    """A file that failed too often: filed in Errors (True), or held in work/ when accepted."""
    why = attempt.last_failure or "failed"
    if file.status == "accepted":
        if file.id not in context.in_flight.held:
            context.in_flight.held.add(file.id)
            log.error(
                "file=%s account=%s file_id=%s held in work/ after %d failed attempts (last: %s): "
                "`sftpsms files reprocess` tries it again",
                quoted(file.name), file.account, file.id, attempt.failed_attempts, why,
            )
        return False
    detail = (
        f"processing failed {attempt.failed_attempts} times (last: {why}); the file is quarantined with "
        "its bytes and can be processed again once fixed"
    )
    log.error("file=%s account=%s file_id=%s quarantined: %s", quoted(file.name), file.account, file.id, detail)
    await _fail(context, file.id, ErrorCode.INTERNAL_SERVER_ERROR, detail)
    return True


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
        unicode=account.unicode,
    )
    return policy, dict(store.routes())


PROGRESS_EVERY = 100_000


@dataclass(frozen=True)
class FileFailure:
    """How pass 1 failed a file as a whole: its code and detail, and what was counted up to there
    (for the report; `plan` None when it failed before any contact was read)."""

    code: ErrorCode
    detail: str
    plan: Plan | None = None

    @property
    def contacts(self) -> int:
        return self.plan.contacts if self.plan is not None else 0

    @property
    def contact_errors(self) -> list[dict[str, Any]]:
        return self.plan.first_errors if self.plan is not None else []

    @property
    def optouts(self) -> int:
        return self.plan.optouts if self.plan is not None else 0


@dataclass(frozen=True)
class Planned:
    """What `plan_upload` decided: a plan to accept, or the failure; and where its time went."""

    plan: Plan | None
    failure: FileFailure | None
    prepare: float  # seconds: read models caught up, the account and routes read
    pass_one: float  # seconds of pass 1


async def plan_upload(
    context: FileContext,
    *,
    account: str,
    name: str,
    path: Path,
    spool: Path,
    parts: Path,
    checkpoint: Path | None,
    balance: int | None = None,
    spent: int = 0,
    abandoned: Callable[[], None] = lambda: None,
) -> Planned:
    """Pass 1 of an upload's bytes at `path` against the account's state now, and the verdict: the
    one way both a real upload (run_file) and a validation (actors/validator.py) are planned, so
    a validation says exactly what the upload would give.

    The read models are caught up first (opt-outs and routes added a moment ago count). `balance`
    replaces the account's (a resumed accepted file: its reserved credits), `spent` is taken off
    it (earlier entries of a zip being validated). With `checkpoint`, pass 1 checkpoints there
    and resumes from one left by an interrupted run. Outcomes are spooled to `spool`; the
    pass-one workers' part files are `<parts>.partN`. Raises BudgetExceeded past the file's time
    budget (run_stoppable)."""
    started = time.perf_counter()
    await context.projector.catch_up()
    policy, routes = await context.store.run(lambda s: _policy(s, account))
    if balance is not None or spent:
        policy = replace(policy, balance=(policy.balance if balance is None else balance) - spent)
    checking = time.perf_counter()
    try:
        plan: Plan | None = await run_stoppable(
            partial(_pass_one, context, account, name, path, spool, parts, checkpoint, policy, routes),
            budget=context.settings.file_time_budget,
            abandoned=abandoned,
        )
        failure = None
    except PlanFailed as failed:
        plan, failure = None, FileFailure(failed.code, failed.detail, failed.plan)
    except FileRejected as rejection:
        plan, failure = None, FileFailure(rejection.code, rejection.detail)
    return Planned(plan, failure, checking - started, time.perf_counter() - checking)


def _pass_one(
    context: FileContext,
    account: str,
    name: str,
    path: Path,
    spool: Path,
    parts: Path,
    checkpoint_path: Path | None,
    policy: AccountPolicy,
    routes: dict[str, str],
    flag: StopFlag,
) -> Plan:
    models = ReadModels(context.settings.readmodels_db)

    def progress(done: int) -> None:
        flag.check()
        if done % PROGRESS_EVERY == 0:
            log.info("file=%s account=%s validated=%d", quoted(name), account, done)

    resume = read_checkpoint(checkpoint_path, spool) if checkpoint_path is not None else None
    if resume is not None:
        log.info("file=%s account=%s pass 1 resumes at contact %d", quoted(name), account, resume.contacts)

    try:
        spool.parent.mkdir(parents=True, exist_ok=True)
        plan = plan_file(
            path,
            policy=policy,
            networks=NetworkDirectory(routes),
            opted_out=lambda msisdns: models.opted_out(policy.username, msisdns),
            now=context.clock(),
            spool=spool,
            max_parts=context.settings.max_parts,
            progress=progress,
            check_contacts=flag.wrap(
                resume_from(resume.contacts)
                if resume is not None
                else pass_one_checker(
                    context.pass_one,
                    parts=parts,
                    optouts=(context.settings.readmodels_db, policy.username),
                )
            ),
            resume=resume,
            checkpoint=partial(write_checkpoint, checkpoint_path) if checkpoint_path is not None else None,
            limits=Limits.from_settings(context.settings),
        )
        if checkpoint_path is not None:
            # The whole pass, for a resume of pass 2 after a crash (the spool need not be rebuilt).
            write_checkpoint(checkpoint_path, Checkpoint.of(plan, spool.stat().st_size))
        return plan
    finally:
        models.close()


def _checkpoint_path(settings: Settings, file_id: UUID) -> Path:
    return settings.spool_dir / f"{file_id}.checkpoint.json"


def write_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Beside the spool, written whole or not at all (a crash between two keeps the older)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(orjson.dumps(asdict(checkpoint)))
    os.replace(temporary, path)


def read_checkpoint(path: Path, spool: Path) -> Checkpoint | None:
    """The last checkpoint of an interrupted pass 1, if it still matches the spool."""
    try:
        checkpoint = Checkpoint(**orjson.loads(path.read_bytes()))
        if spool.stat().st_size < checkpoint.spool_bytes:
            return None
    except (OSError, ValueError, TypeError):
        return None
    return checkpoint


async def _run_contacts(context: FileContext, file: File) -> None:
    settings = context.settings
    planned = await plan_upload(
        context,
        account=file.account,
        name=file.name,
        path=_work_path(settings, file.id, file.name),
        spool=settings.spool_dir / f"{file.id}.jsonl",
        parts=settings.spool_dir / str(file.id),
        checkpoint=_checkpoint_path(settings, file.id),
        # Resumed after a crash: its credits are reserved already; pass 1 only rebuilds the spool.
        balance=int(file.summary["credits"]) if file.status == "accepted" else None,
        abandoned=partial(context.in_flight.abandoned.add, file.id),
    )
    if planned.failure is not None:
        failure = planned.failure
        await _fail(
            context,
            file.id,
            failure.code,
            failure.detail,
            contacts=failure.contacts,
            contact_errors=failure.contact_errors,
            optouts=failure.optouts,
        )
        return
    plan = planned.plan
    assert plan is not None
    checked = time.perf_counter()
    summary = plan_summary(plan)
    check_lease(context, file.id)
    try:
        await context.store.run(lambda s: s.accept_file(file.id, credits=plan.credits, summary=summary))
    except InsufficientBalance as short:
        await _fail(
            context,
            file.id,
            ErrorCode.INSUFFICIENT_CREDITS,
            shortfall("the file", short.needed, short.balance) or "",
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
    check_lease(context, file.id)
    now = context.clock()
    await context.store.run(lambda s: s.complete_file(file.id, now))
    # Where a file's time went (seconds): to tell pass 1 from pass 2 from the rest.
    log.info(
        "file=%s account=%s contacts=%d phases: prepare=%.3f pass1=%.3f accept=%.3f pass2=%.3f complete=%.3f",
        quoted(file.name),
        file.account,
        plan.contacts,
        planned.prepare,
        planned.pass_one,
        queueing - checked,
        queued - queueing,
        time.perf_counter() - queued,
    )


def plan_summary(plan: Plan) -> dict[str, Any]:
    """What FileAccepted records of a plan (with the credits reserved beside it)."""
    return {
        "contacts": plan.contacts,
        "messages": plan.messages,
        "rejected": plan.rejected,
        "optouts": plan.optouts,
        "parts": plan.parts,
        "ucs2_messages": plan.ucs2_messages,
        "ucs2_parts": plan.ucs2_parts,
        "batches": batch_count(plan.contacts),
        "sender_id": plan.sender_id,
        "not_before": plan.not_before.isoformat() if plan.not_before else None,
        "expires_at": plan.expires_at.isoformat() if plan.expires_at else None,
        "email": plan.header.email,
        "warnings": list(plan.header.warnings),
    }


def envelope_summary(warnings: list[str]) -> dict[str, Any]:
    """What FileAccepted records of a zip with at least one entry processed: no contacts of its own."""
    return {
        "contacts": 0,
        "messages": 0,
        "rejected": 0,
        "optouts": 0,
        "parts": 0,
        "ucs2_messages": 0,
        "ucs2_parts": 0,
        "batches": 0,
        "sender_id": "Fixed",
        "not_before": None,
        "expires_at": None,
        "email": None,
        "warnings": warnings,
    }


def batch_count(contacts: int) -> int:
    return -(-contacts // BATCH_SIZE)


async def _run_envelope(context: FileContext, zip_file: File) -> None:
    """A zip: each .txt/.json entry becomes a file of its own with its own report."""
    work = _work_path(context.settings, zip_file.id, zip_file.name)
    try:
        contents = await trio.to_thread.run_sync(extract_envelope, context.settings, zip_file.account, work, work.parent / "entries")
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
        summary = envelope_summary(envelope_warnings(outcomes, contents.skipped))
        await context.store.run(lambda s: s.accept_file(zip_file.id, credits=0, summary=summary))
        now = context.clock()
        await context.store.run(lambda s: s.complete_file(zip_file.id, now))
    else:
        await _fail(context, zip_file.id, ErrorCode.EMPTY_SEND, NO_ENTRY_PROCESSED)


def extract_envelope(settings: Settings, account: str, work: Path, entries_dir: Path) -> ZipContents:
    """A zip's entries into `entries_dir` (emptied first), within the limits and what the account's
    Processed and Errors already hold. Raises FileRejected."""
    shutil.rmtree(entries_dir, ignore_errors=True)
    root = settings.account_root(account)
    used = sum(_folder_bytes(root / folder) for folder in (folders.PROCESSED, folders.ERRORS))
    return extract_zip(work, entries_dir, Limits.from_settings(settings), account_bytes=used)


def envelope_warnings(outcomes: list[dict[str, Any]], skipped: Sequence[str]) -> list[str]:
    """A zip's report lists how each entry ended and which it skipped."""
    return [f"entry {o['file']}: {o['status']} {o['error_code'] or ''}".strip() for o in outcomes] + [
        f"skipped entry {name!r}" for name in skipped
    ]


def _folder_bytes(folder: Path) -> int:
    """The bytes of the files directly in `folder` (an account's Processed or Errors); 0 if absent."""
    try:
        with os.scandir(folder) as found:
            return sum(entry.stat(follow_symlinks=False).st_size for entry in found if entry.is_file(follow_symlinks=False))
    except FileNotFoundError:
        return 0


def _renamed(name: str) -> list[str]:
    filed = filing.filed_name(name)
    return [] if filed == name else [f"filed as {filed!r}: the name cannot be stored as it is"]


def processed_report(
    *,
    name: str,
    account: str,
    summary: dict[str, Any],
    contact_errors: list[dict[str, Any]],
    received_at: str,
    completed_at: str | None,
    file_id: str | None,
) -> dict[str, Any]:
    """The report of a processed file, from its FileAccepted summary (contacts, messages, optouts,
    parts, credits, warnings) and every contact error its batches sealed. A validation builds the
    report a real upload would get with this very function (actors/validator.py)."""
    return build_report(
        file=name,
        account=account,
        status="processed",
        error_code=None,
        detail=None,
        contacts=summary["contacts"],
        messages_queued=summary["messages"],
        optouts_skipped=summary["optouts"],
        parts=summary["parts"],
        credits_used=summary["credits"],
        contact_errors=contact_errors,
        received_at=received_at,
        completed_at=completed_at,
        warnings=[*summary.get("warnings", []), *_renamed(name)],
        file_id=file_id,
        ucs2_messages=summary.get("ucs2_messages"),
        ucs2_parts=summary.get("ucs2_parts"),
    )


def failed_report(
    *,
    name: str,
    account: str,
    error_code: str | None,
    detail: str | None,
    contacts: int,
    contact_errors: list[dict[str, Any]],
    optouts: int,
    received_at: str,
    completed_at: str | None,
    file_id: str | None,
) -> dict[str, Any]:
    """The report of a file that failed as a whole: its contact errors as its failure event keeps
    them (in index order, the first MAX_ERRORS_IN_EVENT)."""
    errors = sorted(contact_errors, key=lambda error: int(error["index"]))[:MAX_ERRORS_IN_EVENT]
    return build_report(
        file=name,
        account=account,
        status="failed",
        error_code=error_code,
        detail=detail,
        contacts=contacts,
        messages_queued=0,
        optouts_skipped=optouts or sum(1 for e in errors if e.get("code") == ErrorCode.OPTOUT),
        parts=0,
        credits_used=0,
        contact_errors=errors,
        received_at=received_at,
        completed_at=completed_at,
        warnings=_renamed(name),
        file_id=file_id,
    )


def _report(store: SmsStore, file_id: UUID) -> tuple[File, dict[str, Any]]:
    file = store.file(file_id)
    account = store.account(file.account)
    if file.outcome == "processed":
        summary = file.summary
        errors: list[dict[str, Any]] = []
        for sealed in store.sealed_batches(file.id, int(summary.get("batches", 0))):
            errors.extend(sealed.errors)
        report = processed_report(
            name=file.name,
            account=file.account,
            summary=summary,
            contact_errors=errors,
            received_at=file.received_at,
            completed_at=file.completed_at,
            file_id=str(file.id),
        )
        report.update(controls.report_fields(controls.file_control(store, file.id)))  # cancel, pause
        email = summary.get("email") or account.email
    else:
        report = failed_report(
            name=file.name,
            account=file.account,
            error_code=file.error_code,
            detail=file.detail,
            contacts=file.failure_contacts,
            contact_errors=file.failure_errors,
            optouts=file.failure_optouts,
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
    filed = filing.filed_name(file.name)  # the name itself unless no path could hold it

    def write_and_move() -> Path:
        # The file first, the report last: a client that sees the report finds the file too.
        folder.mkdir(parents=True, exist_ok=True)
        name = folders.filed_name(folder, filed, str(file.id), moving=work.exists())
        if name != filed:  # an earlier file's outputs hold the name: never replaced
            report["filed_as"] = name
        report_file = folders.report_path(folder, name)
        if work.exists():
            folders.move(work, folder / name)
        write_json_atomically(report_file, report)
        shutil.rmtree(work.parent, ignore_errors=True)
        (settings.spool_dir / f"{file.id}.jsonl").unlink(missing_ok=True)
        _checkpoint_path(settings, file.id).unlink(missing_ok=True)
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
    """Run every file left in work/ (by a stop, a crash, a full disk) to its end, except those
    another task is running now and accepted files held after too many failures. Returns how many
    it ran. Paths come from file ids only: no name in the store can break it."""
    work_dir = context.settings.work_dir
    entries = await trio.to_thread.run_sync(_work_entries, work_dir)
    ran = 0
    in_flight = context.in_flight
    for file_id in entries:
        if in_flight.next_look.get(file_id, -math.inf) > trio.current_time():
            continue  # left by this node's last run of it (a full disk, an error): not yet
        if not in_flight.claim_file(file_id):
            continue
        lease = file_lease(file_id)
        if not await hold(context, lease):
            in_flight.release_file(file_id)
            continue  # another node runs it now
        try:
            try:
                file = await context.store.run(partial(SmsStore.file, file=file_id))
            except AggregateNotFoundError:
                if file_id not in context.in_flight.unknown:
                    context.in_flight.unknown.add(file_id)
                    log.warning("work/%s is no file of the store: left alone", file_id)
                continue
            if file.envelope is not None:
                continue  # a zip entry: its envelope re-runs it
            if file.id in context.in_flight.held and file.failed_attempts >= context.settings.file_max_failures:
                continue
            context.in_flight.held.discard(file.id)  # released by `sftpsms files reprocess`
            ran += 1
            log.info("file=%s account=%s file_id=%s resumed from work/", quoted(file.name), file.account, file_id)
            if file.status == "completed":
                await file_away(context, file_id)
            else:
                await run_file(context, file_id)
            if await trio.to_thread.run_sync((work_dir / str(file_id)).exists):
                in_flight.next_look[file_id] = trio.current_time() + context.settings.work_retry_interval
        except Exception as error:
            # One file's trouble never holds up the others, nor fills the log at every look.
            if is_disk_full(error):
                log.warning("file_id=%s paused, the disk is full (%s): tried again later", file_id, error)
            elif file_id not in context.in_flight.broken:
                context.in_flight.broken.add(file_id)
                log.exception("file_id=%s cannot be recovered now: tried again at each look, logged once", file_id)
            in_flight.next_look[file_id] = trio.current_time() + context.settings.work_retry_interval
        finally:
            await release(context, lease)
            in_flight.release_file(file_id)
    return ran


def _work_entries(work_dir: Path) -> list[UUID]:
    if not work_dir.exists():
        return []
    found = []
    for entry in sorted(work_dir.iterdir()):
        try:
            found.append(UUID(entry.name))
        except ValueError:
            continue
    return found
