"""The HTTP gateway benchmark behind scripts/bench_http (see there)."""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from functools import partial
from pathlib import Path
from uuid import uuid4

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.gateway import GatewayReport, OutboundMessage  # noqa: E402
from actors.http_gateway import HttpGateway  # noqa: E402
from actors.http_inbound import HttpRequest, HttpResponse, serve_http  # noqa: E402
from sftpsms.gateways import HttpGatewayConfig  # noqa: E402


def provider(latency: float, ports: multiprocessing.Queue[int]) -> None:
    import orjson

    async def take(request: HttpRequest) -> HttpResponse:
        if latency:
            await trio.sleep(latency)
        return HttpResponse(200, {"id": orjson.loads(request.body)["message_id"][:13]})

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            ports.put(await nursery.start(partial(serve_http, {("POST", "/sms"): take}, host="127.0.0.1", port=0)))

    trio.run(main)


async def submit_all(port: int, messages: int, concurrency: int) -> float:
    reports_send, reports_receive = trio.open_memory_channel[GatewayReport](1)
    config = HttpGatewayConfig(name="bench", url=f"http://127.0.0.1:{port}/sms", concurrency=concurrency)
    gateway = HttpGateway(config, reports_send)
    with reports_receive:
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.run)
            work_send, work_receive = trio.open_memory_channel[OutboundMessage](0)

            async def sender(receive: trio.MemoryReceiveChannel[OutboundMessage]) -> None:
                with receive:
                    async for message in receive:
                        await gateway.submit(message)

            started = time.perf_counter()
            async with trio.open_nursery() as senders:
                with work_receive:
                    for _ in range(concurrency):
                        senders.start_soon(sender, work_receive.clone())
                with work_send:
                    batch, file = uuid4(), uuid4()
                    for index in range(messages):
                        await work_send.send(
                            OutboundMessage(uuid4(), batch, file, index, "bench", "27831234567", "BENCH", "Hello", 1)
                        )
            elapsed = time.perf_counter() - started
            nursery.cancel_scope.cancel()
    return messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the provider takes per request")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated sender counts")
    args = parser.parse_args()
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    process = multiprocessing.Process(target=provider, args=(args.latency, ports), daemon=True)
    process.start()
    try:
        port = ports.get(timeout=30)
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            rate = trio.run(submit_all, port, args.messages, concurrency)
            print(f"concurrency={concurrency:<3} latency={args.latency:g}s messages={args.messages}: {rate:,.0f} submits/s", flush=True)
    finally:
        process.terminate()
        process.join()


if __name__ == "__main__":
    main()
