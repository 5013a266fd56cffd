"""Scale-out with separate processes on one redis-server: two API replicas
(``candlewire serve --role api``) and leased ingestors (``candlewire ingest``)."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis

from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc
from tests.store.conftest import RedisServer, free_port
from tests.streams import read, series

WAIT = 20.0
BTC_1S = series("BTCUSDT", pb.INTERVAL_1S)
LEASE = "cw:lease:{default}"


class Proc:
    def __init__(self, role: str, url: str, log: Path) -> None:
        self.port = free_port()
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLEWIRE_")}
        env.update(
            CANDLEWIRE_REDIS_URL=url,
            CANDLEWIRE_GRPC_LISTEN=f"127.0.0.1:{self.port}",
            CANDLEWIRE_HTTP_LISTEN="",
            CANDLEWIRE_SYMBOLS="BTCUSDT",
            CANDLEWIRE_INTERVALS="1s,1m",
            CANDLEWIRE_SIM_RATE="20",
            CANDLEWIRE_SIM_HISTORY="2",
            CANDLEWIRE_LEASE_TTL="1.5",
            CANDLEWIRE_HEARTBEAT_INTERVAL="0.5",
            CANDLEWIRE_LOG_LEVEL="INFO",
        )
        command = "ingest" if role == "ingest" else "serve"
        args = [sys.executable, "-m", "candlewire", command]
        if role == "api":
            args += ["--role", "api"]
        self.out = log.open("wb")
        self.process = subprocess.Popen(args, env=env, stdout=self.out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
        self.process.wait(10)
        self.out.close()


@pytest.fixture
def procs(redis_server: RedisServer, tmp_path: Path) -> Iterator[list[Proc]]:
    started: list[Proc] = []

    def start(role: str) -> Proc:
        proc = Proc(role, redis_server.url, tmp_path / f"{role}-{len(started)}.log")
        started.append(proc)
        return proc

    started.append(start)  # type: ignore[arg-type]
    yield started
    for proc in started[1:]:
        proc.stop()


async def ready(port: int) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        async with asyncio.timeout(WAIT):
            while True:
                try:
                    got = await stub.Check(
                        health_pb2.HealthCheckRequest(service="marketdata.v1.MarketDataService"),
                        timeout=1,
                    )
                    if got.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                await asyncio.sleep(0.1)


def holder(client: redis.Redis) -> str | None:
    raw = client.get(LEASE)
    return None if raw is None else raw.decode()


async def wait_holder(client: redis.Redis, other_than: str | None) -> str:
    async with asyncio.timeout(WAIT):
        while True:
            value = holder(client)
            if value is not None and value != other_than:
                return value
            await asyncio.sleep(0.05)


def live(responses: list[pb.SubscribeCandlesResponse]) -> list[tuple[int, int, bool, float]]:
    return [
        (r.candle.open_time.ToNanoseconds(), r.candle.revision, r.candle.closed, r.candle.volume)
        for r in responses
        if r.WhichOneof("event") == "candle"
    ]


def settled(responses: list[pb.SubscribeCandlesResponse]) -> list[tuple[int, int, bool, float]]:
    """The closed candles among ``responses`` (never conflated)."""
    return [key for key in live(responses) if key[2]]


def is_subsequence(part: list[tuple[int, int, bool, float]], whole: list[Any]) -> bool:
    rest = iter(whole)
    return all(item in rest for item in part)


async def test_replicas_share_one_sequence_and_ingestion_fails_over(
    procs: list[Proc], redis_server: RedisServer
) -> None:
    start = procs[0]
    a, b = start("api"), start("api")  # type: ignore[operator]
    first = start("ingest")  # type: ignore[operator]
    await asyncio.gather(ready(a.port), ready(b.port))
    client = redis_server.client()
    taken = await wait_holder(client, None)
    assert taken.endswith(f"/{first.process.pid}")
    second = start("ingest")  # type: ignore[operator]

    request = pb.SubscribeCandlesRequest(series=[BTC_1S])
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{a.port}") as ca,
        grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as cb,
    ):
        sa = marketdata_pb2_grpc.MarketDataServiceStub(ca)
        sb = marketdata_pb2_grpc.MarketDataServiceStub(cb)
        call_a, call_b = sa.SubscribeCandles(request), sb.SubscribeCandles(request)
        await read(call_a, 1)
        await read(call_b, 1)  # snapshot_end on both
        got_a = await read(call_a, 60)
        # B may have started at another position: compare from A's first
        # closed candle. Closed candles are never conflated, forming versions
        # may be (a replica whose reader took two versions of a candle in one
        # read offers only the newer to a stream that has not taken the older).
        got_b = await read(call_b, 120)
        closed_a, closed_b = settled(got_a), settled(got_b)
        assert len(closed_a) >= 2
        start_at = closed_b.index(closed_a[0])
        assert closed_b[start_at : start_at + len(closed_a)] == closed_a

        # Resume on B with a token from A: what followed on A, every version
        # from the store's log (so A's, conflated or not, are among them).
        resumed = sb.SubscribeCandles(
            pb.SubscribeCandlesRequest(series=[BTC_1S], resume_token=got_a[9].resume_token)
        )
        followed = live(got_a[10:30])
        replayed = live(await read(resumed, 80))
        assert replayed[0] == followed[0]
        assert is_subsequence(followed, replayed)
        assert settled(got_a[10:30]) == [
            k for k in replayed[: replayed.index(followed[-1]) + 1] if k[2]
        ]
        resumed.cancel()

        # Kill the active ingestor: the standby takes over within the lease time.
        first.process.kill()
        loop = asyncio.get_running_loop()
        killed_at = loop.time()
        taken = await wait_holder(client, taken)
        assert taken.endswith(f"/{second.process.pid}")
        assert loop.time() - killed_at < 1.5 * 1.5 + 1.0
        # The stream goes on across the hand-over: every 1s candle closes once,
        # none is missing.
        after = live(await read(call_a, 120))
        closed = [t for t, _, is_closed, _ in after if is_closed]
        assert closed == sorted(set(closed))
        steps = {later - earlier for earlier, later in itertools.pairwise(closed)}
        assert steps == {1_000_000_000}, steps
        call_a.cancel()
        call_b.cancel()

    # A paused holder whose lease was taken stops when it wakes up: its first
    # write is refused by the script's fencing check, or its renewal fails
    # (whichever comes first; test_redis.py pins the write refusal itself).
    second.process.send_signal(signal.SIGSTOP)
    third = start("ingest")  # type: ignore[operator]
    taken_third = await wait_holder(client, taken)
    assert taken_third.endswith(f"/{third.process.pid}")
    second.process.send_signal(signal.SIGCONT)
    async with asyncio.timeout(WAIT):
        while "lease default lost" not in second.text():  # noqa: ASYNC110 - a log file
            await asyncio.sleep(0.1)
    assert holder(client) == taken_third
    client.close()
