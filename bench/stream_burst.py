"""Many SubscribeCandles streams opened at once over a few HTTP/2 connections.

    python bench/stream_burst.py --connections 4 --streams 500 --rounds 5

Starts ``candlewire serve`` (simulated feed, memory store) as a child
process, then, per round, opens ``--connections`` raw HTTP/2 connections
(the ``h2`` library: every HEADERS and request of a connection written at
once, before anything is read) with ``--streams`` streams each, all asking
for three 1m series with ``closed_only``. It waits until every stream was
served (``snapshot_end``) or refused (a status), at most ``--wait`` seconds,
and prints per round how many were served, refused (by code) and neither:
streams that got response headers and nothing else, or nothing at all.
``--window`` and ``--max-concurrent`` set the client's SETTINGS.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb  # noqa: E402
from tests.rawh2 import RawGrpc, RawStream  # noqa: E402

PATH = "/marketdata.v1.MarketDataService/SubscribeCandles"
LISTENING = re.compile(r"gRPC listening on \S+ \(port (\d+)\)")
READY = re.compile(r"readiness SERVING")


def request() -> bytes:
    return pb.SubscribeCandlesRequest(
        series=[
            pb.Series(symbol=s, interval=pb.INTERVAL_1M) for s in ("BTCUSDT", "ETHUSDT", "EURUSD")
        ],
        history=10,
        closed_only=True,
    ).SerializeToString()


def snapshot_ended(stream: RawStream) -> bool:
    for message in stream.messages:
        response = pb.SubscribeCandlesResponse.FromString(message)
        if response.HasField("snapshot_end"):
            return True
    return False


async def start_server(extra: list[str]) -> tuple[asyncio.subprocess.Process, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLEWIRE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONPATH", str(ROOT / "server"))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "candlewire", "serve", "--grpc-listen", "127.0.0.1:0",
        "--http-listen", "", "--sim-history", "60", *extra,
        env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    port = 0
    async with asyncio.timeout(60):
        while True:
            line = (await process.stderr.readline()).decode()
            if not line:
                raise RuntimeError("the server exited while starting")
            if match := LISTENING.search(line):
                port = int(match.group(1))
            if READY.search(line) and port:
                break

    async def drain() -> None:
        assert process.stderr is not None
        while await process.stderr.readline():
            pass

    asyncio.get_running_loop().create_task(drain())
    return process, port


async def one_round(port: int, args: argparse.Namespace) -> collections.Counter[str]:
    clients = [
        RawGrpc(
            "127.0.0.1",
            port,
            initial_window=args.window,
            max_concurrent_streams=args.max_concurrent,
        )
        for _ in range(args.connections)
    ]
    outcome: collections.Counter[str] = collections.Counter()
    message = request()
    async with contextlib_all(clients):
        streams: list[RawStream] = []
        for client in clients:
            streams += [client.open(PATH, message) for _ in range(args.streams)]
        await asyncio.gather(*(client.flush() for client in clients))
        started = time.monotonic()

        def settled(stream: RawStream) -> bool:
            return stream.ended or snapshot_ended(stream)

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.wait):
                for client in clients:
                    mine = list(client.streams.values())
                    await client.until(lambda mine=mine: all(settled(s) for s in mine), args.wait)
        for stream in streams:
            if snapshot_ended(stream):
                outcome["served"] += 1
            elif stream.status is not None:
                block = stream.trailers or stream.headers or {}
                outcome[f"refused grpc-status {stream.status} {block.get('grpc-message', '')}"] += 1
            elif stream.reset is not None:
                outcome[f"reset {stream.reset}"] += 1
            elif stream.headers is not None:
                outcome["headers, then nothing"] += 1
            else:
                outcome["nothing"] += 1
        outcome["seconds"] = round(time.monotonic() - started)
    return outcome


class contextlib_all:  # noqa: N801 - reads as a context manager
    def __init__(self, clients: list[RawGrpc]) -> None:
        self._clients = clients

    async def __aenter__(self) -> None:
        for client in self._clients:
            await client.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        for client in self._clients:
            await client.__aexit__(*exc)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--wait", type=float, default=30.0)
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--max-concurrent", type=int, default=None)
    parser.add_argument("server_args", nargs="*", help="more `candlewire serve` flags")
    args = parser.parse_args()
    process, port = await start_server(args.server_args)
    try:
        for n in range(args.rounds):
            outcome = await one_round(port, args)
            print(f"round {n + 1}: {dict(outcome)}", flush=True)
    finally:
        process.terminate()
        await process.wait()


if __name__ == "__main__":
    asyncio.run(main())
