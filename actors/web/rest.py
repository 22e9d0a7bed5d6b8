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
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, TypeVar
from uuid import UUID

import orjson
import trio
from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.security import HTTPBasic
from pydantic import BaseModel, Field
from starlette.responses import FileResponse, Response

from actors.file import file_report
from actors.web.app import ApiError
from actors.web.context import Principal, WebContext
from eventstore.history import STATUSES, History, HistoryError, HistoryQuery
from eventstore.projections import ReadModels
from eventstore.store import SmsStore
from sftpsms import folders
from sftpsms.names import quoted
from sftpsms.numbers import normalise_msisdn

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


@router.post(
    "/files", response_model=UploadAccepted, status_code=202, responses={**ERRORS, 413: {"model": ErrorOut}},
    summary="upload a file (.json, .txt or .zip): the same pipeline and report as an SFTP upload into Send_SMS",
)
async def upload_file(
    request: Request, caller: Caller, file: Annotated[UploadFile, File(description="the file, as it would be uploaded over SFTP")],
    validate: Annotated[bool, Query(description="only check it (the Validate folder), never send")] = False,
) -> Any:
    context = context_of(request)
    name = file.filename or ""
    refusal = folders.upload_refusal(name)
    if refusal is not None:
        raise ApiError(400, refusal)
    folder = folders.SEND
    if validate:
        folder = getattr(folders, "VALIDATE", None) or ""
        if not folder:
            raise ApiError(400, "this server has no Validate folder")
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
    if folder == folders.SEND:
        await context.gate.upload(caller.account, root, name)
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
    numbers = []
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


