"""The asyncio↔trio bridge: asyncio hosts, trio runs as its guest (FINDINGS.md), one process.

asyncssh needs asyncio; every actor of ours is trio. `run` starts an asyncio loop and trio inside it
in guest mode; the two portals carry calls across: `AsyncioPortal.run` lets trio await an asyncio
coroutine, `TrioPortal.call` lets asyncio await a trio function (which runs in trio's own nursery).
In guest mode both sides run on the same thread, so the only hops are trio's `run_sync_soon` and
asyncio's `call_soon_threadsafe`, used as the documented entry points.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ServiceStopping(ConnectionAbortedError):
    """Raised on the asyncio side when trio is shutting down and cannot take the call."""


class TrioPortal:
    """Used from asyncio code: `await portal.call(trio_async_fn, *args)`.

    The function runs as a task of trio's top nursery; its result or exception comes back to the
    awaiting asyncio coroutine. If the asyncio caller is cancelled (its connection dropped), the
    trio side still runs to completion: what it was told happened did happen (e.g. a clean CLOSE).
    If trio is shutting down, the caller gets `ServiceStopping`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, token: trio.lowlevel.TrioToken, nursery: trio.Nursery) -> None:
        self._loop = loop
        self._token = token
        self._nursery = nursery

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        future: asyncio.Future[T] = self._loop.create_future()

        def settle(result: outcome.Outcome[T]) -> None:
            if future.done():
                return  # the asyncio caller went away
            if isinstance(result, outcome.Value):
                future.set_result(result.value)
                return
            assert isinstance(result, outcome.Error)
            error = result.error
            if isinstance(error, trio.Cancelled) or not isinstance(error, Exception):
                future.set_exception(ServiceStopping("the service is stopping"))
            else:
                future.set_exception(error)

        async def runner() -> None:
            result: outcome.Outcome[T] = await outcome.acapture(fn, *args)
            try:
                self._loop.call_soon_threadsafe(settle, result)
            except RuntimeError:
                pass  # the host loop is closed: nobody is waiting any more
            if isinstance(result, outcome.Error) and not isinstance(result.error, Exception):
                raise result.error  # Cancelled, KeyboardInterrupt: trio's to handle

        try:
            self._token.run_sync_soon(self._nursery.start_soon, runner)
        except trio.RunFinishedError:
            raise ServiceStopping("the service is stopping") from None
        return await future


class AsyncioPortal:
    """Used from trio code: `await portal.run(asyncio_coroutine_fn, *args)`.

    The coroutine runs as a task on the host loop. Cancelling the trio caller cancels that task and
    waits (shielded) until it has finished, so nothing is left running behind the caller's back.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._trio_portal: TrioPortal | None = None

    @property
    def trio_portal(self) -> TrioPortal:
        """The way back into trio, for asyncio code started from here."""
        if self._trio_portal is None:
            raise RuntimeError("trio is not running")
        return self._trio_portal

    @trio_portal.setter
    def trio_portal(self, portal: TrioPortal) -> None:
        self._trio_portal = portal

    async def run(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_: asyncio.Future[T]) -> None:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        task = self.loop.create_task(fn(*args))
        task.add_done_callback(wake)
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

    Resource handling: the loop is created and closed here; asyncio tasks still pending when trio
    finished (connections of a server that `trio_main` started) are cancelled and awaited first.

    Error handling: an exception of `trio_main` is re-raised here. In the main thread SIGINT and
    SIGTERM cancel trio (its `finally` blocks and shielded clean-ups run), and then
    `KeyboardInterrupt` is raised here; trio's own SIGINT handler is not used, because in guest
    mode it would interrupt whatever asyncio code happened to be running. In another thread (tests)
    no signal handler is installed.
    """
    loop = asyncio.new_event_loop()
    portal = AsyncioPortal(loop)
    finished: asyncio.Future[outcome.Outcome[T]] = loop.create_future()
    stopping: list[Callable[[], None]] = []

    async def guest() -> T:
        token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            stopping.append(lambda: token.run_sync_soon(scope.cancel))
            async with trio.open_nursery() as nursery:
                portal.trio_portal = TrioPortal(loop, token, nursery)
                # Captured, so that its error comes out as raised, not wrapped in the nursery's group.
                result = await outcome.acapture(trio_main, portal)
                nursery.cancel_scope.cancel()  # portal calls still running
            return result.unwrap()
        raise KeyboardInterrupt  # cancelled by a signal

    def stop() -> None:
        for cancel in stopping:
            try:
                cancel()
            except trio.RunFinishedError:
                pass

    def done(result: outcome.Outcome[T]) -> None:
        if not finished.done():
            finished.set_result(result)

    signals = threading.current_thread() is threading.main_thread()
    if signals:
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, stop)
    try:
        trio.lowlevel.start_guest_run(
            guest,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=done,
            host_uses_signal_set_wakeup_fd=True,
        )
        return loop.run_until_complete(finished).unwrap()
    finally:
        if signals:
            for signum in STOP_SIGNALS:
                loop.remove_signal_handler(signum)
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
