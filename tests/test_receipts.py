"""Receipts and replies matched to their messages and recorded once: what users of other gateways
suffer (ids in hex vs decimal, other case, no leading zeros; a receipt per part or for the first
part only; the same report twice; a receipt after a restart), and replies that opt out.

The store and the read models are real; the reports are what gateways put on the channel (the
gateways' own tests check they produce them from real peers).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid5

import pytest
from eventsourcing.application import AggregateNotFoundError

from actors.gateway import GatewayReceipt, GatewayReply, GatewayReport, OutboundMessage
from actors.projector import Projector
from actors.receipts import ReportRecorder
from actors.submissions import RecentSubmissions, SubmissionRef
from eventstore.domain import (
    NAMESPACE,
    ContactBatch,
    DeliveryLog,
    DispatchLog,
    delivery_log_id,
    dispatch_log_id,
    message_id,
)
from eventstore.projections import ReadModels
from eventstore.store import SmsStore, open_store
from sftpsms.gatewayids import lookup_keys, stored_key

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
FILE = uuid5(NAMESPACE, "test-file:acme:receipts.json")
BATCH = uuid5(FILE, "batch:0")


def outbound(index: int, parts: int = 1) -> OutboundMessage:
    return OutboundMessage(
        message_id=message_id(FILE, index),
        batch_id=BATCH,
        file_id=FILE,
        index=index,
        account="acme",
        msisdn=f"2783000000{index}",
        sender_id="Acme",
        text="hello",
        parts=parts,
        customer_id=f"c{index}",
    )


@dataclass
class Harness:
    store: SmsStore
    recent: RecentSubmissions
    recorder: ReportRecorder
    projector: Projector

    def submit(self, message: OutboundMessage, ids: tuple[str, ...], *, gateway: str = "smsc") -> None:
        """What the dispatcher does when a gateway accepted a message: remember it, record it."""
        self.recent.add(SubmissionRef.of(message, gateway, ids[0]), ids)
        dispatch = self._dispatch_log()
        dispatch.submitted(
            message.index, gateway, ids, message.parts, AT.isoformat(), msisdn=message.msisdn,
            customer_id=message.customer_id,
        )
        self.store.save(dispatch)
        self.projector.catch_up_sync()

    def _dispatch_log(self) -> DispatchLog:
        try:
            return self.store.get(DispatchLog, dispatch_log_id(BATCH))
        except AggregateNotFoundError:
            return DispatchLog.start(batch=BATCH, file=FILE, account="acme")

    def report(self, *reports: GatewayReport) -> list[GatewayReport]:
        """What the receipts actor does with a group: match in memory, record (read model for the rest)."""
        unmatched = self.recorder.record(self.store, [(r, self.recorder.match(r)) for r in reports])
        self.projector.catch_up_sync()
        return unmatched

    def delivered(self) -> list[DeliveryLog.DeliveryReported]:
        return [e for e in self.store.events.get(delivery_log_id(BATCH)) if isinstance(e, DeliveryLog.DeliveryReported)]

    def replies(self) -> list[DeliveryLog.ReplyReceived]:
        return [e for e in self.store.events.get(delivery_log_id(BATCH)) if isinstance(e, DeliveryLog.ReplyReceived)]


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    store = open_store(tmp_path)
    store.create_account(username="acme", password_hash="x", email=None, country="ZA", created_at=AT)
    batch = ContactBatch.open(
        file=FILE, account="acme", number=0, sender_id="Acme", not_before=None, expires_at=None, timestamp=AT
    )
    for index in range(3):
        message = outbound(index)
        batch.queue(index, message.msisdn, message.customer_id, message.text, message.parts)
    batch.seal()
    store.save(batch)
    assert batch.id == BATCH
    recent = RecentSubmissions()
    recorder = ReportRecorder(recent, tmp_path / "readmodels.db", ("STOP", "UNSUBSCRIBE"))
    try:
        yield Harness(store, recent, recorder, Projector(store, tmp_path / "readmodels.db"))
    finally:
        recorder.close()
        store.close()


def receipt(gateway_id: str, status: str = "delivered", gateway: str = "smsc") -> GatewayReceipt:
    return GatewayReceipt(gateway=gateway, gateway_id=gateway_id, status=status, at=AT)


@pytest.mark.parametrize(
    ("submitted", "in_receipt"),
    [("0000A1B", "2587"), ("2587", "a1b"), ("a1b", "00A1B"), ("000123", "123"), ("123", "7B")],
)
def test_a_stored_id_is_found_under_any_spelling_of_it(submitted: str, in_receipt: str) -> None:
    assert stored_key(submitted) in lookup_keys(in_receipt)


def test_other_ids_and_opaque_tokens_do_not_match() -> None:
    assert stored_key("123") not in lookup_keys("124")
    token = "c1a4a7e2-5b8f-4d6e-9a3b-0f1e2d3c4b5a"
    assert lookup_keys(token.upper()) == (token,) == (stored_key(token),)


@pytest.mark.parametrize(
    ("submitted", "in_receipt"),
    [
        ("0000A1B2", "41394"),  # hex in submit_sm_resp, decimal in the receipt
        ("41394", "A1B2"),  # and the other way round
        ("00a1b2c3", "A1B2C3"),  # other case, leading zeros dropped
        ("000000123", "123"),
    ],
)
def test_a_receipt_matches_its_message_whatever_the_id_spelling(harness: Harness, submitted: str, in_receipt: str) -> None:
    harness.submit(outbound(0), (submitted,))
    harness.submit(outbound(1), ("999999",))
    assert harness.report(receipt(in_receipt)) == []
    [reported] = harness.delivered()
    assert (reported.index, reported.status, reported.msisdn, reported.customer_id) == (0, "delivered", "27830000000", "c0")
    assert reported.message_id == str(message_id(FILE, 0)) and reported.account == "acme"


def test_a_receipt_after_a_restart_is_matched_through_the_read_model(harness: Harness, tmp_path: Path) -> None:
    harness.submit(outbound(0), ("0000A1B2",))
    restarted = ReportRecorder(RecentSubmissions(), tmp_path / "readmodels.db", ("STOP",))
    try:
        found = restarted.match(receipt("41394"))
        assert found is None  # nothing in memory after the restart...
        assert restarted.record(harness.store, [(receipt("41394", "failed"), found)]) == []
    finally:
        restarted.close()
    [reported] = harness.delivered()  # ...the gateway_ids read model knew it
    assert (reported.index, reported.status) == (0, "failed")


@pytest.mark.parametrize("per_part", [True, False], ids=["a receipt per part", "first part only"])
def test_a_multi_part_message_gets_one_status(harness: Harness, per_part: bool) -> None:
    harness.submit(outbound(0, parts=3), ("1001", "1002", "1003"))
    receipts = [receipt("1001"), receipt("1002"), receipt("1003", "failed")] if per_part else [receipt("3E9")]
    assert harness.report(*receipts) == []
    assert [(e.index, e.status) for e in harness.delivered()] == [(0, "delivered")]
    assert harness.recorder.ignored == (2 if per_part else 0)


def test_the_same_receipt_twice_is_recorded_once(harness: Harness) -> None:
    harness.submit(outbound(0), ("77",))
    harness.report(receipt("77"))
    harness.report(receipt("77"), receipt("077"))
    assert len(harness.delivered()) == 1


def test_ids_of_one_gateway_do_not_match_another_gateways_receipts(harness: Harness) -> None:
    harness.submit(outbound(0), ("5000",), gateway="smsc")
    assert harness.report(receipt("5000", gateway="bulkhttp")) == [receipt("5000", gateway="bulkhttp")]
    assert harness.delivered() == []


def test_a_stop_reply_opts_the_number_out_once(harness: Harness) -> None:
    harness.submit(outbound(0), ("42",))
    stop = GatewayReply(gateway="smsc", reply_id="r1", msisdn="27830000000", to="Acme", text="stop please", at=AT)
    assert harness.report(stop) == []
    harness.report(stop)  # the peer delivered it again
    [reply] = harness.replies()
    assert (reply.index, reply.opt_out, reply.text, reply.customer_id) == (0, True, "stop please", "c0")
    models = ReadModels(harness.recorder.readmodels_path)
    try:
        assert models.db.execute("SELECT msisdn FROM optouts WHERE account = 'acme'").fetchall() == [("27830000000",)]
    finally:
        models.close()


def test_a_reply_that_is_not_a_keyword_is_recorded_without_opting_out(harness: Harness) -> None:
    harness.submit(outbound(0), ("42",))
    harness.submit(outbound(1), ("43",))
    thanks = GatewayReply(
        gateway="smsc", reply_id="r2", msisdn="27830000001", to="Acme", text="Thanks, STOP by later", at=AT,
        in_reply_to="2B",  # the peer names the message it answers (43), in hex
    )
    harness.report(thanks)
    [reply] = harness.replies()
    assert (reply.index, reply.opt_out) == (1, False)


def test_receipts_matched_through_the_read_model_from_different_worker_threads(harness: Harness, tmp_path: Path) -> None:
    """The writer runs each command in whichever trio worker thread is free: the recorder's
    read-model connection must serve every one of them (it raised ProgrammingError, and the
    group of receipts was dropped)."""
    harness.submit(outbound(0), ("0000A1B2",))
    harness.submit(outbound(1), ("0000A1B3",))
    restarted = ReportRecorder(RecentSubmissions(), tmp_path / "readmodels.db", ("STOP",))
    results: list[object] = []

    def record(gateway_id: str) -> None:
        try:
            results.append(restarted.record(harness.store, [(receipt(gateway_id), None)]))
        except Exception as error:  # noqa: BLE001 - reported below
            results.append(error)

    try:
        for gateway_id in ("0000A1B2", "0000A1B3"):
            thread = threading.Thread(target=record, args=(gateway_id,))
            thread.start()
            thread.join()
    finally:
        restarted.close()
    assert results == [[], []]
    assert sorted(e.index for e in harness.delivered()) == [0, 1]
