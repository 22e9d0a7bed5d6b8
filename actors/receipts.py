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

It is the only writer of DeliveryLog aggregates, so it keeps recently used ones in memory and
records reports in groups (one transaction per group) instead of one per report.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache, partial
from pathlib import Path
from typing import Any
from uuid import UUID

import trio
from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate

from actors.gateway import GatewayReceipt, GatewayReply, GatewayReport
from actors.submissions import RecentSubmissions, SubmissionRef
from actors.writer import StoreClient
from eventstore import dispatch_rows
from eventstore.dispatch_rows import PendingRow
from eventstore.domain import (
    Account,
    AutoReply,
    ContactBatch,
    DeliveryLog,
    InsufficientBalance,
    auto_reply_id,
    delivery_log_id,
)
from eventstore.projections import ReadModels
from eventstore.store import SmsStore, UnknownAccount
from sftpsms.autoreply import AutoReplies, answer_for, auto_reply_parts
from sftpsms.gatewayids import is_opt_out
from sftpsms.intake import FIXED_SENDER

log = logging.getLogger(__name__)

GROUP = 500
GROUP_WAIT = 0.05  # seconds to wait for more reports before writing a group
CACHE_SIZE = 256
UNMATCHED_RETRY = 1.0  # seconds between tries of reports that matched nothing yet
UNMATCHED_PATIENCE = 600.0  # seconds after which an unmatched report is logged and dropped
MAX_UNMATCHED = 100_000
# Seconds a number this process opted out is taken as opted out without the read model (which
# lags the event by up to a projector round): a HELP right after a STOP gets no answer.
STOPPED_MEMORY = 60.0


# A uuid5 per report otherwise; a batch's thousand receipts ask for the same one.
_delivery_log_id = lru_cache(maxsize=4096)(delivery_log_id)


@dataclass
class _Held:
    report: GatewayReport
    since: float


@dataclass
class ReportRecorder:
    """Matches and records groups of reports. `record` runs in the writer's commands (one at a
    time, each in whichever worker thread trio gives it: the read-model connection it opens is
    one for any thread); everything else on the trio side."""

    recent: RecentSubmissions
    readmodels_path: Path
    optout_words: tuple[str, ...]
    logs: OrderedDict[UUID, DeliveryLog] = field(default_factory=OrderedDict)
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

    def _delivery_log(self, store: SmsStore, ref: SubmissionRef) -> DeliveryLog:
        key = _delivery_log_id(ref.batch_id)
        delivery = self.logs.get(key)
        if delivery is None:
            try:
                delivery = store.get(DeliveryLog, key)
            except AggregateNotFoundError:
                delivery = DeliveryLog.start(batch=ref.batch_id, file=ref.file_id, account=ref.account)
            self.logs[key] = delivery
            while len(self.logs) > CACHE_SIZE:
                self.logs.popitem(last=False)
        self.logs.move_to_end(key)
        return delivery

    def _answer(
        self,
        store: SmsStore,
        replies: list[tuple[GatewayReply, SubmissionRef, bool]],
        account_of: Callable[[str], Account],
        touched: dict[UUID, Aggregate],
        stopped: dict[tuple[str, str], float],
    ) -> None:
        """HELP answers and STOP confirmations for freshly recorded replies (sftpsms.autoreply):
        each an AutoReply with its one-message batch and its credits reserved, or recorded as
        not sent; saved with the replies, so a reply recorded is answered exactly once, also
        across restarts (the dispatcher sends the batch like any other). Numbers these replies
        opt out go into `stopped`, which the caller remembers once the group is saved (a failed
        save is tried again, and must not find them opted out)."""
        clock = time.monotonic()
        for key, since in list(self.stopped.items()):
            if clock - since > STOPPED_MEMORY:
                del self.stopped[key]
        answered: set[UUID] = set()
        for report, ref, opt_out in replies:
            try:
                account = account_of(ref.account)
            except UnknownAccount:  # a message of no account (tests that record replies alone)
                continue
            settings = AutoReplies(account.help_text, account.stop_text, tuple(account.help_keywords))
            key = (ref.account, report.msisdn)
            if not settings.enabled:
                if opt_out:
                    stopped.setdefault(key, clock)
                continue
            already = (
                key in self.stopped or key in stopped or bool(self._models().opted_out(ref.account, [report.msisdn]))
            )
            if opt_out:
                stopped.setdefault(key, clock)
            answer = answer_for(report.text, settings, optout_words=self.optout_words, already_opted_out=already)
            if answer is None:
                continue
            ident = auto_reply_id(report.gateway, report.reply_id)
            if ident in answered or store.exists(ident):
                continue  # the same reply, matched to another batch too: answered once
            answered.add(ident)
            kind, text = answer
            sender = report.to.strip().lstrip("+") or FIXED_SENDER
            fields: dict[str, Any] = {
                "account": ref.account,
                "kind": kind,
                "gateway": report.gateway,
                "reply_id": report.reply_id,
                "msisdn": report.msisdn,
                "in_reply_to": str(ref.message_id),
                "sender_id": sender,
                "text": text,
            }
            parts, reason = auto_reply_parts(text, unicode=account.unicode)
            if reason is None:
                try:
                    account.reserve_credits(ident, parts)
                except InsufficientBalance as short:
                    reason = f"the answer needs {parts} credits, the balance is {short.balance}"
            reply = AutoReply.queue(reason=reason, parts=parts, **fields)
            touched[reply.id] = reply
            if reason is not None:
                log.warning("account=%s %s answer to %s not sent: %s", ref.account, kind, report.msisdn, reason)
                continue
            batch = ContactBatch.open(
                file=ident, account=ref.account, number=0, sender_id=sender, not_before=None, expires_at=None,
                timestamp=datetime.now(UTC),
            )
            batch.route(report.gateway)
            batch.queue(0, report.msisdn, ref.customer_id, text, parts)
            batch.seal()
            touched[batch.id] = batch
            touched[account.id] = account

    def record(
        self, store: SmsStore, matched: list[tuple[GatewayReport, SubmissionRef | None]]
    ) -> list[GatewayReport]:
        """Record what matches (looking up the read model for what memory did not match); return
        the reports that still match nothing."""
        unmatched: list[GatewayReport] = []
        touched: dict[UUID, Aggregate] = {}
        optouts: dict[str, set[str]] = {}
        answers: list[tuple[GatewayReply, SubmissionRef, bool]] = []
        rows: list[PendingRow] | None = [] if store.writes_batch_rows else None
        for report, ref in matched:
            if ref is None:
                ref = self._match_stored(report)
            if ref is None:
                unmatched.append(report)
                continue
            delivery = self._delivery_log(store, ref)
            if isinstance(report, GatewayReceipt):
                fields: dict[str, Any] = {
                    "message_id": ref.message_id,
                    "msisdn": ref.msisdn,
                    "customer_id": ref.customer_id,
                    "status": report.status,
                    "gateway": report.gateway,
                    "gateway_id": report.gateway_id,
                    "error": report.error,
                    "at": report.at.isoformat(),
                }
                if rows is None:
                    fresh = delivery.reported(ref.index, **fields)
                else:
                    row = dispatch_rows.reported(delivery, ref.index, **fields, timestamp=datetime.now(UTC))
                    if row is not None:
                        rows.append(row)
                    fresh = row is not None
            else:
                opt_out = is_opt_out(report.text, self.optout_words)
                fresh = delivery.replied(
                    ref.index,
                    message_id=ref.message_id,
                    msisdn=report.msisdn,
                    customer_id=ref.customer_id,
                    text=report.text,
                    gateway=report.gateway,
                    reply_id=report.reply_id,
                    opt_out=opt_out,
                    at=report.at.isoformat(),
                )
                if fresh and opt_out:
                    optouts.setdefault(ref.account, set()).add(report.msisdn)
                if fresh:
                    answers.append((report, ref, opt_out))
            if fresh:
                touched[delivery.id] = delivery
                self.recorded += 1
            else:
                self.ignored += 1
        accounts: dict[str, Account] = {}

        def account_of(username: str) -> Account:
            if username not in accounts:
                accounts[username] = store.account(username)
            return accounts[username]

        for username, numbers in optouts.items():
            account = account_of(username)
            account.add_optouts(sorted(numbers))
            touched[account.id] = account
        stopped: dict[tuple[str, str], float] = {}
        if answers:
            self._answer(store, answers, account_of, touched, stopped)
        try:
            if rows:
                # Rows and the ordinary events of the same group (a new log's DeliveryStarted,
                # replies, opt-outs) in one transaction, each aggregate's in version order.
                events = [event for aggregate in touched.values() for event in aggregate.collect_events()]
                store.save_rows(dispatch_rows.encode_rows(rows, events, store.mapper, store.row_encoder()))
            else:
                store.save(*touched.values())
        except Exception:
            self.logs.clear()  # forget possibly half-applied state; reload from the store next time
            raise
        self.stopped.update(stopped)
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
                    unmatched = await store.run(partial(recorder.record, matched=matched))
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
