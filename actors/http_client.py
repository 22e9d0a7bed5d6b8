"""A small keep-alive HTTP/1.1 POST client on trio and h11, for webhooks: a pool of idle
connections per origin, TLS for https, one timeout per request.

Why not httpx: on this workload (many small POSTs to few origins, trio, 16 at once) httpx 0.28 did
about 850 POST/s on the development machine where this client did 3 300-3 800 (README, Benchmarks)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import trio

MAX_IDLE_PER_ORIGIN = 64
READ_SIZE = 65536
MAX_RESPONSE_BODY = 65536  # a webhook's answer is not read beyond this
USER_AGENT = "sftpsms-webhooks/1"


class HttpError(Exception):
    """The request did not get a complete HTTP response (refused, reset, malformed, closed)."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class _Connection:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    async def post(self, host: str, target: str, body: bytes, headers: Mapping[str, str]) -> Response:
        request_headers = [
            ("host", host),
            ("user-agent", USER_AGENT),
            ("content-length", str(len(body))),
            *headers.items(),
        ]
        data = self.h11.send(h11.Request(method="POST", target=target, headers=request_headers)) or b""
        data += self.h11.send(h11.Data(data=body)) or b""
        data += self.h11.send(h11.EndOfMessage()) or b""
        await self.stream.send_all(data)
        status = 0
        received = bytearray()
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(bytes(await self.stream.receive_some(READ_SIZE)))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                if len(received) < MAX_RESPONSE_BODY:
                    received += event.data[: MAX_RESPONSE_BODY - len(received)]
            elif isinstance(event, h11.EndOfMessage):
                return Response(status, bytes(received))
            elif isinstance(event, h11.ConnectionClosed):
                raise HttpError("connection closed before the response")
            # InformationalResponse (100 Continue): keep reading

    def reusable(self) -> bool:
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
            return True
        return False

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.stream.aclose()


class HttpClient:
    """`await client.post(url, body, headers)`; connections are kept open and reused per origin.

    Resource handling: `aclose()` closes every idle connection; a connection that failed or was
    cancelled mid-request is closed, never reused.
    Error handling: connection problems raise HttpError or OSError; trio.TooSlowError when the
    timeout passes. Any HTTP status is a Response (the caller decides what is a success).
    """

    def __init__(self, *, timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._idle: dict[_Origin, list[_Connection]] = {}

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"not an http(s) URL: {url}")
        origin = _Origin(parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        with trio.fail_after(self.timeout):
            idle = self._idle.get(origin)
            if idle:
                connection = idle.pop()
                try:
                    return await self._use(origin, connection, target, body, headers)
                except (HttpError, OSError, trio.BrokenResourceError, h11.RemoteProtocolError):
                    pass  # the server closed a kept-alive connection: once more on a fresh one
            connection = await self._connect(origin)
            return await self._use(origin, connection, target, body, headers)

    async def _connect(self, origin: _Origin) -> _Connection:
        stream: trio.abc.Stream = await trio.open_tcp_stream(origin.host, origin.port)
        if origin.scheme == "https":
            context = self.ssl_context or ssl.create_default_context()
            tls = trio.SSLStream(stream, context, server_hostname=origin.host, https_compatible=True)
            try:
                await tls.do_handshake()
            except BaseException:
                await stream.aclose()
                raise
            stream = tls
        return _Connection(stream)

    async def _use(
        self, origin: _Origin, connection: _Connection, target: str, body: bytes, headers: Mapping[str, str]
    ) -> Response:
        try:
            response = await connection.post(origin.host_header, target, body, headers)
        except trio.BrokenResourceError as error:
            await connection.aclose()
            raise HttpError(f"connection broken: {error}") from None
        except h11.ProtocolError as error:
            await connection.aclose()
            raise HttpError(f"bad HTTP: {error}") from None
        except BaseException:
            await connection.aclose()
            raise
        idle = self._idle.setdefault(origin, [])
        if connection.reusable() and len(idle) < MAX_IDLE_PER_ORIGIN:
            idle.append(connection)
        else:
            await connection.aclose()
        return response

    async def aclose(self) -> None:
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                await connection.aclose()
