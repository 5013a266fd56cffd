"""End-to-end latency of the Saxo feed: a frame on the fake Saxo's socket to the API.

Used by ``bench/saxo.py latency``. The fake Saxo (``tests/saxo/fake.py``) runs
in this process; ``candlewire serve`` (Saxo feed, memory store) in a child
process, logged in through the fake's token endpoint beforehand. For each
quote: the time from just before the fake writes the frame to

* ``GetPrice`` first returning it (polled back to back by a client here), and
* a ``SubscribeCandles`` stream (EURUSD 1s) delivering the candle it changed.

Baseline, same run: a bare ``websockets`` server and client in this process,
the time from ``send`` of a message of the same size to ``recv`` returning it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from _common import PYTHON, free_port, percentile, spawn  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from candlewire.feeds.saxo import FileTokenStore, LoginFlow, OAuthClient  # noqa: E402
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb  # noqa: E402
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc  # noqa: E402
from tests.saxo.fake import FakeSaxo  # noqa: E402

T0 = 1_767_600_000 * 1_000_000_000
REDIRECT = "http://localhost:8080/auth/saxo/callback"


def _summary(samples: list[int]) -> dict[str, float]:
    values = sorted(s / 1e6 for s in samples)
    return {
        "p50_ms": percentile(values, 0.5),
        "p99_ms": percentile(values, 0.99),
        "max_ms": values[-1] if values else float("nan"),
        "n": float(len(values)),
    }


async def _baseline(size: int, count: int) -> list[int]:
    payload = b"x" * size
    sent: list[int] = []

    async def handler(conn: ServerConnection) -> None:
        for _ in range(count):
            await asyncio.sleep(0.002)
            sent.append(time.perf_counter_ns())
            await conn.send(payload)
        await conn.wait_closed()

    samples = []
    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
            for n in range(count):
                await ws.recv()
                samples.append(time.perf_counter_ns() - sent[n])
    return samples


async def _login(fake: FakeSaxo, token_file: Path) -> None:
    store = FileTokenStore(token_file)
    flow = LoginFlow(OAuthClient(fake.auth_url, fake.app_key), store, REDIRECT)
    redirect = fake.sign_in(await flow.start())
    query = dict(part.split("=", 1) for part in redirect.split("?", 1)[1].split("&"))
    await flow.complete(query["state"], query["code"])


async def _ready(port: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="marketdata.v1.MarketDataService")
        async with asyncio.timeout(60):
            while True:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    answer = await health.Check(request, timeout=1)
                    if answer.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                await asyncio.sleep(0.05)


async def _run(count: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        token_file = Path(tmp) / "tokens.json"
        async with FakeSaxo() as fake:
            await fake.quote("EURUSD", "1.10000", "1.10020", T0)
            await _login(fake, token_file)
            port = free_port()
            env = {
                "PYTHONPATH": f"{ROOT / 'server'}:{ROOT / 'clients' / 'python'}",
                "CANDLEWIRE_FEED": "saxo",
                "CANDLEWIRE_SYMBOLS": "EURUSD",
                "CANDLEWIRE_INTERVALS": "1s,1m",
                "CANDLEWIRE_GRPC_LISTEN": f"127.0.0.1:{port}",
                "CANDLEWIRE_HTTP_LISTEN": "",
                "CANDLEWIRE_LOG_LEVEL": "WARNING",
                "CANDLEWIRE_FEED_STALE_AFTER": "3600",
                "CANDLEWIRE_SAXO_APP_KEY": fake.app_key,
                "CANDLEWIRE_SAXO_AUTH_URL": fake.auth_url,
                "CANDLEWIRE_SAXO_REST_URL": fake.rest_url,
                "CANDLEWIRE_SAXO_STREAMING_URL": fake.streaming_url,
                "CANDLEWIRE_SAXO_REDIRECT_URL": REDIRECT,
                "CANDLEWIRE_SAXO_TOKEN_FILE": str(token_file),
            }
            with spawn([PYTHON, "-m", "candlewire", "serve"], env=env):
                await _ready(port)
                return await _measure(fake, port, count)


async def _measure(fake: FakeSaxo, port: int, count: int) -> dict[str, Any]:
    price_samples: list[int] = []
    stream_samples: list[int] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
        call = stub.SubscribeCandles(
            pb.SubscribeCandlesRequest(
                series=[pb.Series(symbol="EURUSD", interval=pb.INTERVAL_1S)], history=0
            )
        )
        arrivals: dict[float, int] = {}
        arrived = asyncio.Event()
        live = asyncio.Event()

        async def read() -> None:
            async for response in call:
                if response.WhichOneof("event") == "snapshot_end":
                    live.set()
                elif response.WhichOneof("event") == "candle":
                    arrivals.setdefault(response.candle.close, time.perf_counter_ns())
                    arrived.set()

        reader = asyncio.create_task(read())
        try:
            async with asyncio.timeout(10):
                await live.wait()  # live from here: every update is sent
            for n in range(count):
                bid = Decimal("1.10000") + Decimal(n + 1).scaleb(-5)
                ask = bid + Decimal("0.00020")
                mid = float((bid + ask) / 2)
                sent = time.perf_counter_ns()
                await fake.quote("EURUSD", str(bid), str(ask), T0 + (n + 1) * 20_000_000)
                async with asyncio.timeout(10):
                    while True:
                        answer = await stub.GetPrice(pb.GetPriceRequest(symbol="EURUSD"))
                        if answer.price.bid == float(bid):
                            price_samples.append(time.perf_counter_ns() - sent)
                            break
                    while mid not in arrivals:
                        arrived.clear()
                        await arrived.wait()
                stream_samples.append(arrivals[mid] - sent)
                await asyncio.sleep(0.005)
        finally:
            call.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await reader
    frame_size = 120
    baseline = await _baseline(frame_size, count)
    result = {
        "quotes": count,
        "get_price": _summary(price_samples),
        "subscriber": _summary(stream_samples),
        "baseline_ws": _summary(baseline),
    }
    for name in ("get_price", "subscriber"):
        result[f"{name}_p50_ratio"] = result[name]["p50_ms"] / result["baseline_ws"]["p50_ms"]
    return result


def latency(count: int) -> dict[str, Any]:
    result = asyncio.run(_run(count))
    for name in ("get_price", "subscriber", "baseline_ws"):
        row = result[name]
        print(
            f"{name:12s} p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms  "
            f"max {row['max_ms']:.3f} ms  ({int(row['n'])} quotes)"
        )
    print(
        f"p50 ratios to the bare websocket: GetPrice {result['get_price_p50_ratio']:.1f}x, "
        f"subscriber {result['subscriber_p50_ratio']:.1f}x"
    )
    return result


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(ROOT / "server"))
    latency(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
