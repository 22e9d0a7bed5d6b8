"""The SMPP gateway against a real SMSC we did not write (node-smpp, tests/smsc/smsc.js)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.gateway import (
    GatewayReceipt,
    GatewayRejected,
    GatewayReply,
    GatewayReport,
    GatewayUnavailable,
    OutboundMessage,
)
from actors.receipts import ReportRecorder
from actors.smpp_gateway import SmppGateway
from actors.submissions import RecentSubmissions, SubmissionRef
from eventstore.domain import DeliveryLog, delivery_log_id
from eventstore.store import open_store
from sftpsms.gatewayids import lookup_keys, stored_key
from sftpsms.gateways import GatewayConfigError, SmppGatewayConfig, parse_gateways
from sftpsms.gsm import count_parts
from tests.smsc_server import Smsc, running_smsc

REPORTS_BUFFER = 100
LONG = "Your parcel is on its way. " * 15  # 405 GSM characters: three parts


def _message(text: str = "Hello from Acme", index: int = 0, sender: str = "Acme") -> OutboundMessage:
    return OutboundMessage(
        message_id=uuid.uuid5(uuid.NAMESPACE_OID, f"smpp-test-{index}-{text}"),
        batch_id=uuid.UUID(int=1),
        file_id=uuid.UUID(int=2),
        index=index,
        account="acme",
        msisdn="447700900123",
        sender_id=sender,
        text=text,
        parts=count_parts(text),
    )


class Harness:
    def __init__(self, smsc: Smsc, gateway: SmppGateway, reports: trio.MemoryReceiveChannel[GatewayReport]):
        self.smsc = smsc
        self.gateway = gateway
        self.reports = reports

    async def report(self) -> GatewayReport:
        with trio.fail_after(10):
            return await self.reports.receive()


def _config(smsc: Smsc, **overrides: Any) -> SmppGatewayConfig:
    config = SmppGatewayConfig(
        name="smsc",
        host="127.0.0.1",
        port=smsc.port,
        system_id="acme",
        password="pw",
        reconnect_backoff=0.05,
        response_timeout=5.0,
        throttle_backoff=0.01,
    )
    return replace(config, **overrides)


@pytest.fixture
async def smsc() -> AsyncIterator[Smsc]:
    async with running_smsc() as running:
        yield running


@pytest.fixture
async def harness(smsc: Smsc, nursery: trio.Nursery, tmp_path: Path) -> Harness:
    send, receive = trio.open_memory_channel[GatewayReport](REPORTS_BUFFER)
    gateway = SmppGateway(_config(smsc), send, journal_dir=tmp_path)
    await nursery.start(gateway.run)
    return Harness(smsc, gateway, receive)


async def test_binds_as_a_transceiver_with_its_system_id(harness: Harness) -> None:
    [bind] = await harness.smsc.wait_for("bind")
    assert bind["system_id"] == "acme"
    assert harness.gateway.connects == 1


async def test_short_message_is_one_submit_sm_without_a_header(harness: Harness) -> None:
    ids = await harness.gateway.submit(_message("Hello from Acme"))
    [submit] = await harness.smsc.wait_for("submit")
    assert ids == (submit["id"],)
    assert submit["text"] == "Hello from Acme"
    assert submit["udh"] == ""
    assert submit["data_coding"] == 0
    assert submit["dest"] == "447700900123"
    assert submit["source"] == "Acme"


async def test_gsm_extension_characters_arrive_intact(harness: Harness) -> None:
    await harness.gateway.submit(_message("Price: 5€ [promo] {x} ~ ^ | \\ @ £ ñ"))
    [submit] = await harness.smsc.wait_for("submit")
    assert submit["text"] == "Price: 5€ [promo] {x} ~ ^ | \\ @ £ ñ"


async def test_long_message_parts_go_in_order_with_one_reference(harness: Harness) -> None:
    ids = await harness.gateway.submit(_message(LONG))
    submits = await harness.smsc.wait_for("submit", 3)
    assert ids == tuple(submit["id"] for submit in submits)
    headers = [bytes.fromhex(submit["udh"]) for submit in submits]
    # node-smpp lists the header's elements: IEI 0 (8-bit concatenation), length 3, data.
    assert [header[:2] for header in headers] == [b"\x00\x03"] * 3
    assert len({header[2] for header in headers}) == 1  # the same reference
    assert [(header[3], header[4]) for header in headers] == [(3, 1), (3, 2), (3, 3)]
    assert all(submit["esm_class"] & 0x40 for submit in submits)
    assert "".join(submit["text"] for submit in submits) == LONG
    assert [len(submit["text"]) for submit in submits] == [153, 153, 99]


async def test_two_long_messages_get_different_references(harness: Harness) -> None:
    await harness.gateway.submit(_message(LONG, index=1))
    await harness.gateway.submit(_message(LONG, index=2))
    submits = await harness.smsc.wait_for("submit", 6)
    references = {bytes.fromhex(submit["udh"])[2] for submit in submits}
    assert len(references) == 2


async def test_non_gsm_text_goes_as_ucs2_in_67_character_parts(harness: Harness) -> None:
    text = "Привет! " * 10  # 80 characters, not GSM: two UCS-2 parts
    await harness.gateway.submit(_message(text))
    submits = await harness.smsc.wait_for("submit", 2)
    assert {submit["data_coding"] for submit in submits} == {8}
    assert [len(submit["text"]) for submit in submits] == [67, 13]
    assert "".join(submit["text"] for submit in submits) == text


async def test_resubmitting_a_message_returns_its_ids_without_sending_again(harness: Harness) -> None:
    first = await harness.gateway.submit(_message())
    again = await harness.gateway.submit(_message())
    await harness.smsc.sync()
    assert first == again
    assert len(harness.smsc.of("submit")) == 1


@pytest.mark.parametrize("ids", ["dec", "hex"])
@pytest.mark.parametrize("tlv", [False, True], ids=["text-only", "receipted_message_id"])
async def test_receipts_in_hex_or_decimal_match_the_submitted_id(harness: Harness, ids: str, tlv: bool) -> None:
    await harness.smsc.command("config", receipts="each", ids=ids, tlv=tlv)
    [gateway_id] = await harness.gateway.submit(_message())
    receipt = await harness.report()
    assert isinstance(receipt, GatewayReceipt)
    assert receipt.gateway == "smsc"
    assert receipt.status == "delivered"
    assert receipt.error is None
    if ids == "hex":
        assert receipt.gateway_id != gateway_id  # spelled differently by the SMSC ...
    assert stored_key(gateway_id) in lookup_keys(receipt.gateway_id)  # ... and still matched
    [answer] = await harness.smsc.wait_for("deliver_sm_resp")
    assert answer["status"] == 0


@pytest.mark.parametrize("stat,status", [("UNDELIV", "failed"), ("EXPIRED", "expired"), ("REJECTD", "failed")])
async def test_receipt_status_words_become_our_statuses(harness: Harness, stat: str, status: str) -> None:
    await harness.smsc.command("config", receipts="each", stat=stat)
    await harness.gateway.submit(_message())
    receipt = await harness.report()
    assert isinstance(receipt, GatewayReceipt)
    assert receipt.status == status


@pytest.mark.parametrize("receipts", ["first", "each"])
async def test_one_status_per_message_whether_receipts_come_per_part_or_for_the_first(
    harness: Harness, receipts: str, tmp_path: Path
) -> None:
    await harness.smsc.command("config", receipts=receipts, ids="hex")
    message = _message(LONG)
    ids = await harness.gateway.submit(message)
    expected = 3 if receipts == "each" else 1
    reports = [await harness.report() for _ in range(expected)]
    recent = RecentSubmissions()
    recent.add(SubmissionRef.of(message, "smsc", ids[0]), ids)
    recorder = ReportRecorder(recent, tmp_path / "readmodels.db", ("STOP",))
    store = open_store(tmp_path / "data")
    try:
        matched = [(report, recorder.match(report)) for report in reports]
        assert all(ref is not None and ref.message_id == message.message_id for _, ref in matched)
        assert recorder.record(store, matched) == []
        delivery = store.get(DeliveryLog, delivery_log_id(message.batch_id))
        assert delivery.statuses == {message.index: "delivered"}
        assert (recorder.recorded, recorder.ignored) == (1, expected - 1)
    finally:
        recorder.close()
        store.close()


async def test_throttled_part_is_retried_before_the_next_part(harness: Harness) -> None:
    await harness.smsc.command("throttle", count=2)
    ids = await harness.gateway.submit(_message(LONG))
    submits = await harness.smsc.wait_for("submit", 3)
    assert len(harness.smsc.of("throttled")) == 2
    assert harness.gateway.throttled == 2
    assert ids == tuple(submit["id"] for submit in submits)
    assert [bytes.fromhex(submit["udh"])[4] for submit in submits] == [1, 2, 3]
    assert "".join(submit["text"] for submit in submits) == LONG


async def test_throttled_for_too_long_leaves_the_message_waiting(smsc: Smsc, nursery: trio.Nursery, tmp_path: Path) -> None:
    send, _receive = trio.open_memory_channel[GatewayReport](REPORTS_BUFFER)
    gateway = SmppGateway(_config(smsc, throttle_retries=2), send, journal_dir=tmp_path)
    await nursery.start(gateway.run)
    await smsc.command("throttle", count=5)
    with pytest.raises(GatewayUnavailable):
        await gateway.submit(_message())
    assert len(smsc.of("throttled")) == 3


async def test_other_error_statuses_reject_the_message(harness: Harness) -> None:
    await harness.smsc.command("throttle", count=1, status=0x0B)  # ESME_RINVDSTADR
    with pytest.raises(GatewayRejected, match="0x0b"):
        await harness.gateway.submit(_message())


async def test_reconnects_after_the_smsc_drops_the_connection(harness: Harness) -> None:
    await harness.gateway.submit(_message(index=1))
    await harness.smsc.command("drop")
    await harness.smsc.wait_for("close")
    await harness.smsc.wait_for("bind", 2)
    with trio.fail_after(10):
        while True:
            try:
                ids = await harness.gateway.submit(_message(index=2))
                break
            except GatewayUnavailable:
                await trio.sleep(0.02)  # not bound again yet: the dispatcher would retry too
    assert harness.gateway.connects == 2
    assert ids == (harness.smsc.of("submit")[-1]["id"],)


async def test_not_connected_is_unavailable(nursery: trio.Nursery, tmp_path: Path) -> None:
    send, _receive = trio.open_memory_channel[GatewayReport](REPORTS_BUFFER)
    with trio.socket.socket() as probe:  # a port with nobody listening
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = SmppGatewayConfig(name="smsc", host="127.0.0.1", port=port, reconnect_backoff=0.05)
    gateway = SmppGateway(config, send, journal_dir=tmp_path)
    await nursery.start(gateway.run)  # started after the first attempt, though it failed
    with pytest.raises(GatewayUnavailable):
        await gateway.submit(_message())


async def test_sends_enquire_link_and_answers_the_smscs(smsc: Smsc, nursery: trio.Nursery, tmp_path: Path) -> None:
    send, _receive = trio.open_memory_channel[GatewayReport](REPORTS_BUFFER)
    gateway = SmppGateway(_config(smsc, enquire_link=0.05), send, journal_dir=tmp_path)
    await nursery.start(gateway.run)
    await smsc.wait_for("enquire_link", 2)
    await smsc.command("enquire_link")
    [answer] = await smsc.wait_for("enquire_link_resp")
    assert answer["status"] == 0
    assert gateway.connects == 1


async def test_mobile_originated_message_is_a_reply(harness: Harness) -> None:
    await harness.smsc.wait_for("bind")
    await harness.smsc.command("mo", **{"from": "447700900123", "to": "Acme", "text": "STOP please"})
    reply = await harness.report()
    assert isinstance(reply, GatewayReply)
    assert (reply.gateway, reply.msisdn, reply.to, reply.text) == ("smsc", "447700900123", "Acme", "STOP please")
    [answer] = await harness.smsc.wait_for("deliver_sm_resp")
    assert answer["status"] == 0


async def test_many_messages_through_the_window(harness: Harness) -> None:
    count = 200
    ids: list[tuple[str, ...]] = []

    async def sender(start: int) -> None:
        for index in range(start, count, harness.gateway.concurrency):
            ids.append(await harness.gateway.submit(_message(index=index)))

    async with trio.open_nursery() as senders:
        for start in range(harness.gateway.concurrency):
            senders.start_soon(sender, start)
    assert len({gateway_id for part_ids in ids for gateway_id in part_ids}) == count


async def test_a_refused_bind_is_retried_and_the_gateway_stays_unavailable(smsc: Smsc, nursery: trio.Nursery, tmp_path: Path) -> None:
    await smsc.command("config", system_id="someone-else", password="pw")
    send, _receive = trio.open_memory_channel[GatewayReport](REPORTS_BUFFER)
    gateway = SmppGateway(_config(smsc), send, journal_dir=tmp_path)
    await nursery.start(gateway.run)
    await smsc.wait_for("bind", 2)  # refused, then tried again after the backoff
    assert gateway.connects == 0
    with pytest.raises(GatewayUnavailable):
        await gateway.submit(_message())


async def test_an_unanswered_part_leaves_the_message_waiting_and_a_retry_sends_only_the_rest(
    smsc: Smsc, nursery: trio.Nursery, tmp_path: Path
) -> None:
    send, _receive = trio.open_memory_channel[GatewayReport](REPORTS_BUFFER)
    gateway = SmppGateway(_config(smsc, response_timeout=0.3), send, journal_dir=tmp_path)
    await nursery.start(gateway.run)
    message = _message(LONG)
    # Part 1 is answered, part 2 is not: the message waits; the retry goes on from part 2.
    await smsc.command("silence", count=1, after=1)
    with pytest.raises(GatewayUnavailable, match="no answer"):
        await gateway.submit(message)
    ids = await gateway.submit(message)
    submits = await smsc.wait_for("submit", 3)
    assert len(smsc.of("silenced")) == 1
    assert ids == tuple(submit["id"] for submit in submits)
    headers = [bytes.fromhex(submit["udh"]) for submit in submits]
    assert len({header[2] for header in headers}) == 1  # one reference across the retry
    assert [header[4] for header in headers] == [1, 2, 3]


async def test_stopping_the_gateway_unbinds(smsc: Smsc, tmp_path: Path) -> None:
    send, _receive = trio.open_memory_channel[GatewayReport](REPORTS_BUFFER)
    gateway = SmppGateway(_config(smsc), send, journal_dir=tmp_path)
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.run)
        await smsc.wait_for("bind")
        nursery.cancel_scope.cancel()
    await smsc.wait_for("unbind")


async def test_an_unanswered_enquire_link_ends_the_session_and_it_reconnects(smsc: Smsc, nursery: trio.Nursery, tmp_path: Path) -> None:
    await smsc.command("config", enquire_link=False)
    send, _receive = trio.open_memory_channel[GatewayReport](REPORTS_BUFFER)
    gateway = SmppGateway(_config(smsc, enquire_link=0.1, response_timeout=0.2), send, journal_dir=tmp_path)
    await nursery.start(gateway.run)
    await smsc.wait_for("close")
    await smsc.wait_for("bind", 2)


async def test_intermediate_receipts_record_nothing(harness: Harness) -> None:
    await harness.smsc.command("config", receipts="each", stat="ENROUTE")
    await harness.gateway.submit(_message(index=1))
    await harness.smsc.wait_for("deliver_sm_resp")  # answered, though it reports nothing
    await harness.smsc.command("config", stat="DELIVRD")
    [gateway_id] = await harness.gateway.submit(_message(index=2))
    receipt = await harness.report()
    assert isinstance(receipt, GatewayReceipt)
    assert receipt.gateway_id == gateway_id


# --- restarts: the journal ------------------------------------------------------------------------


async def _stopped_after(gateway: SmppGateway, work: Any) -> Any:
    """Run a gateway, do `work` with it, stop it (as a restart would: its memory goes)."""
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.run)
        result = await work()
        nursery.cancel_scope.cancel()
    return result


async def test_a_new_gateway_on_the_same_journal_does_not_send_a_message_again(smsc: Smsc, tmp_path: Path) -> None:
    short, long = _message(index=1), _message(LONG, index=2)

    async def submit_both(gateway: SmppGateway) -> tuple[tuple[str, ...], ...]:
        return await _stopped_after(gateway, lambda: _submit_all(gateway, short, long))

    before = await submit_both(SmppGateway(_config(smsc), _reports(), journal_dir=tmp_path))
    after = await submit_both(SmppGateway(_config(smsc), _reports(), journal_dir=tmp_path))
    await smsc.sync()
    assert after == before
    assert len(smsc.of("submit")) == 4  # one short message, three parts: each sent once
    assert before[0] == (smsc.of("submit")[0]["id"],)


async def test_after_a_restart_an_interrupted_message_resumes_from_its_next_part(smsc: Smsc, tmp_path: Path) -> None:
    message = _message(LONG)
    await smsc.command("silence", count=1, after=1)  # part 1 answered, part 2 never
    first = SmppGateway(_config(smsc, response_timeout=0.3), _reports(), journal_dir=tmp_path)

    async def fail() -> None:
        with pytest.raises(GatewayUnavailable, match="no answer"):
            await first.submit(message)

    await _stopped_after(first, fail)
    second = SmppGateway(_config(smsc), _reports(), journal_dir=tmp_path)
    ids = await _stopped_after(second, lambda: second.submit(message))
    submits = await smsc.wait_for("submit", 3)
    assert ids == tuple(submit["id"] for submit in submits)
    headers = [bytes.fromhex(submit["udh"]) for submit in submits]
    assert len({header[2] for header in headers}) == 1  # the same reference across the restart
    assert [header[4] for header in headers] == [1, 2, 3]


async def test_references_go_on_after_a_restart(smsc: Smsc, tmp_path: Path) -> None:
    first = SmppGateway(_config(smsc), _reports(), journal_dir=tmp_path)
    await _stopped_after(first, lambda: first.submit(_message(LONG, index=1)))
    second = SmppGateway(_config(smsc), _reports(), journal_dir=tmp_path)
    await _stopped_after(second, lambda: second.submit(_message(LONG, index=2)))
    submits = await smsc.wait_for("submit", 6)
    assert len({bytes.fromhex(submit["udh"])[2] for submit in submits}) == 2


@pytest.mark.parametrize("name", ["../elsewhere", "a/b", "", "x" * 65])
def test_a_gateway_name_that_could_leave_the_journal_folder_is_refused(name: str) -> None:
    with pytest.raises(GatewayConfigError, match="a name is"):
        parse_gateways({"gateways": {name: {"type": "smpp", "host": "127.0.0.1"}}})


def _reports() -> trio.MemorySendChannel[GatewayReport]:
    send, _receive = trio.open_memory_channel[GatewayReport](REPORTS_BUFFER)
    return send


async def _submit_all(gateway: SmppGateway, *messages: OutboundMessage) -> tuple[tuple[str, ...], ...]:
    return tuple([await gateway.submit(message) for message in messages])


# --- replies: long ones, and redelivered ones ------------------------------------------------------


async def _mo(smsc: Smsc, text: str, **fields: Any) -> None:
    await smsc.command("mo", **{"from": "447700900123", "to": "Acme", "text": text, **fields})


@pytest.mark.parametrize(
    "header",
    [lambda seq: f"050003A702{seq:02x}", lambda seq: f"060804BEEF02{seq:02x}"],
    ids=["8-bit-reference", "16-bit-reference"],
)
async def test_a_two_part_reply_becomes_one_reply(harness: Harness, header: Any) -> None:
    await harness.smsc.wait_for("bind")
    await _mo(harness.smsc, "Yes please, send me ", udh=header(1))
    await harness.smsc.wait_for("deliver_sm_resp")  # answered at once, though held
    await _mo(harness.smsc, "the brochure.", udh=header(2))
    reply = await harness.report()
    assert isinstance(reply, GatewayReply)
    assert (reply.msisdn, reply.to, reply.text) == ("447700900123", "Acme", "Yes please, send me the brochure.")
    await harness.smsc.wait_for("deliver_sm_resp", 2)
    assert harness.reports.statistics().current_buffer_used == 0  # one reply, not one per part


async def test_parts_of_a_reply_in_sar_fields_arriving_out_of_order_are_joined_in_order(harness: Harness) -> None:
    await harness.smsc.wait_for("bind")
    await _mo(harness.smsc, "the brochure.", sar={"ref": 7, "total": 2, "seq": 2})
    await _mo(harness.smsc, "Yes please, send me ", sar={"ref": 7, "total": 2, "seq": 1})
    reply = await harness.report()
    assert isinstance(reply, GatewayReply)
    assert reply.text == "Yes please, send me the brochure."


async def test_ucs2_parts_are_joined_before_decoding(harness: Harness) -> None:
    await harness.smsc.wait_for("bind")
    await _mo(harness.smsc, "Да, пожалуйста, ", udh="050003110201", data_coding=8)
    await _mo(harness.smsc, "пришлите.", udh="050003110202", data_coding=8)
    reply = await harness.report()
    assert isinstance(reply, GatewayReply)
    assert reply.text == "Да, пожалуйста, пришлите."


async def test_parts_of_two_replies_with_different_references_stay_apart(harness: Harness) -> None:
    await harness.smsc.wait_for("bind")
    await _mo(harness.smsc, "A1 ", udh="050003010201")
    await _mo(harness.smsc, "B1 ", udh="050003020201")
    await _mo(harness.smsc, "B2", udh="050003020202")
    await _mo(harness.smsc, "A2", udh="050003010202")
    texts = [(await harness.report()).text for _ in range(2)]  # type: ignore[union-attr]
    assert texts == ["B1 B2", "A1 A2"]


async def test_a_reply_whose_last_part_never_comes_is_delivered_as_what_arrived(
    smsc: Smsc, nursery: trio.Nursery, tmp_path: Path
) -> None:
    send, receive = trio.open_memory_channel[GatewayReport](REPORTS_BUFFER)
    gateway = SmppGateway(_config(smsc, reply_parts_timeout=0.2), send, journal_dir=tmp_path)
    await nursery.start(gateway.run)
    await smsc.wait_for("bind")
    await _mo(smsc, "Yes please, ", udh="050003330301")
    await _mo(smsc, "send me ", udh="050003330302")
    with trio.fail_after(5):
        reply = await receive.receive()
    assert isinstance(reply, GatewayReply)
    assert reply.text == "Yes please, send me "


async def test_a_reply_redelivered_after_a_reconnect_keeps_its_id(harness: Harness) -> None:
    await harness.smsc.wait_for("bind")
    await _mo(harness.smsc, "STOP please")
    first = await harness.report()
    await harness.smsc.command("drop")
    await harness.smsc.wait_for("bind", 2)
    await _mo(harness.smsc, "STOP please")  # the SMSC did not see our answer: it delivers it again
    again = await harness.report()
    assert isinstance(first, GatewayReply) and isinstance(again, GatewayReply)
    assert again.reply_id == first.reply_id
    assert harness.gateway.connects == 2


async def test_a_long_reply_redelivered_keeps_its_id(harness: Harness) -> None:
    await harness.smsc.wait_for("bind")
    ids = []
    for _ in range(2):
        await _mo(harness.smsc, "Yes please, ", udh="050003440201")
        await _mo(harness.smsc, "send it.", udh="050003440202")
        reply = await harness.report()
        assert isinstance(reply, GatewayReply)
        ids.append(reply.reply_id)
    assert ids[0] == ids[1]


async def test_replies_that_differ_in_text_time_or_sender_get_different_ids(harness: Harness) -> None:
    await harness.smsc.wait_for("bind")
    await _mo(harness.smsc, "YES")
    await _mo(harness.smsc, "NO")
    await _mo(harness.smsc, "YES", schedule="261125104300000+")
    await harness.smsc.command("mo", **{"from": "447700900999", "to": "Acme", "text": "YES"})
    replies = [await harness.report() for _ in range(4)]
    assert len({reply.reply_id for reply in replies if isinstance(reply, GatewayReply)}) == 4


async def test_a_redelivered_reply_is_recorded_once(harness: Harness, tmp_path: Path) -> None:
    message = _message()
    ids = await harness.gateway.submit(message)
    await harness.smsc.wait_for("bind")
    await _mo(harness.smsc, "Thanks")
    await harness.smsc.command("drop")
    await harness.smsc.wait_for("bind", 2)
    await _mo(harness.smsc, "Thanks")
    replies = [await harness.report() for _ in range(2)]
    recent = RecentSubmissions()
    recent.add(SubmissionRef.of(message, "smsc", ids[0]), ids)
    recorder = ReportRecorder(recent, tmp_path / "readmodels.db", ("STOP",))
    store = open_store(tmp_path / "data")
    try:
        matched = [(reply, recorder.match(reply)) for reply in replies]
        assert all(ref is not None for _, ref in matched)
        recorder.record(store, matched)
        delivery = store.get(DeliveryLog, delivery_log_id(message.batch_id))
        assert len(delivery.reply_ids) == 1
    finally:
        recorder.close()
        store.close()


async def test_too_many_unfinished_long_replies_deliver_the_oldest_as_it_is(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("actors.smpp_gateway.HELD_REPLIES", 1)
    await harness.smsc.wait_for("bind")
    await _mo(harness.smsc, "First, part one. ", udh="050003550201")
    await _mo(harness.smsc, "Second, part one. ", udh="050003560201")
    reply = await harness.report()
    assert isinstance(reply, GatewayReply)
    assert reply.text == "First, part one. "
    await _mo(harness.smsc, "And two.", udh="050003560202")
    reply = await harness.report()
    assert isinstance(reply, GatewayReply)
    assert reply.text == "Second, part one. And two."
