"""The simulator gateway: what it remembers, and how it pushes back when reports pile up."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import pytest
import trio
import trio.testing

from actors import simulator as simulator_module
from actors.gateway import GatewayReport, OutboundMessage
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


async def test_only_the_last_accepted_ids_are_remembered_and_the_journal_is_cut_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulator_module, "REMEMBER", 4)
    send, _receive = trio.open_memory_channel[GatewayReport](100)
    sim = Simulator(tmp_path, send)
    ids = [await sim.submit(outbound(index)) for index in range(10)]
    assert sorted(sim.accepted) == [1000 + i for i in range(6, 10)]
    assert await sim.submit(outbound(9)) == ids[9] and sim.duplicates == 1  # remembered: same id
    sim.close()
    assert len((tmp_path / "accepted.log").read_text().splitlines()) == 10
    reopened = Simulator(tmp_path, send)  # 10 lines > 2 x 4: cut back to the last 4
    assert sorted(reopened.accepted) == [1000 + i for i in range(6, 10)]
    assert len((tmp_path / "accepted.log").read_text().splitlines()) == 4
    assert await reopened.submit(outbound(8)) == ids[8] and reopened.duplicates == 1
    reopened.close()
