"""Recovery: runs the files a stop, a crash or a full disk left in work/ to their end, in the
background (start-up never waits on it: the doors open first), and looks again every
work_retry_interval seconds, so a file paused by a full disk carries on once space is freed.

With several nodes (a PostgreSQL store) it looks every takeover_interval seconds, and runs only the
work/ entries whose lease it can take: a live node's files are left to it, and a dead node's are
taken over within seconds (its leases died with its store connection)."""

from __future__ import annotations

import logging

import trio

from actors.faults import is_disk_full
from actors.file import FileContext, recover
from sftpsms.config import Settings

log = logging.getLogger(__name__)


async def run_recovery(
    *,
    context: FileContext,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Recover until cancelled.

    Error handling: a full disk is logged in one line and tried again at the next look; any other
    error is logged with its traceback and tried again too (each file's attempts are counted, so
    no file is tried forever)."""
    task_status.started()
    first = True
    while True:
        try:
            ran = await recover(context)
            if ran and first:
                log.info("recovered %d files left in work/ by an earlier run", ran)
        except Exception as error:
            if is_disk_full(error):
                log.warning("recovery paused, the disk is full (%s): tried again later", error)
            else:
                log.exception("recovery failed: tried again later")
        first = False
        await trio.sleep(look_interval(context.settings))


def look_interval(settings: Settings) -> float:
    """Seconds between two looks at work/: other nodes' files are taken over sooner."""
    if settings.store:
        return min(settings.work_retry_interval, settings.takeover_interval)
    return settings.work_retry_interval
