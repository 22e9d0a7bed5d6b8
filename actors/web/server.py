"""hypercorn serving one ASGI app on the service's trio loop."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

log = logging.getLogger(__name__)

READ_TIMEOUT = 30  # seconds a connection may stay silent while we wait for (more of) a request
MAX_INCOMPLETE = 16 * 1024  # bytes of request line and headers


async def serve_app(
    app: Any,
    *,
    host: str,
    port: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on host:port until cancelled; reports the bound port (port 0: any free one).

    Error handling: hypercorn answers a malformed request with 400 and closes that connection; an
    exception in the app is answered 500 by the app's own handler (build_app) and never stops the
    server."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.keep_alive_timeout = READ_TIMEOUT
    config.read_timeout = READ_TIMEOUT
    config.h11_max_incomplete_size = MAX_INCOMPLETE
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = 1.0
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(serve, app, config, mode="asgi"))
        task_status.started(int(binds[0].rsplit(":", 1)[1]))
