"""Fan-out client: N SubscribeCandles streams in one process, latency per message.

    python bench/fanout_client.py --port P --n 1000 --mode same --warmup 2
    python bench/fanout_client.py --port P --n 1 --slow      # one subscriber reading 1 msg/s
    python bench/fanout_client.py --port P --n 1000 --idle   # open, print READY, hold

Each stream asks for live updates only (history 0). Once every stream has its
snapshot_end, the client prints ``READY`` and waits ``--warmup`` seconds. Then
it measures in windows, one per ``MEASURE <seconds> <samples file>`` line on
stdin (until ``QUIT`` or the end of stdin): it prints ``MEASURING``, counts
every message for that long and, for each forming-candle update, the latency
from the injection time its close price carries (see
``_common.encode_price``) to its arrival here, on the machine's shared clock;
then prints one JSON line with the window's result and writes the raw samples
(injection time in microseconds as carried, latency in nanoseconds; two
int64 arrays) to the file, from which the harness also derives the latency
from hub entry. Streams are spread over connections of at most 250 streams
(the server allows 1000 per connection).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import LOOPS, SYMBOLS, decode_price, percentile, run_on_loop

from candlewire.api.server import SERVICE_NAME
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb

PER_CONNECTION = 250
PATH = f"/{SERVICE_NAME}/SubscribeCandles"


def series_for(i: int, mode: str, symbols: int) -> pb.Series:
    if mode == "same":
        return pb.Series(symbol=SYMBOLS[0], interval=pb.INTERVAL_1M)
    k = i % (symbols * 16)
    return pb.Series(symbol=SYMBOLS[k % symbols], interval=k // symbols + 1)  # type: ignore[arg-type]


class Stats:
    def __init__(self) -> None:
        self.ready = 0
        self.measuring = False
        self.messages = 0
        self.latencies: list[int] = []
        self.sent: list[int] = []
        self.errors: list[str] = []


async def stream(
    channel: grpc.aio.Channel, request: bytes, stats: Stats, all_ready: asyncio.Event, n: int
) -> None:
    rpc = channel.unary_stream(PATH, response_deserializer=pb.SubscribeCandlesResponse.FromString)
    call: Any = rpc(request)
    try:
        first = await call.read()
        if first is grpc.aio.EOF or first.WhichOneof("event") != "snapshot_end":
            stats.errors.append(f"first message {first!r}")
            return
        stats.ready += 1
        if stats.ready == n:
            all_ready.set()
        while True:
            message = await call.read()
            if message is grpc.aio.EOF:
                stats.errors.append("stream ended")
                return
            now = time.time_ns()
            if stats.measuring:
                stats.messages += 1
                if message.WhichOneof("event") == "candle" and not message.candle.closed:
                    sent_us, latency = decode_price(message.candle.close, now)
                    stats.sent.append(sent_us)
                    stats.latencies.append(latency)
    except grpc.aio.AioRpcError as error:
        if error.code() != grpc.StatusCode.CANCELLED:
            stats.errors.append(f"{error.code().name}: {error.details()}")
    finally:
        call.cancel()


async def slow(port: int, mode: str, delay: float) -> None:
    """One subscriber on a fixed 1 KiB window that reads one message per ``delay``.

    At 10 updates/s of about 150 bytes the window is full within a second, so
    the server holds this stream's data from then on: a stalled consumer.
    """
    options = [
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", 1024),
        ("grpc.use_local_subchannel_pool", 1),
    ]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
        request = pb.SubscribeCandlesRequest(series=[series_for(0, mode, 1)]).SerializeToString()
        call: Any = channel.unary_stream(PATH)(request)
        await call.read()
        print("READY", flush=True)
        loop = asyncio.get_running_loop()
        stop = loop.run_in_executor(None, sys.stdin.read)
        while not stop.done():
            await asyncio.sleep(delay)
            message = await call.read()
            if message is grpc.aio.EOF:
                break
        call.cancel()


def _write_samples(path: str, sent: list[int], latencies: list[int]) -> None:
    with open(path, "wb") as f:
        array("q", sent).tofile(f)
        array("q", latencies).tofile(f)


async def measure(stats: Stats, duration: float, samples: str) -> dict[str, Any]:
    """One measurement window of ``duration`` seconds; raw samples to ``samples``."""
    stats.messages = 0
    stats.sent, stats.latencies = [], []
    print("MEASURING", flush=True)
    stats.measuring = True
    began = time.monotonic()
    cpu = time.process_time()
    await asyncio.sleep(duration)
    stats.measuring = False
    seconds = time.monotonic() - began
    cpu = time.process_time() - cpu
    _write_samples(samples, stats.sent, stats.latencies)
    lat = sorted(stats.latencies)
    return {
        "messages": stats.messages,
        "seconds": seconds,
        "msgs_per_s": stats.messages / seconds,
        "client_cpu": cpu / seconds,
        "samples": len(lat),
        "p50_ms": percentile(lat, 0.50) / 1e6,
        "p99_ms": percentile(lat, 0.99) / 1e6,
        "max_ms": (lat[-1] / 1e6) if lat else float("nan"),
        "errors": stats.errors[:5],
        "error_count": len(stats.errors),
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--mode", choices=("same", "spread"), default="same")
    parser.add_argument("--symbols", type=int, default=20, help="symbols of spread series")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--slow", action="store_true")
    parser.add_argument("--idle", action="store_true")
    parser.add_argument("--loop", choices=LOOPS, default="asyncio", help="event loop")
    args = parser.parse_args()
    if args.slow:
        await slow(args.port, args.mode, 1.0)
        return

    stats = Stats()
    all_ready = asyncio.Event()
    channels = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{args.port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range((args.n + PER_CONNECTION - 1) // PER_CONNECTION)
    ]
    tasks = [
        asyncio.create_task(
            stream(
                channels[i // PER_CONNECTION],
                pb.SubscribeCandlesRequest(
                    series=[series_for(i, args.mode, args.symbols)]
                ).SerializeToString(),
                stats,
                all_ready,
                args.n,
            )
        )
        for i in range(args.n)
    ]
    started = time.monotonic()
    try:
        await asyncio.wait_for(all_ready.wait(), 60)
    except TimeoutError:
        print(json.dumps({"error": f"{stats.ready}/{args.n} ready", "errors": stats.errors[:5]}))
        return
    connect_seconds = time.monotonic() - started
    print("READY", flush=True)
    if args.idle:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    else:
        await asyncio.sleep(args.warmup)
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            command = line.split()
            if not command or command[0] != "MEASURE":
                break
            result = await measure(stats, float(command[1]), command[2])
            print(
                json.dumps({"n": args.n, "mode": args.mode, "connect_s": connect_seconds} | result),
                flush=True,
            )
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close()


if __name__ == "__main__":
    run_on_loop(main(), sys.argv)
