"""The ceiling: a no-op ``grpc.aio`` server with the service's method paths.

    python bench/ceiling.py --responses DIR   # unary: DIR/<Method>.bin returned as is
    python bench/ceiling.py --rate 10         # streaming: a ticker fans out one message

Unary handlers return a pre-built response (the bytes the real server sent
for the same request), so the ceiling pays exactly gRPC's cost for a
response of that size. The streaming handler sends a snapshot_end, then
every message the ticker builds (``--rate`` a second, one serialization per
tick, a candle whose close carries the tick time plus a resume token the
size of the real one) to every open stream: the cheapest fan-out asyncio
and grpc.aio allow. Same server options as the real server.

Prints ``PORT <n>`` once listening; runs until stdin closes or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LOOPS, encode_price, run_on_loop, ticks

from candlewire.api.server import SERVICE_NAME, server_options
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb

_TOKEN = "A" * 44  # a live resume token is 44 characters


def _same(value: bytes) -> bytes:
    return value


class Ticker:
    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.latest = b""
        self._tick: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def next(self) -> bytes:
        await asyncio.shield(self._tick)
        return self.latest

    def _build(self, now: int) -> bytes:
        seconds = now // 1_000_000_000
        return pb.SubscribeCandlesResponse(
            candle=pb.Candle(
                symbol="BTCUSDT",
                interval=pb.INTERVAL_1M,
                open_time={"seconds": seconds - seconds % 60},
                close_time={"seconds": seconds - seconds % 60 + 60},
                open=float(encode_price(now)),
                high=float(encode_price(now)),
                low=float(encode_price(now)),
                close=float(encode_price(now)),
                volume=float(seconds % 600),
                quote_volume=float(encode_price(now)) * (seconds % 600),
                trade_count=seconds % 600,
                revision=seconds % 600,
                source=pb.SOURCE_LIVE,
            ),
            resume_token=_TOKEN,
        ).SerializeToString()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        async for _ in ticks(self.rate):
            self.latest = self._build(time.time_ns())
            tick, self._tick = self._tick, loop.create_future()
            tick.set_result(None)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--responses", type=Path)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio", help="event loop")
    args = parser.parse_args()

    ticker = Ticker(args.rate)
    snapshot_end = pb.SubscribeCandlesResponse(
        snapshot_end=pb.SnapshotEnd(), resume_token=_TOKEN
    ).SerializeToString()

    def unary(payload: bytes) -> Callable[[bytes, Any], Any]:
        async def handler(request: bytes, context: Any) -> bytes:
            return payload

        return handler

    async def subscribe(request: bytes, context: Any) -> AsyncIterator[bytes]:
        yield snapshot_end
        while True:
            yield await ticker.next()

    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "SubscribeCandles": grpc.unary_stream_rpc_method_handler(
            subscribe, request_deserializer=_same, response_serializer=_same
        )
    }
    if args.responses is not None:
        for path in args.responses.glob("*.bin"):
            handlers[path.stem] = grpc.unary_unary_rpc_method_handler(
                unary(path.read_bytes()), request_deserializer=_same, response_serializer=_same
            )
    server = grpc.aio.server(options=server_options())
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    ticking = asyncio.create_task(ticker.run())
    print(f"PORT {port}", flush=True)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def watch_stdin() -> None:
        sys.stdin.read()
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, daemon=True).start()
    await stop.wait()
    ticking.cancel()
    await server.stop(0.5)


if __name__ == "__main__":
    run_on_loop(main(), sys.argv)
