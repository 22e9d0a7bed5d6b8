"""The simulator gateway: what it remembers, and how it pushes back when reports pile up."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
import trio
import trio.testing

from actors import simulator as simulator_module
from actors.gateway import GatewayReceipt, GatewayReply, GatewayReport, OutboundMessage
from actors.simulator import Simulator
from sftpsms.gateways import SimulatorGatewayConfig


def outbound(index: int) -> OutboundMessage:
    file = UUID(int=7)
    return OutboundMessage(
        message_id=UUID(int=1000 + index), batch_id=UUID(int=8), file_id=file, index=index, account="acme",
        msisdn=f"2783{index:07d}", sender_id="Acme", text="hi", parts=1, customer_id=None,
    )


async def test_submit_waits_while_too_many_reports_are_pending(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    send, receive = trio.open_memory_channel[GatewayReport](0)  # nobody reads until we say so
    sim = Simulator(tmp_path, send, SimulatorGatewayConfig(delay=0.1))
    sim.max_pending = 3
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sim.run)
        for index in range(3):
            await sim.submit(outbound(index))
        with trio.move_on_after(5) as waited:
            await sim.submit(outbound(3))
        assert waited.cancelled_caught, "a fourth pending report must wait"
        assert len(sim.accepted) == 3
        first = await receive.receive()  # one report handed on: room for one more
        with trio.fail_after(5):
            await sim.submit(outbound(3))
        assert len(sim.accepted) == 4
        nursery.cancel_scope.cancel()
    sim.close()
    assert first.message_id == UUID(int=1000)  # type: ignore[union-attr]


def receipt_of(sim: Simulator, index: int) -> GatewayReceipt:
    message = outbound(index).message_id
    return GatewayReceipt(gateway=sim.name, gateway_id=sim.gateway_id(message), status="delivered", at=datetime.now(UTC),
                          message_id=message)


async def test_only_the_last_accepted_ids_are_remembered_and_the_journal_is_cut_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulator_module, "REMEMBER", 4)
    send, _receive = trio.open_memory_channel[GatewayReport](100)
    sim = Simulator(tmp_path, send)
    ids = [await sim.submit(outbound(index)) for index in range(10)]
    assert sorted(sim.accepted) == [1000 + i for i in range(6, 10)]
    assert await sim.submit(outbound(9)) == ids[9] and sim.duplicates == 1  # remembered: same id
    sim.recorded([receipt_of(sim, index) for index in range(10)])  # nothing owed any more
    sim.close()
    assert len((tmp_path / "accepted.log").read_text().splitlines()) == 10
    assert (tmp_path / "resubmitted.log").read_text() == f"{outbound(9).message_id}\n"
    reopened = Simulator(tmp_path, send)  # 10 lines > 2 x 4: cut back to the last 4
    assert sorted(reopened.accepted) == [1000 + i for i in range(6, 10)]
    assert len((tmp_path / "accepted.log").read_text().splitlines()) == 4
    assert len((tmp_path / "reported.log").read_text().splitlines()) == 4
    assert reopened.owed == []
    reopened.close()


async def test_what_was_accepted_and_not_recorded_is_reported_after_a_restart(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    send, receive = trio.open_memory_channel[GatewayReport](100)
    sim = Simulator(tmp_path, send, SimulatorGatewayConfig(delay=3600, reply_per_mille=1000))
    ids = [await sim.submit(outbound(index)) for index in range(5)]
    sim.recorded([receipt_of(sim, 0), receipt_of(sim, 1)])  # the receipts actor recorded two
    sim.close()  # the process stops: the rest was only in memory

    restarted = Simulator(tmp_path, send, SimulatorGatewayConfig(delay=0.1, reply_per_mille=1000))
    assert len(restarted.owed) == 3 + 5  # three receipts, five replies
    async with trio.open_nursery() as nursery:
        await nursery.start(restarted.run)
        with trio.fail_after(10_000):  # due an hour after submission (the old run's delay)
            reports = [await receive.receive() for _ in range(8)]
        nursery.cancel_scope.cancel()
    receipts = sorted((r.message_id, r.gateway_id) for r in reports if isinstance(r, GatewayReceipt))
    assert receipts == sorted((outbound(i).message_id, ids[i][0]) for i in range(2, 5))
    replies = [r for r in reports if isinstance(r, GatewayReply)]
    assert sorted(r.in_reply_to for r in replies) == sorted(i[0] for i in ids)
    assert {(r.msisdn, r.to) for r in replies} == {(outbound(i).msisdn, "Acme") for i in range(5)}
    assert all(r.status == restarted.status(r.message_id) for r in reports if isinstance(r, GatewayReceipt))  # type: ignore[arg-type]
    restarted.recorded(reports)
    restarted.close()
    assert Simulator(tmp_path, send).owed == [], "recorded: owed no more"


async def test_a_journal_of_the_old_format_is_owed_in_full(tmp_path: Path) -> None:
    (tmp_path / "accepted.log").write_text(f"{outbound(0).message_id} 000000000042\n")
    send, _receive = trio.open_memory_channel[GatewayReport](10)
    sim = Simulator(tmp_path, send)
    assert [(kind, UUID(int=message), gateway_id) for kind, message, gateway_id, *_ in sim.owed] == [
        (0, outbound(0).message_id, "000000000042")
    ]
    sim.close()


async def test_a_message_another_nodes_simulator_accepted_is_recognised_when_sent_again(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes"
    send, receive = trio.open_memory_channel[GatewayReport](100)
    a = Simulator(nodes / "a" / "simulator", send.clone(), SimulatorGatewayConfig(delay=0.05), peers=nodes)
    b = Simulator(nodes / "b" / "simulator", send, SimulatorGatewayConfig(delay=0.05), peers=nodes)
    first = await a.submit(outbound(1))
    b.adopt_peers(b.read_peers())
    assert await b.submit(outbound(1)) == first  # the same gateway id, not sent as new
    assert await b.submit(outbound(2)) == (b.gateway_id(outbound(2).message_id),)
    assert b.duplicates == 1 and a.duplicates == 0
    assert (nodes / "b" / "simulator" / "resubmitted.log").read_text() == f"{outbound(1).message_id}\n"
    # b now owes its receipt (a may be dead): b makes it.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.run)
        with trio.fail_after(5):
            made = {(await receive.receive()).message_id for _ in range(2)}
        nursery.cancel_scope.cancel()
    assert made == {outbound(1).message_id, outbound(2).message_id}
    a.close()
    b.close()


async def test_a_report_a_gone_node_owed_is_made_by_another_and_a_recorded_one_is_not(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes"
    send, receive = trio.open_memory_channel[GatewayReport](100)
    a = Simulator(nodes / "a" / "simulator", send.clone(), SimulatorGatewayConfig(delay=0.05), peers=nodes)
    await a.submit(outbound(1))
    await a.submit(outbound(2))
    a.recorded([receipt_of(a, 2)])  # a's receipts actor recorded message 2's receipt; 1's is owed
    a.close()  # a is gone
    # Both receipts were due well over PEER_GRACE ago.
    journal = nodes / "a" / "simulator" / "accepted.log"
    past = datetime.now(UTC).timestamp() - 60
    journal.write_text("".join(f"{line.split(' ')[0]} {line.split(' ')[1]} {past:.3f}\n" for line in journal.read_text().splitlines()))
    b = Simulator(nodes / "b" / "simulator", send, SimulatorGatewayConfig(delay=0.05), peers=nodes)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.run)  # follows the peers' journals at once
        with trio.fail_after(5):
            made = await receive.receive()
        with trio.move_on_after(0.5):
            extra = await receive.receive()
            raise AssertionError(f"a recorded report made again: {extra}")
        nursery.cancel_scope.cancel()
    assert made.message_id == outbound(1).message_id and b.taken_over == 1
    b.close()
