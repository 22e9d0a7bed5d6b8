"""The SMPP gateway benchmark behind scripts/bench_smpp (see there)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.gateway import GatewayReport, OutboundMessage  # noqa: E402
from actors.smpp_gateway import SmppGateway  # noqa: E402
from sftpsms.gateways import SmppGatewayConfig  # noqa: E402
from sftpsms.gsm import count_parts  # noqa: E402
from tests.smsc_server import running_smsc  # noqa: E402


async def bench(messages: int, parts: int, window: int) -> None:
    with tempfile.TemporaryDirectory() as journal:
        await _bench_in(journal, messages, parts, window)


async def _bench_in(journal: str, messages: int, parts: int, window: int) -> None:
    text = ("Your statement is ready. " * 7)[:160] if parts == 1 else "x" * (153 * parts)
    async with running_smsc() as smsc, trio.open_nursery() as nursery:
        await smsc.command("config", events=False, receipts="none")
        send, receive = trio.open_memory_channel[GatewayReport](0)
        config = SmppGatewayConfig(name="smsc", host="127.0.0.1", port=smsc.port, window=window)
        gateway = SmppGateway(config, send, journal_dir=Path(journal))
        await nursery.start(gateway.run)
        sent = 0

        async def sender(start: int) -> None:
            nonlocal sent
            for index in range(start, messages, gateway.concurrency):
                message = OutboundMessage(
                    message_id=uuid.uuid5(uuid.NAMESPACE_OID, f"bench-{index}"),
                    batch_id=uuid.UUID(int=1),
                    file_id=uuid.UUID(int=2),
                    index=index,
                    account="bench",
                    msisdn=f"2783{index:07d}",
                    sender_id="Bench",
                    text=text,
                    parts=count_parts(text),
                )
                ids = await gateway.submit(message)  # not `sent += len(await ...)`: that reads sent first
                sent += len(ids)

        began = time.perf_counter()
        async with trio.open_nursery() as senders:
            for start in range(gateway.concurrency):
                senders.start_soon(sender, start)
        elapsed = time.perf_counter() - began
        print(
            f"messages={messages} parts={sent} window={window} seconds={elapsed:.2f} "
            f"parts_per_s={sent / elapsed:.0f}"
        )
        nursery.cancel_scope.cancel()
        receive.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--parts", type=int, default=1)
    parser.add_argument("--window", type=int, default=10)
    args = parser.parse_args()
    trio.run(bench, args.messages, args.parts, args.window)


if __name__ == "__main__":
    main()
