"""The control panel website (issue 11 §4): server-rendered pages (Jinja2) on the node's one HTTP
server, for an account's own people, logged in with its username and password.

Sessions are signed cookies (itsdangerous, a key kept in DATA/panel.key so every node of a
cluster accepts every other's), HttpOnly and SameSite=Lax, valid SESSION_SECONDS. Every form carries
a CSRF token bound to the session (the login form one bound to a pre-login cookie); a POST without
the right one is 403. Login failures count toward the same lockout as SFTP and FTP (the doors'
AccountGate on the `web` channel, which takes no API keys). Pages set a Content-Security-Policy
allowing only this server's own script and styles; the one script (static/panel.js) polls a
file's progress so a file being sent updates without reloading.

What each page shows comes from the same places as the REST API's answers (actors/web/rest.py):
read models, the history, the event store.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.responses import FileResponse, RedirectResponse, Response

from actors.file import file_report
from actors.session import LoginBusy
from actors.sftp_server import LoginRefused
from actors.shared_files import publish_once
from actors.web import intents
from actors.web.app import ApiError, json_response
from actors.web.context import WebContext
from actors.web.rest import (
    _body_csv_numbers,
    _channels,
    _normalised,
    in_thread,
    models,
    with_history,
)
from actors.webhooks import ReplayRefused, replay_range
from eventstore.domain import WEBHOOK_EVENTS, DomainError, webhook_log_id
from eventstore.history import STATUSES, HistoryError, HistoryQuery
from eventstore.store import SmsStore
from sftpsms.channels import CHANNELS
from sftpsms.numbers import normalise_msisdn
from sftpsms.passwords import hash_password

HERE = Path(__file__).parent
SESSION_COOKIE = "sftpsms_session"
LOGIN_COOKIE = "sftpsms_login"
SESSION_SECONDS = 12 * 3600
KEY_FILE = "panel.key"
PAGE = 100
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")


# ---- sessions ------------------------------------------------------------------------------


def _key(context: WebContext) -> bytes:
    """The signing key, made once per data directory (0600) and shared by every node."""
    return publish_once(context.settings.data_dir / KEY_FILE, lambda: secrets.token_bytes(32))


def _signer(context: WebContext, salt: str) -> URLSafeTimedSerializer:
    cached = getattr(context, "_panel_key", None)
    if cached is None:
        cached = _key(context)
        context._panel_key = cached  # type: ignore[attr-defined]
    return URLSafeTimedSerializer(cached, salt=salt)


class Session:
    def __init__(self, username: str, csrf: str, visible: list[str]) -> None:
        self.username, self.csrf, self.visible = username, csrf, visible


def session_of(request: Request) -> Session | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        data = _signer(_context(request), "session").loads(raw, max_age=SESSION_SECONDS)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("u"), str) or not isinstance(data.get("c"), str):
        return None
    return Session(data["u"], data["c"], [data["u"]])


class LoginNeeded(Exception):  # noqa: N818 - not an error: a page asked for before logging in
    """A page asked for without a valid session: answered by a redirect to /login (login_needed)."""


def _session(request: Request) -> Session:
    session = session_of(request)
    if session is None:
        raise LoginNeeded
    return session


def _json_session(request: Request) -> Session:
    """The session of a script's request (static/panel.js): a 401 without one, never a redirect."""
    session = session_of(request)
    if session is None:
        raise ApiError(401, "log in again")
    return session


async def login_needed(request: Request, _: Exception) -> Response:
    """The app's handler of LoginNeeded: back to this page once logged in."""
    return _login_redirect(request)


# A page's session (a redirect to /login without one, as REST's Caller is a 401 without a key).
PageSession = Annotated[Session, Depends(_session)]


async def _posted_form(request: Request, session: PageSession) -> dict[str, Any]:
    return await _form(request, session)


# A posted form of the session (403 unless its CSRF token is the session's).
PostedForm = Annotated[dict[str, Any], Depends(_posted_form)]


def _context(request: Request) -> WebContext:
    context: WebContext = request.app.state.context
    return context


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name, value, max_age=max_age, httponly=True, samesite="lax", secure=_secure(request), path="/"
    )


def _headers(response: Response) -> Response:
    response.headers["content-security-policy"] = CSP
    response.headers["x-frame-options"] = "DENY"
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["referrer-policy"] = "same-origin"
    response.headers["cache-control"] = "no-store"
    return response


def _login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


async def _page(request: Request, name: str, session: Session, **values: Any) -> Response:
    context = _context(request)
    account = await context.account(session.username)
    values.setdefault("flash", request.query_params.get("flash"))
    values.setdefault("error", request.query_params.get("error"))
    response = templates.TemplateResponse(
        request, name, {"session": session, "me": account, "nav": NAV, "path": request.url.path, **values}
    )
    return _headers(response)


NAV = (
    ("/files", "Files"), ("/search", "Search"), ("/replies", "Replies"), ("/optouts", "Opt-outs"),
    ("/keys", "API keys"), ("/subaccounts", "Sub-accounts"), ("/webhooks", "Webhooks"),
    ("/ledger", "Credits"), ("/chart", "Activity"),
)


async def _form(request: Request, session: Session | None) -> dict[str, Any]:
    """The posted form, once its CSRF token matched the session's."""
    form = await request.form()
    token = form.get("csrf")
    expected = session.csrf if session is not None else None
    if not isinstance(token, str) or expected is None or not hmac.compare_digest(token, expected):
        raise ApiError(403, "the form's security token is missing or stale: reload the page and try again")
    return dict(form)


def _back(path: str, *, flash: str | None = None, error: str | None = None) -> Response:
    query = f"?flash={quote(flash)}" if flash else f"?error={quote(error)}" if error else ""
    return RedirectResponse(path + query, status_code=303)


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never another host)."""
    if not target or not target.startswith("/") or target.startswith("//") or urlsplit(target).netloc:
        return "/files"
    return target


async def _visible(request: Request, session: Session) -> list[str]:
    account = await _context(request).account(session.username)
    return [session.username, *account.sub_accounts]


async def _which(request: Request, session: Session) -> str:
    """`?account=SUB` for a parent looking at a sub-account, else the session's own account."""
    wanted = request.query_params.get("account") or session.username
    if wanted not in await _visible(request, session):
        raise ApiError(404, f"no such account: {wanted}")
    return wanted


# ---- login ---------------------------------------------------------------------------------


@router.get("/")
async def root(request: Request) -> Response:
    return RedirectResponse("/files" if session_of(request) else "/login", status_code=303)


@router.get("/login")
async def login_page(request: Request) -> Response:
    token = secrets.token_urlsafe(24)
    response = templates.TemplateResponse(
        request, "login.html",
        {"csrf": token, "next": _safe_next(request.query_params.get("next")), "error": request.query_params.get("error")},
    )
    _cookie(response, request, LOGIN_COOKIE, _signer(_context(request), "login").dumps(token), 3600)
    return _headers(response)


@router.post("/login")
async def login(request: Request) -> Response:
    context = _context(request)
    form = await request.form()
    token, cookie = form.get("csrf"), request.cookies.get(LOGIN_COOKIE, "")
    try:
        expected = _signer(context, "login").loads(cookie, max_age=3600)
    except BadSignature:
        expected = None
    if not isinstance(token, str) or not isinstance(expected, str) or not hmac.compare_digest(token, expected):
        raise ApiError(403, "the login form's security token is missing or stale: reload the page and try again")
    username, password = str(form.get("username", "")).strip(), str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "")))
    peer = request.client.host if request.client else "unknown"
    try:
        if not username or not password:
            raise LoginRefused("give your username and password")
        login_ = await _panel_gate(context).login(username, password, peer)
    except LoginBusy as busy:
        return _back("/login", error=busy.message)
    except LoginRefused as refused:
        return RedirectResponse(f"/login?error={quote(refused.message)}&next={quote(target, safe='')}", status_code=303)
    response = RedirectResponse(target, status_code=303)
    data = {"u": login_.account, "c": secrets.token_urlsafe(24)}
    _cookie(response, request, SESSION_COOKIE, _signer(context, "session").dumps(data), SESSION_SECONDS)
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


def _panel_gate(context: WebContext) -> Any:
    gate = context.panel_gate
    assert gate is not None, "the control panel needs its gate"
    return gate


@router.post("/logout")
async def logout(request: Request) -> Response:
    session = session_of(request)
    if session is not None:
        await _form(request, session)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/static/{name}")
async def static(name: str) -> Response:
    path = HERE / "static" / name
    if name not in ("panel.js", "panel.css") or not path.is_file():
        raise ApiError(404, "no such file")
    response = FileResponse(path, media_type="text/javascript" if name.endswith(".js") else "text/css")
    response.headers["cache-control"] = "max-age=300"
    return response


# ---- files ---------------------------------------------------------------------------------


@router.get("/files")
async def files_page(request: Request, session: PageSession) -> Response:
    account = await _which(request, session)
    before = request.query_params.get("before")
    after: list[Any] | None = None
    if before:
        at, _, receipt = before.rpartition("|")
        after = [at, int(receipt)] if receipt.isdigit() else None
    context = _context(request)
    rows = await models(context, lambda m: m.files_page(account, before=after, limit=PAGE + 1))
    more = rows[PAGE:] != []
    rows = rows[:PAGE]
    older = f"{rows[-1]['received_at']}|{rows[-1]['receipt']}" if more and rows else None
    return await _page(request, "files.html", session, rows=rows, account=account, older=older,
                       visible=await _visible(request, session))


async def _file(request: Request, session: Session, file_id: str) -> dict[str, Any]:
    row = await models(_context(request), lambda m: m.file_row(file_id))
    if row is None or row["account"] not in await _visible(request, session):
        raise ApiError(404, "no such file")
    return row


@router.get("/files/{file_id}")
async def file_page(request: Request, session: PageSession, file_id: str) -> Response:
    context = _context(request)
    row = await _file(request, session, file_id)
    report = None
    if row["completed_at"] is not None:
        from uuid import UUID

        report = await context.store.run(partial(file_report, file_id=UUID(file_id)))
    cursor = request.query_params.get("cursor")
    try:
        page = await in_thread(with_history(context, lambda h: h.page(HistoryQuery(file_id=file_id), PAGE, cursor)))
        counts = await in_thread(with_history(context, lambda h: h.file_counts(file_id)))
    except HistoryError:
        raise ApiError(400, "not a page of this file") from None
    return await _page(request, "file.html", session, file=row, report=report, messages=page["messages"],
                       next=page["next"], counts=counts)


@router.post("/files/{file_id}/control")
async def file_control(request: Request, session: PageSession, file_id: str, form: PostedForm) -> Response:
    """Cancel, pause or resume a file from its page (the REST API's control_file)."""
    from actors.web.context import Principal
    from actors.web.rest import control_file

    action = str(form.get("action", ""))
    if action not in ("cancel", "pause", "resume"):
        return _back(f"/files/{file_id}", error="unknown action")
    caller = Principal(session.username, "", frozenset(await _visible(request, session)))
    await _file(request, session, file_id)
    done = await control_file(_context(request), caller, file_id, action, 10.0)
    if done["status"] == "failed":
        return _back(f"/files/{file_id}", error=f"{done['error_code']}: {done['detail']}")
    return _back(f"/files/{file_id}", flash=done["detail"])


@router.get("/files/{file_id}/report.json")
async def file_report_json(request: Request, session: PageSession, file_id: str) -> Response:
    row = await _file(request, session, file_id)
    if row["completed_at"] is None:
        raise ApiError(404, "the report follows when the file is completed")
    from uuid import UUID

    report = await _context(request).store.run(partial(file_report, file_id=UUID(file_id)))
    response = json_response(200, report)
    response.headers["content-disposition"] = f"attachment; filename*=UTF-8''{quote(row['name'])}.report.json"
    return _headers(response)


@router.get("/files/{file_id}/download")
async def file_download(request: Request, session: PageSession, file_id: str) -> Response:
    from actors.web.rest import get_original

    row = await _file(request, session, file_id)
    from actors.web.context import Principal

    caller = Principal(session.username, "", frozenset(await _visible(request, session)))
    response: Response = await get_original(request, caller, row["file_id"])
    return response


def _file_row(models: Any, file_id: str) -> dict[str, Any] | None:
    row: dict[str, Any] | None = models.file_row(file_id)
    return row


def _file_counts(history: Any, file_id: str) -> dict[str, int]:
    counts: dict[str, int] = history.file_counts(file_id)
    return counts


@router.get("/progress")
async def progress(request: Request, session: Annotated[Session, Depends(_json_session)]) -> Response:
    """Live counts of files being sent: `?file=ID` (repeated), JSON for static/panel.js."""
    context = _context(request)
    visible = await _visible(request, session)
    answer: dict[str, Any] = {}
    for file_id in request.query_params.getlist("file")[:PAGE]:
        row = await models(context, partial(_file_row, file_id=file_id))
        if row is None or row["account"] not in visible:
            continue
        counts = await in_thread(with_history(context, partial(_file_counts, file_id=file_id)))
        answer[file_id] = {"status": row["status"], **counts}
    return _headers(json_response(200, answer))


# ---- search and replies ----------------------------------------------------------------------


@router.get("/search")
async def search(request: Request, session: PageSession) -> Response:
    context = _context(request)
    account = await _which(request, session)
    number = request.query_params.get("msisdn", "").strip()
    customer = request.query_params.get("customer_id", "").strip()
    status = request.query_params.get("status") or None
    messages: list[dict[str, Any]] = []
    error = None
    searched = bool(number or customer)
    if searched:
        msisdn = None
        if number:
            msisdn = normalise_msisdn(number, (await context.account(account)).country)
            if msisdn is None:
                error = f"{number!r} is not a phone number"
        if error is None:
            query = HistoryQuery(msisdn=msisdn, customer_id=customer or None, account=account,
                                 status=status if status in STATUSES else None)
            page = await in_thread(with_history(context, lambda h: h.page(query, PAGE)))
            messages = page["messages"]
    return await _page(request, "search.html", session, messages=messages, msisdn=number, customer_id=customer,
                       searched=searched, error=error, statuses=STATUSES, status=status)


@router.get("/replies")
async def replies(request: Request, session: PageSession) -> Response:
    account = await _which(request, session)
    after = request.query_params.get("after", "0")
    start = int(after) if after.isdigit() else 0
    rows = await in_thread(with_history(_context(request), lambda h: h.replies(account, after=start, limit=PAGE + 1)))
    more = len(rows) > PAGE
    rows = rows[:PAGE]
    return await _page(request, "replies.html", session, rows=rows, next=rows[-1]["key"] if more and rows else None)


# ---- opt-outs ------------------------------------------------------------------------------


@router.get("/optouts")
async def optouts(request: Request, session: PageSession) -> Response:
    after = request.query_params.get("after", "")
    numbers = await models(
        _context(request), lambda m: m.optouts_page(session.username, after=after, limit=PAGE * 10 + 1)
    )
    more = len(numbers) > PAGE * 10
    numbers = numbers[: PAGE * 10]
    return await _page(request, "optouts.html", session, numbers=numbers, next=numbers[-1] if more else None)


@router.post("/optouts")
async def optouts_change(request: Request, session: PageSession, form: PostedForm) -> Response:
    context = _context(request)
    action = form.get("action")
    if action == "import":
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            return _back("/optouts", error="choose a CSV file to import")
        try:
            raw = await _body_csv_numbers(upload, 100_000)
        except ApiError as refused:
            return _back("/optouts", error=refused.message)
    else:
        raw = [part for part in str(form.get("msisdns", "")).replace(",", "\n").splitlines() if part.strip()]
    if not raw:
        return _back("/optouts", error="give at least one number")
    try:
        numbers = await _normalised(context, session.username, raw)
    except ApiError as refused:
        return _back("/optouts", error=refused.message)
    if action == "remove":
        await context.store.run(partial(SmsStore.change_optouts, username=session.username, add=[], remove=numbers))
        return _back("/optouts", flash=f"{len(numbers)} number(s) opted back in")
    await context.store.run(partial(SmsStore.change_optouts, username=session.username, add=numbers))
    return _back("/optouts", flash=f"{len(numbers)} number(s) opted out")


# ---- API keys ------------------------------------------------------------------------------


@router.get("/keys")
async def keys(request: Request, session: PageSession) -> Response:
    context = _context(request)
    account = await context.account(session.username)
    rows = await models(context, lambda m: m.api_keys(session.username))
    return await _page(request, "keys.html", session, rows=rows, channels=_channels(account), all_channels=CHANNELS, new=None)


@router.post("/keys")
async def keys_change(request: Request, session: PageSession, form: PostedForm) -> Response:
    context = _context(request)
    if form.get("action") == "revoke":
        key_id = str(form.get("key_id", ""))
        try:
            await intents.revoke_key(context, session.username, key_id)
        except ApiError:
            return _back("/keys", error="no such key")
        return _back("/keys", flash=f"key {key_id} revoked")
    channel = str(form.get("channel", ""))
    if channel not in CHANNELS:
        return _back("/keys", error="choose a channel")
    from actors.session import KEY_PREFIX

    key_id = KEY_PREFIX + secrets.token_hex(8)
    secret = secrets.token_urlsafe(24)
    hashed = await in_thread(partial(hash_password, secret))
    await context.store.run(
        partial(SmsStore.create_api_key, username=session.username, key_id=key_id, channel=channel,
                secret_hash=hashed, now=context.clock())
    )
    account = await context.account(session.username)
    rows = await models(context, lambda m: m.api_keys(session.username))
    channels = _channels(account)
    # The secret is in this answer only: never in a URL, a cookie or a later page.
    return await _page(request, "keys.html", session, rows=rows, channels=channels, all_channels=CHANNELS,
                       new={"key_id": key_id, "secret": secret, "channel": channel})


# ---- sub-accounts and credits --------------------------------------------------------------


@router.get("/subaccounts")
async def subaccounts(request: Request, session: PageSession) -> Response:
    context = _context(request)
    me = await context.account(session.username)
    subs = [await context.account(name) for name in me.sub_accounts]
    return await _page(request, "subaccounts.html", session, subs=subs)


@router.post("/subaccounts")
async def transfer(request: Request, session: PageSession, form: PostedForm) -> Response:
    context = _context(request)
    me = await context.account(session.username)
    to = str(form.get("to", ""))
    amount_text = str(form.get("amount", "")).strip()
    if to not in me.sub_accounts:
        return _back("/subaccounts", error="choose one of your sub-accounts")
    if not amount_text.isdigit() or int(amount_text) <= 0:
        return _back("/subaccounts", error="the amount is a whole number of credits above 0")
    amount = int(amount_text)
    if amount > me.balance:
        return _back("/subaccounts", error=f"you have {me.balance} credits, not {amount} (InsufficientCredits)")
    try:
        await context.store.run(partial(SmsStore.transfer_credits, parent=session.username, sub=to, amount=amount))
    except DomainError as error:
        return _back("/subaccounts", error=str(error))
    return _back("/subaccounts", flash=f"{amount} credits moved to {to}")


@router.get("/ledger")
async def ledger(request: Request, session: PageSession) -> Response:
    account = await _which(request, session)
    entries = await _context(request).store.run(partial(SmsStore.ledger, username=account))
    return await _page(request, "ledger.html", session, entries=list(reversed(entries))[: PAGE * 10], account=account)


# ---- webhooks ------------------------------------------------------------------------------


async def _webhook_rows(context: WebContext, username: str) -> list[dict[str, Any]]:
    hooks = dict((await context.account(username)).webhooks)

    def log_of(store: SmsStore, url: str) -> tuple[int, int, list[dict[str, Any]]]:
        if not store.exists(webhook_log_id(username, url)):
            return 0, 0, []
        log = store.webhook_log(username, url)
        recent = store.webhook_deliveries(username, url, after=max(0, int(log.version) - 20), limit=20)
        return int(log.delivered), int(log.failed), list(reversed(recent))

    rows = []
    for url, hook in sorted(hooks.items()):
        delivered, failed, recent = await context.store.run(partial(log_of, url=url))
        rows.append({"url": url, "events": hook["events"], "delivered": delivered, "failed": failed, "recent": recent})
    return rows


@router.get("/webhooks")
async def webhooks_page(request: Request, session: PageSession) -> Response:
    rows = await _webhook_rows(_context(request), session.username)
    return await _page(request, "webhooks.html", session, rows=rows, events=WEBHOOK_EVENTS, secret=None)


@router.post("/webhooks")
async def webhooks_change(request: Request, session: PageSession, form: PostedForm) -> Response:
    context = _context(request)
    action, url = form.get("action"), str(form.get("url", "")).strip()
    try:
        if action == "add":
            events = [event for event in WEBHOOK_EVENTS if form.get(f"event_{event}")] or list(WEBHOOK_EVENTS)
            secret = await intents.add_webhook(context, session.username, url, events)
            return await _secret_page(request, session, url, secret)
        if url not in await intents.webhooks_of(context, session.username):
            return _back("/webhooks", error="no such webhook")
        if action == "remove":
            await intents.remove_webhook(context, session.username, url)
            return _back("/webhooks", flash=f"webhook {url} removed")
        if action == "rotate":
            _, secret = await intents.rotate_webhook(context, session.username, url)
            return await _secret_page(request, session, url, secret)
    except ApiError as refused:
        return _back("/webhooks", error=refused.message)
    if action == "replay":
        since = str(form.get("since", "")).strip() or "0"
        until = str(form.get("until", "")).strip() or None
        try:
            done = await in_thread(partial(replay_range, context.settings, session.username, since, until, url))
        except ReplayRefused as refused:
            return _back("/webhooks", error=str(refused))
        return _back("/webhooks", flash=f"replayed {done['events']} POSTs: {done['delivered']} delivered, {done['failed']} failed")
    return _back("/webhooks", error="unknown action")


async def _secret_page(request: Request, session: Session, url: str, secret: str) -> Response:
    """The webhooks page with the signing secret shown once, in this answer only."""
    rows = await _webhook_rows(_context(request), session.username)
    return await _page(request, "webhooks.html", session, rows=rows, events=WEBHOOK_EVENTS, secret={"url": url, "secret": secret})


# ---- the chart -----------------------------------------------------------------------------


@router.get("/chart")
async def chart(request: Request, session: PageSession) -> Response:
    account = await _which(request, session)
    by = "day" if request.query_params.get("by") == "day" else "hour"
    span = timedelta(days=30) if by == "day" else timedelta(hours=48)
    since = (datetime.now(UTC) - span).isoformat()
    rows = await in_thread(with_history(_context(request), lambda h: h.activity(account, since, by=by)))
    return await _page(request, "chart.html", session, rows=rows, by=by, svg=_svg(_every_slot(rows, by, span)))


def _every_slot(rows: list[dict[str, Any]], by: str, span: timedelta) -> list[dict[str, Any]]:
    """One row per hour (or day) of the span, the quiet ones at zero, so the chart's axis is time."""
    step = timedelta(hours=1) if by == "hour" else timedelta(days=1)
    width = 13 if by == "hour" else 10
    found = {row["slot"]: row for row in rows}
    now = datetime.now(UTC)
    moment = (now - span).replace(minute=0, second=0, microsecond=0)
    if by == "day":
        moment = moment.replace(hour=0)
    slots = []
    while moment <= now:
        key = moment.isoformat()[:width]
        slots.append(found.get(key, {"slot": key, "sent": 0, "delivered": 0, "failed": 0}))
        moment += step
    return slots


def _svg(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars of messages sent and a line of the delivery rate, in a 720x240 SVG's coordinates."""
    width, height, pad = 720, 240, 30
    if not rows:
        return {"bars": [], "line": "", "width": width, "height": height, "top": 0}
    top = max(row["sent"] for row in rows) or 1
    step = (width - 2 * pad) / len(rows)
    bars, points = [], []
    for n, row in enumerate(rows):
        h = (height - 2 * pad) * row["sent"] / top
        x = pad + n * step
        bars.append({"x": round(x + step * 0.1, 1), "y": round(height - pad - h, 1), "w": round(step * 0.8, 1),
                     "h": round(h, 1), "label": row["slot"], "sent": row["sent"]})
        if row["sent"]:
            rate = row["delivered"] / row["sent"]
            points.append({"x": round(x + step / 2, 1), "y": round(height - pad - (height - 2 * pad) * rate, 1),
                           "label": f"{row['slot']}: {100 * rate:.1f}% delivered"})
    line = " ".join(f"{point['x']},{point['y']}" for point in points)
    return {"bars": bars, "line": line, "points": points, "width": width, "height": height, "top": top,
            "first": rows[0]["slot"].replace("T", " "), "last": rows[-1]["slot"].replace("T", " ")}

