"""The notifier: delivers each filed upload's status email, by SMTP when configured (retried with
exponential backoff, never holding up file processing) or into the outbox folder as an .eml file.
NotificationSent / NotificationFailed are recorded on the file."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from functools import partial
from uuid import UUID

import trio

from actors.writer import StoreClient
from eventstore.store import SmsStore
from sftpsms.config import Settings
from sftpsms.names import quoted
from sftpsms.notification import send_smtp, write_to_outbox

log = logging.getLogger(__name__)

INBOX_BUFFER = 256
CONCURRENT_DELIVERIES = 4


@dataclass(frozen=True)
class Notify:
    file_id: UUID
    to: str
    message: EmailMessage


async def deliver(notify: Notify, *, settings: Settings, store: StoreClient, clock: Callable[[], datetime]) -> None:
    """One email to its end: sent, or given up after `notify_attempts` SMTP tries."""
    if not settings.smtp_host:
        await trio.to_thread.run_sync(write_to_outbox, settings.outbox_dir, str(notify.file_id), notify.message)
        await store.run(partial(SmsStore.record_notification, file=notify.file_id, to=notify.to, via="outbox", now=clock()))
        return
    delay = settings.notify_backoff
    error = ""
    for attempt in range(1, settings.notify_attempts + 1):
        try:
            await trio.to_thread.run_sync(
                partial(
                    send_smtp,
                    notify.message,
                    host=settings.smtp_host,
                    port=settings.smtp_port,
                    starttls=settings.smtp_starttls,
                    user=settings.smtp_user,
                    password=settings.smtp_password,
                    timeout=settings.smtp_timeout,
                )
            )
        except (OSError, ValueError) as failure:  # smtplib's errors are OSErrors
            error = f"{type(failure).__name__}: {failure}"
            log.warning("file_id=%s email to %s failed (attempt %d): %s", notify.file_id, quoted(notify.to), attempt, error)
            if attempt < settings.notify_attempts:
                await trio.sleep(delay)
                delay *= 2
            continue
        await store.run(
            partial(
                SmsStore.record_notification, file=notify.file_id, to=notify.to, via="smtp", now=clock(), attempts=attempt
            )
        )
        return
    await store.run(
        partial(
            SmsStore.record_notification,
            file=notify.file_id,
            to=notify.to,
            via="smtp",
            now=clock(),
            attempts=settings.notify_attempts,
            error=error,
        )
    )


async def run_notifier(
    inbox: trio.MemoryReceiveChannel[Notify],
    *,
    settings: Settings,
    store: StoreClient,
    clock: Callable[[], datetime],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Deliver emails until the inbox closes. Each email is its own task (a slow or failing SMTP
    server delays only its own retries); at most CONCURRENT_DELIVERIES talk to SMTP at once."""
    limiter = trio.CapacityLimiter(CONCURRENT_DELIVERIES)

    async def one(notify: Notify) -> None:
        async with limiter:
            try:
                await deliver(notify, settings=settings, store=store, clock=clock)
            except Exception:
                log.exception("file_id=%s notification crashed", notify.file_id)

    task_status.started()
    with inbox:
        async with trio.open_nursery() as nursery:
            async for notify in inbox:
                nursery.start_soon(one, notify)
