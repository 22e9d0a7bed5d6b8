"""The node's ASGI app: inbound gateway endpoints, /health and (with a WebContext) the REST API.

The inbound endpoints keep the paths and answers they had on the h11 server (actors/http_inbound:
`Routes` of handlers taking an HttpRequest): each becomes a Starlette route here, its body read
with the same limit (413 past MAX_BODY). Every error is JSON, `{"error": "..."}`, with the
PRODUCT.md `code` where one applies; a bug in a route is logged and answered 500.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from actors.http_inbound import (
    MAX_BODY,
    Handler,
    HttpError,
    HttpRequest,
    HttpResponse,
    Routes,
    health,
)
from sftpsms.names import quoted

if TYPE_CHECKING:
    from actors.web.context import WebContext

log = logging.getLogger(__name__)


def json_response(status: int, body: Any, headers: Any = ()) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=dict(headers), media_type="application/json")


def error_response(status: int, message: str, code: str | None = None, headers: Any = ()) -> Response:
    body: dict[str, Any] = {"error": message}
    if code is not None:
        body["code"] = code
    return json_response(status, body, headers)


class ApiError(Exception):
    """A request the REST API refuses: `status`, a message and, where PRODUCT.md has one, a code."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: Any = ()) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY:
        raise HttpError(413, f"body over {MAX_BODY} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise HttpError(413, f"body over {MAX_BODY} bytes")
    return bytes(body)


def _inbound_endpoint(handler: Handler) -> Any:
    async def endpoint(request: Request) -> Response:
        try:
            body = await _read_body(request)
            response: HttpResponse = await handler(
                HttpRequest(request.method, request.url.path, {k.lower(): v for k, v in request.headers.items()}, body)
            )
        except HttpError as error:
            log.info(
                "http method=%s path=%s status=%d error=%s",
                quoted(request.method), quoted(request.url.path), error.status, error.message,
            )
            response = error.response()
        return json_response(response.status, response.body, response.headers)

    return endpoint


def _wants_html(request: Request) -> bool:
    """A browser on a control panel page (not the API, not a gateway) gets an HTML error page."""
    path = request.url.path
    if path.startswith(("/api/", "/gateways/", "/openapi.json", "/health", "/progress")):
        return False
    return "text/html" in request.headers.get("accept", "")


def _html_error(request: Request, status: int, message: str) -> Response:
    from actors.web.panel import templates

    response = templates.TemplateResponse(request, "error.html", {"status": status, "message": message}, status_code=status)
    response.headers["content-security-policy"] = "default-src 'none'; style-src 'self'; frame-ancestors 'none'"
    return response


def build_app(routes: Routes, context: WebContext | None = None) -> FastAPI:
    """One app for the node: `routes` (the HTTP gateways' inbound endpoints), GET /health and, given
    a context, the REST API under /api/v1/ with its OpenAPI document at /openapi.json."""
    app = FastAPI(
        title="sftpsms",
        summary="The sftpsms REST API: files, messages, history, opt-outs, credits and keys of one account.",
        version="1",
        docs_url=None,  # Swagger UI and ReDoc load scripts from a CDN: the document alone is served
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    table: dict[tuple[str, str], Handler] = {("GET", "/health"): health, **routes}
    by_path: dict[str, dict[str, Handler]] = {}
    for (method, path), handler in table.items():
        by_path.setdefault(path, {})[method] = handler
    for path, methods in by_path.items():
        for method, handler in methods.items():
            app.router.routes.append(
                Route(path, _inbound_endpoint(handler), methods=[method], include_in_schema=False)
            )
    if context is not None:
        from actors.web.panel import LoginNeeded, login_needed
        from actors.web.panel import router as panel
        from actors.web.rest import router as rest

        app.state.context = context
        app.include_router(rest)
        app.include_router(panel)
        app.add_exception_handler(LoginNeeded, login_needed)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        message = error.detail if isinstance(error.detail, str) else "error"
        if error.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.url.path}"
        elif error.status_code == 405:
            message = f"{request.method} not allowed"
        if _wants_html(request):
            return _html_error(request, error.status_code, message)
        return error_response(error.status_code, message, headers=error.headers or ())

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        problems = [
            f"{'.'.join(str(part) for part in problem.get('loc', ()))}: {problem.get('msg', 'invalid')}"
            for problem in error.errors()
        ]
        return error_response(422, "; ".join(problems) or "invalid request")

    @app.exception_handler(ApiError)
    async def refused(request: Request, error: ApiError) -> Response:
        if _wants_html(request):
            return _html_error(request, error.status, error.message)
        return error_response(error.status, error.message, error.code, error.headers)

    @app.exception_handler(Exception)
    async def bug(request: Request, error: Exception) -> Response:
        log.error("http %s %s failed", quoted(request.method), quoted(request.url.path), exc_info=error)
        return error_response(500, "internal error", "InternalServerError")

    return app
