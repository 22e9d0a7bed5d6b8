"""The REST API, /api/v1/ (PRODUCT.md §9; issue 11 §3).

Every route authenticates (HTTP Basic, a `rest` key: actors/web/context.py) and answers JSON. A
request names data of its own account or of one of its sub-accounts (`?account=SUB`); anything
else is 404, the same answer as for data that does not exist, so ids of other accounts cannot be
probed. Lists page by an opaque `cursor` (`next` in the answer), at most MAX_PAGE rows a page.

Reads come from the read models (files, opt-outs, keys), the history (messages) and the event
store (accounts, a file's report rebuilt from its events), each in a worker thread; writes go
through the event writer like the CLI's (opt-outs) or into the account's Send_SMS folder, the same
pipeline as an SFTP upload (files).
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from functools import partial
from typing import Annotated, Any, TypeVar
from uuid import UUID

import orjson
import trio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.security import HTTPBasic
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile as FormFile
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response

from actors.file import file_report
from actors.session import KEY_PREFIX
from actors.web import intents
from actors.web.app import ApiError
from actors.web.context import Principal, WebContext
from actors.webhooks import ReplayRefused, replay_range
from eventstore.domain import WEBHOOK_EVENTS, DomainError, webhook_log_id
from eventstore.history import STATUSES, History, HistoryError, HistoryQuery
from eventstore.projections import ReadModels
from eventstore.store import SmsStore
from sftpsms import folders
from sftpsms.channels import CHANNELS, channel_active
from sftpsms.names import quoted
from sftpsms.numbers import normalise_msisdn
from sftpsms.passwords import hash_password

T = TypeVar("T")

MAX_PAGE = 1000
UPLOAD_CHUNK = 1 << 20

basic = HTTPBasic(auto_error=False, description="An API key of the rest channel: key id as the username, secret as the password")
router = APIRouter(prefix="/api/v1", dependencies=[Depends(basic)])


# ---- answers (the OpenAPI document's schemas) ---------------------------------------------------


class ErrorOut(BaseModel):
    error: str
    code: str | None = Field(None, description="the PRODUCT.md error code, where one applies")


class AccountOut(BaseModel):
    username: str
    email: str | None
    country: str
    created_at: str
    credits: int
    parent: str | None
    sub_accounts: list[str]


class FileOut(BaseModel):
    file_id: str
    account: str
    name: str
    receipt: int
    status: str
    error_code: str | None
    detail: str | None
    contacts: int | None
    messages_queued: int | None
    optouts_skipped: int | None
    contact_errors: int | None
    parts: int | None
    credits_used: int | None
    received_at: str
    completed_at: str | None


class FilesPage(BaseModel):
    files: list[FileOut]
    next: str | None


class FileDetail(FileOut):
    report: dict[str, Any] | None = Field(None, description="the file's report (PRODUCT.md §2), once it is completed")


class ReplyOut(BaseModel):
    text: str
    at: str
    opt_out: bool


class MessageOut(BaseModel):
    message_id: str
    account: str
    file: str
    file_id: str
    receipt: int
    index: int
    msisdn: str
    customer_id: str | None
    text: str
    parts: int
    sender_id: str | None
    queued_at: str
    submitted_at: str | None
    gateway: str | None
    gateway_id: str | None
    status: str
    error: str | None
    final_at: str | None
    refunded: int
    replies: list[ReplyOut]


class MessagesPage(BaseModel):
    messages: list[MessageOut]
    next: str | None


class OptOutsPage(BaseModel):
    account: str
    msisdns: list[str]
    next: str | None


class OptOutsChange(BaseModel):
    msisdns: list[str] = Field(..., min_length=1, max_length=10_000, description="numbers in any form the files accept")


class OptOutsChanged(BaseModel):
    account: str
    added: list[str] = []
    removed: list[str] = []


class Credits(BaseModel):
    account: str
    credits: int


class UploadAccepted(BaseModel):
    account: str
    name: str
    folder: str
    status: str = Field(description="'accepted': picked up for processing, as an SFTP upload; its report follows")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut}, 401: {"model": ErrorOut}, 404: {"model": ErrorOut}, 422: {"model": ErrorOut},
}


# ---- who is asking, and for which account ------------------------------------------------------


def context_of(request: Request) -> WebContext:
    context: WebContext = request.app.state.context
    return context


async def principal(request: Request) -> Principal:
    peer = request.client.host if request.client else "unknown"
    return await context_of(request).authenticate(request.headers.get("authorization"), peer)


Caller = Annotated[Principal, Depends(principal)]
AccountParam = Annotated[
    str | None, Query(description="a sub-account's username, to read its data (default: your own account)", max_length=64)
]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
CursorParam = Annotated[str | None, Query(max_length=512)]


def target(caller: Principal, account: str | None) -> str:
    """The account a request reads: its own, or a sub-account's; anything else is not found."""
    name = account or caller.account
    if not caller.may_see(name):
        raise ApiError(404, f"no such account: {name}")
    return name


async def in_thread(function: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(function)


async def models(context: WebContext, read: Callable[[ReadModels], T]) -> T:
    """`read` on the read models once they hold everything written so far (a change made by the
    previous request is seen by the next)."""
    await context.catch_up()
    return await in_thread(with_models(context, read))


def with_models(context: WebContext, read: Callable[[ReadModels], T]) -> Callable[[], T]:
    def run() -> T:
        models = ReadModels(context.readmodels_path)
        try:
            return read(models)
        finally:
            models.close()

    return run


def with_history(context: WebContext, read: Callable[[History], T]) -> Callable[[], T]:
    def run() -> T:
        history = History(context.history_path)
        try:
            return read(history)
        finally:
            history.close()

    return run


def _cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode()


def _uncursor(cursor: str, size: int) -> list[Any]:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, orjson.JSONDecodeError):
        raise ApiError(400, "not a cursor this API gave out") from None
    if not isinstance(values, list) or len(values) != size:
        raise ApiError(400, "not a cursor this API gave out")
    return values


async def visible_file(context: WebContext, caller: Principal, file_id: str) -> dict[str, Any]:
    try:
        UUID(file_id)
    except ValueError:
        raise ApiError(404, f"no such file: {file_id}") from None
    row = await models(context, lambda m: m.file_row(file_id))
    if row is None or not caller.may_see(row["account"]):
        raise ApiError(404, f"no such file: {file_id}")
    return row


# ---- the account ---------------------------------------------------------------------------


@router.get("/account", response_model=AccountOut, responses=ERRORS, summary="the account you act as")
async def get_account(request: Request, caller: Caller, account: AccountParam = None) -> Any:
    found = await context_of(request).account(target(caller, account))
    return {
        "username": found.username, "email": found.email, "country": found.country, "created_at": found.created_at,
        "credits": found.balance, "parent": found.parent, "sub_accounts": found.sub_accounts,
    }


@router.get("/credits", response_model=Credits, responses=ERRORS, summary="the credit balance")
async def get_credits(request: Request, caller: Caller, account: AccountParam = None) -> Any:
    name = target(caller, account)
    found = await context_of(request).account(name)
    return {"account": name, "credits": found.balance}


# ---- files ---------------------------------------------------------------------------------


@router.get("/files", response_model=FilesPage, responses=ERRORS, summary="files uploaded, newest first")
async def list_files(
    request: Request, caller: Caller, account: AccountParam = None, name: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = 100, cursor: CursorParam = None,
) -> Any:
    context = context_of(request)
    who = target(caller, account)
    after = _uncursor(cursor, 2) if cursor else None
    rows = await models(context, lambda m: m.files_page(who, name=name, before=after, limit=limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if rows else None
    return {
        "files": rows,
        "next": _cursor([last["received_at"], last["receipt"]]) if more and last is not None else None,
    }


@router.get("/files/{file_id}", response_model=FileDetail, responses=ERRORS, summary="one file, with its report")
async def get_file(request: Request, caller: Caller, file_id: str) -> Any:
    context = context_of(request)
    row = await visible_file(context, caller, file_id)
    report = None
    if row["completed_at"] is not None:
        report = await context.store.run(partial(file_report, file_id=UUID(file_id)))
    return {**row, "report": report}


@router.get(
    "/files/{file_id}/original", responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}},
    response_class=Response, summary="the bytes uploaded, as filed in Processed or Errors",
)
async def get_original(request: Request, caller: Caller, file_id: str) -> Any:
    context = context_of(request)
    row = await visible_file(context, caller, file_id)
    if row["completed_at"] is None:
        raise ApiError(404, f"{row['name']} is still being processed: its original is filed when it completes")
    root = context.settings.account_root(row["account"])
    folder = root / (folders.PROCESSED if row["status"] == "processed" else folders.ERRORS)
    filed = await in_thread(lambda: folders.outputs_name(folder, row["name"], row["file_id"]))
    path = folder / filed
    if row.get("envelope"):
        raise ApiError(404, f"{row['name']} came inside {row['envelope']}: download the zip's own entry")
    if not await in_thread(path.is_file):
        raise ApiError(404, f"{filed} is no longer in {folder.name} (deleted by the account?)")
    return FileResponse(path, media_type="application/octet-stream", filename=filed)


@router.get("/files/{file_id}/messages", response_model=MessagesPage, responses=ERRORS, summary="a file's messages, in contact order")
async def file_messages(request: Request, caller: Caller, file_id: str, limit: Limit = 100, cursor: CursorParam = None) -> Any:
    context = context_of(request)
    await visible_file(context, caller, file_id)
    return await _history_page(context, HistoryQuery(file_id=file_id), limit, cursor)


# ---- multipart bodies: one file part named `file` -----------------------------------------------


async def _file_part(request: Request) -> AsyncIterator[FormFile]:
    """The one file part named `file` of a multipart body, read here rather than by FastAPI so that
    every malformed body is a 400 with its PRODUCT.md code: no such part, a plain field or a part
    with an empty filename (how a form says no file was chosen) is RequiredParameter.Missing; a
    body that is not multipart as it says, parts without a name and two file parts are
    File.Corrupt. The parts' temporary files are closed after the route."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise ApiError(400, "send the file as multipart/form-data, in a part named file", "RequiredParameter.Missing")
    try:
        form = await request.form(max_files=4, max_fields=16)
    except HTTPException as refused:  # starlette's MultiPartException, as a 400
        raise ApiError(400, f"the multipart body cannot be read: {refused.detail}", "File.Corrupt") from None
    try:
        parts = form.getlist("file")
        if not parts:
            raise ApiError(400, "the body has no part named file", "RequiredParameter.Missing")
        if len(parts) > 1:
            raise ApiError(400, f"the body has {len(parts)} parts named file: send one", "File.Corrupt")
        part = parts[0]
        if not isinstance(part, FormFile):
            raise ApiError(400, "the part named file is a plain field: send it as a file (with a filename)",
                           "RequiredParameter.Missing")
        if not part.filename:
            raise ApiError(400, "the part named file has an empty filename: no file was chosen",
                           "RequiredParameter.Missing")
        yield part
    finally:
        await form.close()


FilePart = Annotated[FormFile, Depends(_file_part)]


def _multipart_body(description: str) -> dict[str, Any]:
    """The OpenAPI request body of a route that takes a FilePart (read by _file_part, so FastAPI
    does not describe it)."""
    schema = {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary", "description": description}},
    }
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


@router.post(
    "/files", response_model=UploadAccepted, status_code=202, responses={**ERRORS, 413: {"model": ErrorOut}},
    summary="upload a file (.json, .txt or .zip): the same pipeline and report as an SFTP upload into Send_SMS",
    openapi_extra=_multipart_body("the file, as it would be uploaded over SFTP"),
)
async def upload_file(
    request: Request, caller: Caller, file: FilePart,
    validate: Annotated[bool, Query(description="only check it (the Validate folder), never send")] = False,
) -> Any:
    context = context_of(request)
    name = file.filename or ""
    refusal = folders.upload_refusal(name)
    if refusal is not None:
        raise ApiError(400, refusal)
    folder = folders.VALIDATE if validate else folders.SEND
    root = context.settings.account_root(caller.account)
    await in_thread(lambda: folders.ensure_account_folders(root))
    limit = context.settings.max_file_bytes
    temporary = root / folder / f".rest-{secrets.token_hex(8)}.part"
    written = 0
    try:
        with temporary.open("wb") as out:
            while chunk := await file.read(UPLOAD_CHUNK):
                written += len(chunk)
                if written > limit:
                    raise ApiError(413, f"the file is over {limit} bytes (max_file_bytes)", "File.ParseError")
                await in_thread(partial(out.write, chunk))
            await in_thread(out.flush)
            await in_thread(partial(os.fsync, out.fileno()))
        await in_thread(partial(os.replace, temporary, root / folder / name))
    finally:
        if temporary.exists():
            temporary.unlink()
    await context.gate.upload(caller.account, root, name, folder)
    return {"account": caller.account, "name": name, "folder": folder, "status": "accepted"}


# ---- messages and the history ------------------------------------------------------------------


async def _history_page(context: WebContext, query: HistoryQuery, limit: int, cursor: str | None) -> dict[str, Any]:
    def read(history: History) -> dict[str, Any]:
        return history.page(query, limit=limit, cursor=cursor)

    try:
        return await in_thread(with_history(context, read))
    except HistoryError as error:
        raise ApiError(400, str(error)) from None


@router.get("/messages", response_model=MessagesPage, responses=ERRORS, summary="the history: messages by number, customerId, time, status")
async def messages(
    request: Request, caller: Caller, account: AccountParam = None,
    msisdn: Annotated[str | None, Query(max_length=32, description="a number in any form the files accept")] = None,
    customer_id: Annotated[str | None, Query(alias="customerId", max_length=256)] = None,
    since: Annotated[str | None, Query(max_length=40, description="ISO-8601 UTC, inclusive, of the time queued")] = None,
    until: Annotated[str | None, Query(max_length=40, description="ISO-8601 UTC, exclusive")] = None,
    status: Annotated[str | None, Query(description=f"one of {', '.join(STATUSES)}")] = None,
    limit: Limit = 100, cursor: CursorParam = None,
) -> Any:
    context = context_of(request)
    who = target(caller, account)
    number = None
    if msisdn is not None:
        found = await context.account(who)
        number = normalise_msisdn(msisdn, found.country)
        if number is None:
            raise ApiError(400, f"{quoted(msisdn)} is not a phone number")
    query = HistoryQuery(msisdn=number, customer_id=customer_id, account=who, since=since, until=until, status=status)
    return await _history_page(context, query, limit, cursor)


# ---- opt-outs ------------------------------------------------------------------------------


@router.get("/optouts", response_model=OptOutsPage, responses=ERRORS, summary="the opt-out list")
async def list_optouts(
    request: Request, caller: Caller, account: AccountParam = None, limit: Limit = 1000, cursor: CursorParam = None,
) -> Any:
    context = context_of(request)
    who = target(caller, account)
    after = _uncursor(cursor, 1)[0] if cursor else ""
    numbers = await models(context, lambda m: m.optouts_page(who, after=str(after), limit=limit + 1))
    more = len(numbers) > limit
    numbers = numbers[:limit]
    return {"account": who, "msisdns": numbers, "next": _cursor([numbers[-1]]) if more and numbers else None}


async def _normalised(context: WebContext, account: str, raw: list[str]) -> list[str]:
    country = (await context.account(account)).country
    numbers: list[str] = []
    for text in raw:
        number = normalise_msisdn(text, country)
        if number is None:
            raise ApiError(400, f"{quoted(text)} is not a phone number")
        numbers.append(number)
    return numbers


@router.post("/optouts", response_model=OptOutsChanged, responses=ERRORS, summary="opt numbers out")
async def add_optouts(request: Request, caller: Caller, change: OptOutsChange, account: AccountParam = None) -> Any:
    context = context_of(request)
    who = target(caller, account)
    numbers = await _normalised(context, who, change.msisdns)
    await context.store.run(partial(SmsStore.change_optouts, username=who, add=numbers))
    return {"account": who, "added": numbers}


@router.delete("/optouts/{msisdn}", response_model=OptOutsChanged, responses=ERRORS, summary="opt a number back in")
async def remove_optout(request: Request, caller: Caller, msisdn: str, account: AccountParam = None) -> Any:
    context = context_of(request)
    who = target(caller, account)
    numbers = await _normalised(context, who, [msisdn])
    await context.store.run(partial(SmsStore.change_optouts, username=who, add=[], remove=numbers))
    return {"account": who, "removed": numbers}




async def _body_csv_numbers(file: FormFile, limit: int) -> list[str]:
    """The numbers of an uploaded CSV: the first column of every row (a header row without digits
    is skipped), at most `limit` rows."""
    import csv
    import io

    raw = await file.read(MAX_IMPORT_BYTES + 1)
    if len(raw) > MAX_IMPORT_BYTES:
        raise ApiError(413, f"the CSV is over {MAX_IMPORT_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ApiError(400, "the CSV is not UTF-8", "File.Corrupt") from None
    numbers: list[str] = []
    try:
        # newline="": csv sees the line endings as they are, so a lone CR ends a row instead of
        # raising "new-line character seen in unquoted field" (the 500 schemathesis found once).
        for row in csv.reader(io.StringIO(text, newline="")):
            if not row or not row[0].strip():
                continue
            cell = row[0].strip()
            if not numbers and not any(ch.isdigit() for ch in cell):
                continue  # a header
            numbers.append(cell)
            if len(numbers) > limit:
                raise ApiError(400, f"more than {limit} numbers in one import")
    except csv.Error as error:  # a field over csv's limit (131 072 characters)
        raise ApiError(400, f"the CSV cannot be read: {error}", "File.Corrupt") from None
    if not numbers:
        raise ApiError(400, "the CSV holds no numbers", "RequiredParameter.Missing")
    return numbers


MAX_IMPORT_BYTES = 8 << 20
MAX_IMPORT_NUMBERS = 100_000


@router.post("/optouts/import", response_model=OptOutsChanged, responses={**ERRORS, 413: {"model": ErrorOut}},
             summary="opt out every number of a CSV (first column; a header row is skipped)",
             openapi_extra=_multipart_body("CSV, numbers in the first column"))
async def import_optouts(
    request: Request, caller: Caller, file: FilePart,
    account: AccountParam = None,
) -> Any:
    context = context_of(request)
    who = target(caller, account)
    raw = await _body_csv_numbers(file, MAX_IMPORT_NUMBERS)
    numbers = await _normalised(context, who, raw)
    await context.store.run(partial(SmsStore.change_optouts, username=who, add=numbers))
    return {"account": who, "added": numbers}


# ---- replies -------------------------------------------------------------------------------


class ReplyRow(BaseModel):
    key: int
    message_id: str | None
    file_id: str | None
    file: str | None
    msisdn: str
    text: str
    at: str
    opt_out: bool
    gateway: str


class RepliesPage(BaseModel):
    replies: list[ReplyRow]
    next: str | None


@router.get("/replies", response_model=RepliesPage, responses=ERRORS, summary="replies to the account's messages, oldest first")
async def list_replies(
    request: Request, caller: Caller, account: AccountParam = None,
    since: Annotated[str | None, Query(max_length=40, description="ISO-8601 UTC, inclusive")] = None,
    limit: Limit = 100, cursor: CursorParam = None,
) -> Any:
    context = context_of(request)
    who = target(caller, account)
    after = _uncursor(cursor, 1)[0] if cursor else 0
    if not isinstance(after, int):
        raise ApiError(400, "not a cursor this API gave out")
    rows = await in_thread(with_history(context, lambda h: h.replies(who, after=after, limit=limit + 1, since=since)))
    more = len(rows) > limit
    rows = rows[:limit]
    return {"replies": rows, "next": _cursor([rows[-1]["key"]]) if more and rows else None}


# ---- credits: the ledger, sub-accounts and transfers ---------------------------------------------


class LedgerEntry(BaseModel):
    version: int
    at: str
    entry: str = Field(description="added, reserved, refunded, transferred_out or transferred_in")
    amount: int
    balance: int
    file_id: str | None
    counterparty: str | None
    reason: str | None


class LedgerPage(BaseModel):
    account: str
    entries: list[LedgerEntry]
    next: str | None


@router.get("/credits/ledger", response_model=LedgerPage, responses=ERRORS, summary="every change of the balance, oldest first")
async def ledger(
    request: Request, caller: Caller, account: AccountParam = None, limit: Limit = 100, cursor: CursorParam = None,
) -> Any:
    context = context_of(request)
    who = target(caller, account)
    after = _uncursor(cursor, 1)[0] if cursor else 0
    if not isinstance(after, int):
        raise ApiError(400, "not a cursor this API gave out")
    entries = await context.store.run(partial(SmsStore.ledger, username=who))
    entries = [entry for entry in entries if entry["version"] > after]
    more = len(entries) > limit
    entries = entries[:limit]
    return {"account": who, "entries": entries, "next": _cursor([entries[-1]["version"]]) if more and entries else None}


class SubAccount(BaseModel):
    username: str
    credits: int
    created_at: str


class SubAccounts(BaseModel):
    account: str
    sub_accounts: list[SubAccount]


@router.get("/subaccounts", response_model=SubAccounts, responses=ERRORS, summary="your sub-accounts and their balances")
async def sub_accounts(request: Request, caller: Caller) -> Any:
    context = context_of(request)
    parent = await context.account(caller.account)
    subs = [await context.account(name) for name in parent.sub_accounts]
    return {
        "account": caller.account,
        "sub_accounts": [{"username": s.username, "credits": s.balance, "created_at": s.created_at} for s in subs],
    }


class TransferIn(BaseModel):
    to: str = Field(..., max_length=64, description="one of your sub-accounts")
    amount: int = Field(..., gt=0, le=1_000_000_000)


class TransferOut(BaseModel):
    from_account: str
    to: str
    amount: int
    balances: dict[str, int]


@router.post("/transfers", response_model=TransferOut, responses=ERRORS, summary="move credits to a sub-account")
async def transfer(request: Request, caller: Caller, order: TransferIn) -> Any:
    context = context_of(request)
    parent = await context.account(caller.account)
    if order.to not in parent.sub_accounts:
        raise ApiError(404, f"no such sub-account: {order.to}")
    if parent.balance < order.amount:
        raise ApiError(400, f"{caller.account} has {parent.balance} credits, not {order.amount}", "InsufficientCredits")
    try:
        mine, theirs = await context.store.run(
            partial(SmsStore.transfer_credits, parent=caller.account, sub=order.to, amount=order.amount)
        )
    except DomainError as error:
        raise ApiError(400, str(error), "InsufficientCredits" if "credit" in str(error).lower() else None) from None
    return {"from_account": caller.account, "to": order.to, "amount": order.amount,
            "balances": {caller.account: mine, order.to: theirs}}


# ---- API keys ------------------------------------------------------------------------------


class KeyRow(BaseModel):
    key_id: str
    channel: str
    created_at: str
    revoked_at: str | None


class KeysOut(BaseModel):
    account: str
    keys: list[KeyRow]
    channels: dict[str, bool]


class KeyIn(BaseModel):
    channel: str = Field(..., description=f"one of {', '.join(CHANNELS)}")


class KeyCreated(KeyRow):
    secret: str = Field(description="shown only in this answer")


def _channels(account: Any) -> dict[str, bool]:
    created = datetime.fromisoformat(account.created_at)
    return {channel: channel_active(created, channel, account.channels_with_keys) for channel in CHANNELS}


@router.get("/keys", response_model=KeysOut, responses=ERRORS, summary="the account's API keys and which channels are on")
async def list_keys(request: Request, caller: Caller, account: AccountParam = None) -> Any:
    context = context_of(request)
    who = target(caller, account)
    found = await context.account(who)
    rows = await models(context, lambda m: m.api_keys(who))
    return {"account": who, "keys": rows, "channels": _channels(found)}


@router.post("/keys", response_model=KeyCreated, status_code=201, responses=ERRORS, summary="create a key (activates its channel)")
async def create_key(request: Request, caller: Caller, order: KeyIn) -> Any:
    context = context_of(request)
    if order.channel not in CHANNELS:
        raise ApiError(400, f"a channel is one of {', '.join(CHANNELS)}")
    key_id = KEY_PREFIX + secrets.token_hex(8)
    secret = secrets.token_urlsafe(24)
    hashed = await in_thread(partial(hash_password, secret))
    now = context.clock()
    await context.store.run(
        partial(SmsStore.create_api_key, username=caller.account, key_id=key_id, channel=order.channel, secret_hash=hashed, now=now)
    )
    return {"key_id": key_id, "channel": order.channel, "created_at": now.isoformat(), "revoked_at": None, "secret": secret}


@router.delete("/keys/{key_id}", response_model=KeyRow, responses=ERRORS, summary="revoke a key (its channel closes with its last key)")
async def revoke_key(request: Request, caller: Caller, key_id: str) -> Any:
    key = await intents.revoke_key(context_of(request), caller.account, key_id)
    return {"key_id": key_id, "channel": key.channel, "created_at": key.created_at, "revoked_at": key.revoked_at}


# ---- webhooks ------------------------------------------------------------------------------


class WebhookRow(BaseModel):
    url: str
    events: list[str]
    delivered: int
    failed: int


class WebhooksOut(BaseModel):
    account: str
    webhooks: list[WebhookRow]


class WebhookIn(BaseModel):
    url: str = Field(..., max_length=2000, description="http:// or https://")
    events: list[str] = Field(default_factory=lambda: list(WEBHOOK_EVENTS), description="delivery, reply or both")


class WebhookSecret(BaseModel):
    url: str
    events: list[str]
    secret: str = Field(description="the signing secret (Standard Webhooks), shown only in this answer")


class WebhookRef(BaseModel):
    url: str = Field(..., max_length=2000)


class WebhookReplayIn(WebhookRef):
    since: str = Field(..., max_length=40, description="a notification position (digits) or an ISO time")
    until: str | None = Field(None, max_length=40)


class WebhookReplayOut(BaseModel):
    webhooks: dict[str, dict[str, int]]
    events: int
    delivered: int
    failed: int


class DeliveryRow(BaseModel):
    version: int
    event: str = Field(description="WebhookDelivered, WebhookFailed or WebhookReplay")
    model_config = {"extra": "allow"}


class DeliveriesPage(BaseModel):
    url: str
    deliveries: list[DeliveryRow]
    next: str | None


_hooks = intents.webhooks_of


@router.get("/webhooks", response_model=WebhooksOut, responses=ERRORS, summary="the account's webhooks, with delivered/failed counts")
async def list_webhooks(request: Request, caller: Caller) -> Any:
    context = context_of(request)

    def counts(store: SmsStore, url: str) -> tuple[int, int]:
        if not store.exists(webhook_log_id(caller.account, url)):
            return 0, 0
        log = store.webhook_log(caller.account, url)
        return int(log.delivered), int(log.failed)

    rows = []
    for url, hook in sorted((await _hooks(context, caller.account)).items()):
        delivered, failed = await context.store.run(partial(counts, url=url))
        rows.append({"url": url, "events": list(hook["events"]), "delivered": delivered, "failed": failed})
    return {"account": caller.account, "webhooks": rows}


@router.post("/webhooks", response_model=WebhookSecret, status_code=201, responses=ERRORS, summary="POST the account's events to a URL")
async def add_webhook(request: Request, caller: Caller, order: WebhookIn) -> Any:
    secret = await intents.add_webhook(context_of(request), caller.account, order.url, order.events)
    return {"url": order.url, "events": sorted(set(order.events)), "secret": secret}


@router.post("/webhooks/remove", response_model=WebhookRef, responses=ERRORS, summary="stop POSTing to a URL")
async def remove_webhook(request: Request, caller: Caller, order: WebhookRef) -> Any:
    await intents.remove_webhook(context_of(request), caller.account, order.url)
    return {"url": order.url}


@router.post("/webhooks/rotate", response_model=WebhookSecret, responses=ERRORS, summary="a new signing secret for a URL")
async def rotate_webhook(request: Request, caller: Caller, order: WebhookRef) -> Any:
    events, secret = await intents.rotate_webhook(context_of(request), caller.account, order.url)
    return {"url": order.url, "events": events, "secret": secret}


@router.get("/webhooks/deliveries", response_model=DeliveriesPage, responses=ERRORS, summary="a webhook's delivery log")
async def webhook_deliveries(
    request: Request, caller: Caller, url: Annotated[str, Query(max_length=2000)], limit: Limit = 100,
    cursor: CursorParam = None,
) -> Any:
    context = context_of(request)
    if url not in await _hooks(context, caller.account):
        raise ApiError(404, f"no such webhook: {url}")
    after = _uncursor(cursor, 1)[0] if cursor else 0
    if not isinstance(after, int):
        raise ApiError(400, "not a cursor this API gave out")
    rows = await context.store.run(
        partial(SmsStore.webhook_deliveries, account=caller.account, url=url, after=after, limit=limit + 1)
    )
    more = len(rows) > limit
    rows = rows[:limit]
    return {"url": url, "deliveries": rows, "next": _cursor([rows[-1]["version"]]) if more and rows else None}


@router.post("/webhooks/replay", response_model=WebhookReplayOut, responses=ERRORS,
             summary="POST a range of events again, with the same webhook ids and bodies")
async def replay(request: Request, caller: Caller, order: WebhookReplayIn) -> Any:
    context = context_of(request)
    if order.url not in await _hooks(context, caller.account):
        raise ApiError(404, f"no such webhook: {order.url}")
    try:
        return await in_thread(
            partial(replay_range, context.settings, caller.account, order.since, order.until, order.url)
        )
    except ReplayRefused as refused:
        raise ApiError(400, str(refused)) from None


# ---- cancel, pause, resume (issue 12) ------------------------------------------------------------


class ControlOut(BaseModel):
    file_id: str
    name: str
    action: str
    status: str = Field(description="done (honoured), pending (recorded; honoured when the dispatcher can) or failed")
    error_code: str | None = None
    detail: str
    dispatch: str | None = Field(None, description="running, paused or cancelled")
    messages_cancelled: int | None = None
    credits_refunded: int | None = None


async def control_file(context: WebContext, caller: Principal, file_id: str, action: str, wait: float) -> dict[str, Any]:
    """Record a cancel, pause or resume of a file and wait up to `wait` seconds for the dispatcher
    to honour it (then the filed report is rewritten), as `sftpsms files cancel` does."""
    from actors.controls import refile_report
    from eventstore import controls
    from sftpsms.control import ControlRefused, outcome_text

    row = await visible_file(context, caller, file_id)
    base = {"file_id": file_id, "name": row["name"], "action": action}
    try:
        request = await context.store.run(
            partial(controls.request_control, account=row["account"], name=row["name"], action=action, via="rest",
                    now=context.clock())
        )
    except ControlRefused as refused:
        return {**base, "status": "failed", "error_code": refused.code, "detail": refused.detail}
    if str(request.file_id) != file_id:
        raise ApiError(409, f"a later upload of {row['name']} is the one in the dispatcher: control that one")
    control = await context.store.run(partial(controls.file_control, file=request.file_id))
    if request.version is not None:
        with trio.move_on_after(wait):
            while control is None or control.applied < request.version:
                await trio.sleep(0.05)
                control = await context.store.run(partial(controls.file_control, file=request.file_id))
    honoured = control is not None and (request.version is None or control.applied >= request.version)
    if not honoured:
        return {**base, "status": "pending", "detail": f"{action} recorded; the service honours it as soon as it can",
                "dispatch": None if control is None else control.state}
    assert control is not None
    await context.store.run(partial(refile_report, context.settings, file_id=request.file_id))
    detail = outcome_text(action, name=row["name"], done=request.version is not None,
                          messages_cancelled=control.messages_cancelled, credits_refunded=control.credits_refunded)
    return {**base, "status": "done", "detail": detail, "dispatch": control.state,
            "messages_cancelled": control.messages_cancelled, "credits_refunded": control.credits_refunded}


ControlWait = Annotated[float, Query(ge=0, le=60, description="seconds to wait for the dispatcher to honour it")]


@router.post("/files/{file_id}/cancel", response_model=ControlOut, responses=ERRORS,
             summary="cancel a file: its unsent messages expire now, their credits refunded")
async def cancel_file(request: Request, caller: Caller, file_id: str, wait: ControlWait = 10) -> Any:
    return await control_file(context_of(request), caller, file_id, "cancel", wait)


@router.post("/files/{file_id}/pause", response_model=ControlOut, responses=ERRORS,
             summary="pause a file: its unsent messages wait (End still applies)")
async def pause_file(request: Request, caller: Caller, file_id: str, wait: ControlWait = 10) -> Any:
    return await control_file(context_of(request), caller, file_id, "pause", wait)


@router.post("/files/{file_id}/resume", response_model=ControlOut, responses=ERRORS, summary="resume a paused file")
async def resume_file(request: Request, caller: Caller, file_id: str, wait: ControlWait = 10) -> Any:
    return await control_file(context_of(request), caller, file_id, "resume", wait)
