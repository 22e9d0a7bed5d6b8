"""The receipts actor: turns what gateways report into DeliveryReported and ReplyReceived events.

Every report is matched to its message first: by the gateway's id in any spelling (hex or decimal,
any case, with or without leading zeros — `sftpsms.gatewayids`), through the dispatcher's recent
submissions and then the `gateway_ids` read model. A reply without the id of the message it answers
goes to the latest message sent to that number. A report that matches nothing yet (it overtook its
MessageSubmitted event, or the read model lags) is held and tried again for a while.

One status per message: the first final receipt decides; receipts for further parts of the same
message, or repeated ones, add nothing (DeliveryLog.reported). A reply that is an opt-out keyword
("STOP") also puts the number on the account's opt-out list, in the same transaction, and so are
the account's HELP answer or STOP confirmation to it (AutoReply, sftpsms.autoreply), queued as a
one-message batch the dispatcher sends back through the reply's gateway.

The store records them (SmsStore.record_reports, eventstore.reports: the only writer of
DeliveryLog aggregates, it keeps recently used ones in memory), in groups (one transaction per
group) instead of one per report; this actor matches and holds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from actors.gateway import GatewayReceipt, GatewayReport
from actors.submissions import RecentSubmissions, SubmissionRef
from actors.writer import StoreClient
from eventstore.projections import ReadModels
from eventstore.reports import ReceiptReport, ReplyReport, Report, ReportsRecorded
from eventstore.store import SmsStore

log = logging.getLogger(__name__)

GROUP = 500
GROUP_WAIT = 0.05  # seconds to wait for more reports before writing a group
UNMATCHED_RETRY = 1.0  # seconds between tries of reports that matched nothing yet
UNMATCHED_PATIENCE = 600.0  # seconds after which an unmatched report is logged and dropped
MAX_UNMATCHED = 100_000
# Seconds a number this process opted out is taken as opted out without the read model (which
# lags the event by up to a projector round): a HELP right after a STOP gets no answer.
STOPPED_MEMORY = 60.0


@dataclass
class _Held:
    report: GatewayReport
    since: float


@dataclass
class ReportRecorder:
    """Matches reports to their messages and notes what the store recorded of them. `match` is
    from memory (cheap; on the trio side), `prepare` adds the read model (in a worker thread: the
    read-model connection it opens is one for any thread); the store records the result
    (SmsStore.record_reports, eventstore.reports)."""

    recent: RecentSubmissions
    readmodels_path: Path
    optout_words: tuple[str, ...]
    readmodels: ReadModels | None = None
    stopped: dict[tuple[str, str], float] = field(default_factory=dict)  # (account, msisdn) → when
    recorded: int = 0
    ignored: int = 0

    def _models(self) -> ReadModels:
        if self.readmodels is None:
            self.readmodels = ReadModels(self.readmodels_path, any_thread=True)
        return self.readmodels

    def close(self) -> None:
        if self.readmodels is not None:
            self.readmodels.close()
            self.readmodels = None

    def match(self, report: GatewayReport) -> SubmissionRef | None:
        """The message a report belongs to, from memory only (cheap; on the trio side)."""
        if isinstance(report, GatewayReceipt):
            return self.recent.find(report.gateway, report.gateway_id)
        if report.in_reply_to:
            return self.recent.find(report.gateway, report.in_reply_to)
        return self.recent.last_to(report.msisdn)

    def _match_stored(self, report: GatewayReport) -> SubmissionRef | None:
        models = self._models()
        if isinstance(report, GatewayReceipt):
            row = models.submission(report.gateway, report.gateway_id)
        elif report.in_reply_to:
            row = models.submission(report.gateway, report.in_reply_to) or models.last_sent_to(report.msisdn)
        else:
            row = models.last_sent_to(report.msisdn)
        return SubmissionRef.from_row(row) if row else None

    def prepare(
        self, matched: list[tuple[GatewayReport, SubmissionRef | None]]
    ) -> tuple[list[Report], list[GatewayReport]]:
        """The reports as the store records them (looking up the read model for what memory did
        not match, and whether a replying number was opted out already), and those that still
        match nothing."""
        clock = time.monotonic()
        for key, since in list(self.stopped.items()):
            if clock - since > STOPPED_MEMORY:
                del self.stopped[key]
        reports: list[Report] = []
        unmatched: list[GatewayReport] = []
        for report, ref in matched:
            if ref is None:
                ref = self._match_stored(report)
            if ref is None:
                unmatched.append(report)
            elif isinstance(report, GatewayReceipt):
                reports.append(ReceiptReport(ref, report.status, report.gateway, report.gateway_id, report.error,
                                             report.at.isoformat()))
            else:
                key = (ref.account, report.msisdn)
                opted_out = key in self.stopped or bool(self._models().opted_out(ref.account, [report.msisdn]))
                reports.append(ReplyReport(ref, report.gateway, report.reply_id, report.msisdn, report.to, report.text,
                                           report.at.isoformat(), opted_out))
        return reports, unmatched

    def note(self, result: ReportsRecorded) -> None:
        """What the store recorded of a prepared group, once its transaction committed."""
        self.recorded += result.recorded
        self.ignored += result.ignored
        clock = time.monotonic()
        for key in result.stopped:
            self.stopped.setdefault(key, clock)

    def record(self, store: SmsStore, matched: list[tuple[GatewayReport, SubmissionRef | None]]) -> list[GatewayReport]:
        """Prepare, record and note one group at once, in the caller's thread (tests, tools);
        returns the reports that still match nothing."""
        reports, unmatched = self.prepare(matched)
        self.note(store.record_reports(reports, optout_words=self.optout_words))
        return unmatched


async def run_receipts(
    inbox: trio.MemoryReceiveChannel[GatewayReport],
    *,
    store: StoreClient,
    recorder: ReportRecorder,
    on_recorded: Callable[[Sequence[GatewayReport]], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Record reports until the inbox closes. `on_recorded` hears, after each group's transaction
    has committed, which reports are now recorded (or were already): the simulator stops owing
    them (a real peer learns it from our answer instead).

    Error handling: a group that fails to save (e.g. an opt-out racing another account change) is
    tried once more from fresh aggregates, then logged and dropped — real gateways re-send what
    they did not get an answer for, and the simulator's receipts are deterministic.
    """
    held: list[_Held] = []
    last_retry = trio.current_time()
    task_status.started()
    with inbox:
        ended = False
        while not ended:
            group: list[GatewayReport] = []
            timeout = UNMATCHED_RETRY if held else float("inf")
            with trio.move_on_after(timeout):
                try:
                    group.append(await inbox.receive())
                except trio.EndOfChannel:
                    ended = True
            if group:
                with trio.move_on_after(GROUP_WAIT):
                    while len(group) < GROUP:
                        try:
                            # Whatever is waiting at once (a trip through trio's scheduler per
                            # report capped recording), then wait for more.
                            while len(group) < GROUP:
                                group.append(inbox.receive_nowait())
                        except trio.WouldBlock:
                            pass
                        except trio.EndOfChannel:
                            ended = True
                            break
                        if len(group) >= GROUP:
                            break
                        try:
                            group.append(await inbox.receive())
                        except trio.EndOfChannel:
                            ended = True
                            break
            now = trio.current_time()
            retrying: list[_Held] = []
            if held and now - last_retry >= UNMATCHED_RETRY:
                retrying, held = held, []
                last_retry = now
            if not group and not retrying:
                continue
            reports = [h.report for h in retrying] + group
            since = {id(h.report): h.since for h in retrying}
            matched = [(report, recorder.match(report)) for report in reports]
            unmatched: list[GatewayReport] = []
            for attempt in (1, 2):
                try:
                    prepared, unmatched = await trio.to_thread.run_sync(recorder.prepare, matched)
                    recorder.note(await store.record_reports(prepared, optout_words=recorder.optout_words))
                except Exception:
                    if attempt == 2:
                        log.exception("recording %d gateway reports failed; dropped", len(matched))
                    continue
                if on_recorded is not None:
                    waiting = {id(report) for report in unmatched}
                    on_recorded([report for report in reports if id(report) not in waiting])
                break
            for report in unmatched:
                first = since.get(id(report), now)
                if now - first >= UNMATCHED_PATIENCE or len(held) >= MAX_UNMATCHED:
                    log.warning("unmatched gateway report dropped: %r", report)
                else:
                    held.append(_Held(report, first))
