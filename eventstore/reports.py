"""Recording gateway reports already matched to their messages: the store's side of the receipts
actor (SmsStore.record_reports).

The actor matches each report to its message (memory, then the read model) and hands over what it
found, as data: a `ReceiptReport` or a `ReplyReport` per report. Here each becomes its event on the
message's DeliveryLog: DeliveryReported (built as a row where the store takes rows,
eventstore.dispatch_rows.reported) or ReplyReceived; one status per message, the first decides.
A reply that is an opt-out keyword puts its number on the account's list, and the account's HELP
answer or STOP confirmation (sftpsms.autoreply) is queued as a one-message batch with its credits
reserved, or recorded as not sent; all of one group in one transaction.

`DeliveryRecorder` keeps recently used delivery logs in memory: the receipts actor is their only
writer. It runs in the writer's commands, one at a time.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.domain import Aggregate

from eventstore import dispatch_rows
from eventstore.dispatch_rows import PendingRow
from eventstore.domain import (
    Account,
    AutoReply,
    ContactBatch,
    DeliveryLog,
    DomainError,
    auto_reply_id,
    delivery_log_id,
)
from sftpsms.autoreply import AutoReplies, answer_for, auto_reply_parts
from sftpsms.credits import shortfall
from sftpsms.gatewayids import is_opt_out
from sftpsms.intake import FIXED_SENDER

if TYPE_CHECKING:
    from eventstore.store import SmsStore

log = logging.getLogger(__name__)

CACHE_SIZE = 256  # delivery logs kept in memory

# A uuid5 per report otherwise; a batch's thousand receipts ask for the same one.
_delivery_log_id = lru_cache(maxsize=4096)(delivery_log_id)


class SentMessage(Protocol):
    """The message a report belongs to (the receipts actor's SubmissionRef)."""

    @property
    def message_id(self) -> UUID: ...
    @property
    def batch_id(self) -> UUID: ...
    @property
    def file_id(self) -> UUID: ...
    @property
    def index(self) -> int: ...
    @property
    def account(self) -> str: ...
    @property
    def msisdn(self) -> str: ...
    @property
    def customer_id(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class ReceiptReport:
    """A delivery receipt for `sent`."""

    sent: SentMessage
    status: str
    gateway: str
    gateway_id: str
    error: str | None
    at: str


@dataclass(frozen=True, slots=True)
class ReplyReport:
    """A reply to `sent`. `opted_out` says whether the number was opted out of the account before
    this group (what the actor remembers, or the read model): such a number gets no answer."""

    sent: SentMessage
    gateway: str
    reply_id: str
    msisdn: str
    to: str
    text: str
    at: str
    opted_out: bool


Report = ReceiptReport | ReplyReport


@dataclass(frozen=True)
class ReportsRecorded:
    """What a group came to: reports recorded now, reports that added nothing (recorded before),
    and the (account, number) pairs its replies opted out."""

    recorded: int
    ignored: int
    stopped: list[tuple[str, str]]


@dataclass
class DeliveryRecorder:
    logs: OrderedDict[UUID, DeliveryLog] = field(default_factory=OrderedDict)

    def _delivery_log(self, store: SmsStore, sent: SentMessage) -> DeliveryLog:
        key = _delivery_log_id(sent.batch_id)
        delivery = self.logs.get(key)
        if delivery is None:
            try:
                delivery = store.get(DeliveryLog, key)
            except AggregateNotFoundError:
                delivery = DeliveryLog.start(batch=sent.batch_id, file=sent.file_id, account=sent.account)
            self.logs[key] = delivery
            while len(self.logs) > CACHE_SIZE:
                self.logs.popitem(last=False)
        self.logs.move_to_end(key)
        return delivery

    def record(self, store: SmsStore, reports: Sequence[Report], *, optout_words: tuple[str, ...]) -> ReportsRecorded:
        touched: dict[UUID, Aggregate] = {}
        optouts: dict[str, set[str]] = {}
        answers: list[tuple[ReplyReport, bool]] = []
        rows: list[PendingRow] | None = [] if store.writes_batch_rows else None
        recorded = ignored = 0
        for report in reports:
            sent = report.sent
            delivery = self._delivery_log(store, sent)
            if isinstance(report, ReceiptReport):
                fields: dict[str, Any] = {
                    "message_id": sent.message_id,
                    "msisdn": sent.msisdn,
                    "customer_id": sent.customer_id,
                    "status": report.status,
                    "gateway": report.gateway,
                    "gateway_id": report.gateway_id,
                    "error": report.error,
                    "at": report.at,
                }
                if rows is None:
                    fresh = delivery.reported(sent.index, **fields)
                else:
                    row = dispatch_rows.reported(delivery, sent.index, **fields, timestamp=datetime.now(UTC))
                    if row is not None:
                        rows.append(row)
                    fresh = row is not None
            else:
                opt_out = is_opt_out(report.text, optout_words)
                fresh = delivery.replied(
                    sent.index,
                    message_id=sent.message_id,
                    msisdn=report.msisdn,
                    customer_id=sent.customer_id,
                    text=report.text,
                    gateway=report.gateway,
                    reply_id=report.reply_id,
                    opt_out=opt_out,
                    at=report.at,
                )
                if fresh and opt_out:
                    optouts.setdefault(sent.account, set()).add(report.msisdn)
                if fresh:
                    answers.append((report, opt_out))
            if fresh:
                touched[delivery.id] = delivery
                recorded += 1
            else:
                ignored += 1
        accounts: dict[str, Account] = {}

        def account_of(username: str) -> Account:
            if username not in accounts:
                accounts[username] = store.account(username)
            return accounts[username]

        for username, numbers in optouts.items():
            account = account_of(username)
            account.add_optouts(sorted(numbers))
            touched[account.id] = account
        stopped: list[tuple[str, str]] = []
        if answers:
            stopped = self._answer(store, answers, account_of, touched, optout_words)
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
        return ReportsRecorded(recorded, ignored, stopped)

    def _answer(
        self,
        store: SmsStore,
        replies: list[tuple[ReplyReport, bool]],
        account_of: Callable[[str], Account],
        touched: dict[UUID, Aggregate],
        optout_words: tuple[str, ...],
    ) -> list[tuple[str, str]]:
        """HELP answers and STOP confirmations for freshly recorded replies (sftpsms.autoreply):
        each an AutoReply with its one-message batch and its credits reserved, or recorded as
        not sent; saved with the replies, so a reply recorded is answered exactly once, also
        across restarts (the dispatcher sends the batch like any other). Returns the numbers
        these replies opt out (the actor remembers them once the group is saved)."""
        stopped: list[tuple[str, str]] = []
        answered: set[UUID] = set()
        for report, opt_out in replies:
            sent = report.sent
            try:
                account = account_of(sent.account)
            except DomainError:  # a message of no account (tests that record replies alone)
                continue
            settings = AutoReplies(account.help_text, account.stop_text, tuple(account.help_keywords))
            key = (sent.account, report.msisdn)
            already = report.opted_out or key in stopped
            if opt_out and key not in stopped:
                stopped.append(key)
            if not settings.enabled:
                continue
            answer = answer_for(report.text, settings, optout_words=optout_words, already_opted_out=already)
            if answer is None:
                continue
            ident = auto_reply_id(report.gateway, report.reply_id)
            if ident in answered or store.exists(ident):
                continue  # the same reply, matched to another batch too: answered once
            answered.add(ident)
            kind, text = answer
            sender = report.to.strip().lstrip("+") or FIXED_SENDER
            fields: dict[str, Any] = {
                "account": sent.account,
                "kind": kind,
                "gateway": report.gateway,
                "reply_id": report.reply_id,
                "msisdn": report.msisdn,
                "in_reply_to": str(sent.message_id),
                "sender_id": sender,
                "text": text,
            }
            parts, reason = auto_reply_parts(text, unicode=account.unicode)
            if reason is None:
                reason = shortfall("the answer", parts, account.balance)
            if reason is None:
                account.reserve_credits(ident, parts)
            reply = AutoReply.queue(reason=reason, parts=parts, **fields)
            touched[reply.id] = reply
            if reason is not None:
                log.warning("account=%s %s answer to %s not sent: %s", sent.account, kind, report.msisdn, reason)
                continue
            batch = ContactBatch.open(
                file=ident, account=sent.account, number=0, sender_id=sender, not_before=None, expires_at=None,
                timestamp=datetime.now(UTC),
            )
            batch.route(report.gateway)
            batch.queue(0, report.msisdn, sent.customer_id, text, parts)
            batch.seal()
            touched[batch.id] = batch
            touched[account.id] = account
        return stopped
