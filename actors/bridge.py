"""The asyncio↔trio bridge: asyncio hosts, trio runs as its guest (FINDINGS.md), one process.

asyncssh needs asyncio; every actor of ours is trio. `run` starts an asyncio loop and trio inside it
in guest mode; the two portals carry calls across: `AsyncioPortal.run` lets trio await an asyncio
coroutine, `TrioPortal.call` lets asyncio await a trio function (which runs in trio's own nursery).
In guest mode both sides run on the same thread, so the only cross-"thread" hops are trio's
`run_sync_soon` and asyncio's `call_soon_threadsafe`, used as the documented entry points.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")


class TrioPortal:
    """Used from asyncio code: `await portal.call(trio_async_fn, *args)`."""

    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken, nursery: trio.Nursery) -> None:
        self._loop = loop
        self._token = token
        self._nursery = nursery

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        future: asyncio.Future[T] = self._loop.create_future()

        def settle(result: outcome.Outcome[T]) -> None:
            if future.done():
                return  # the asyncio caller went away (its connection dropped)
            if isinstance(result, outcome.Value):
                future.set_result(result.value)
            elif isinstance(result, outcome.Error):
                error = result.error
                if isinstance(error, trio.Cancelled):
                    error = ConnectionAbortedError("the service is stopping")
                future.set_exception(error)

        async def runner() -> None:
            result = await outcome.acapture(fn, *args)
            self._loop.call_soon_threadsafe(settle, result)
            if isinstance(result, outcome.Error) and isinstance(result.error, trio.Cancelled):
                raise result.error

        try:
            self._token.run_sync_soon(self._nursery.start_soon, runner)
        except trio.RunFinishedError:
            raise ConnectionAbortedError("the service is stopping") from None
        return await future


class AsyncioPortal:
    """Used from trio code: `await portal.run(asyncio_coroutine_fn, *args)`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.trio_portal: TrioPortal  # set once trio is running

    async def run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        task = self.loop.create_task(fn(*args))
        task.add_done_callback(lambda _: token.run_sync_soon(done.set))
        try:
            await done.wait()
        except trio.Cancelled:
            task.cancel()
            with trio.CancelScope(shield=True):
                await done.wait()
            raise
        return task.result()


def run(trio_main: Callable[[AsyncioPortal], Awaitable[T]]) -> T:
    """Run `trio_main(portal)` as trio's guest inside a new asyncio loop; return its result.

    SIGINT and SIGTERM cancel trio cleanly (trio's finally blocks run), then the loop ends.
    """
    loop = asyncio.new_event_loop()
    portal = AsyncioPortal(loop)
    finished: asyncio.Future[outcome.Outcome[T]] = loop.create_future()
    scope_box: list[trio.CancelScope] = []
    token_box: list[trio.lowlevel.TrioToken] = []

    async def guest() -> T:
        token_box.append(trio.lowlevel.current_trio_token())
        with trio.CancelScope() as scope:
            scope_box.append(scope)
            async with trio.open_nursery() as nursery:
                portal.trio_portal = TrioPortal(loop, token_box[0], nursery)
                result = await trio_main(portal)
                nursery.cancel_scope.cancel()
                return result
        raise KeyboardInterrupt  # cancelled by a signal

    def stop() -> None:
        if token_box and scope_box:
            try:
                token_box[0].run_sync_soon(scope_box[0].cancel)
            except trio.RunFinishedError:
                pass

    def done(result: outcome.Outcome[T]) -> None:
        if not finished.done():
            finished.set_result(result)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop)
    try:
        trio.lowlevel.start_guest_run(
            guest,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done,
            host_uses_signal_set_wakeup_fd=True,
        )
        result = loop.run_until_complete(finished)
        return result.unwrap()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
