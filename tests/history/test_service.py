"""The service with a history tier: one API whatever the age of the data,
coverage fields, PostgreSQL away and back, and settings that stop the start."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from candlewire.app import App
from candlewire.codec import timestamp, timestamp_ns
from candlewire.obs import render
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc
from tests.binance.test_replay import DAY_2024, kline_rows, write
from tests.history.conftest import until_writable
from tests.history.pg import PASSWORD, PostgresServer, postgres
from tests.scripted import T0, ScriptedFeed, running, sec, stub_for

MIN = 60 * 10**9
MINUTES = 300
HOT = 100


async def _load(feed: ScriptedFeed, first: int, count: int) -> None:
    """One trade a minute (price 100 + minute), in batches of 50 minutes."""
    for lo in range(first, first + count, 50):
        await feed.trades(
            [
                ("BTCUSDT", sec(60 * m + 1), str(100 + m), "1")
                for m in range(lo, min(lo + 50, first + count))
            ]
        )


@pytest.fixture
async def service(
    pg_url: str,
) -> AsyncIterator[tuple[App, marketdata_pb2_grpc.MarketDataServiceStub]]:
    feed = ScriptedFeed()
    async with running(
        feed, postgres_url=pg_url, retention=HOT, intervals="1m,1h", heartbeat_interval=0.2
    ) as app:
        await _load(feed, 0, MINUTES)
        assert app.history is not None and app.history.queue is not None
        await app.history.queue.drained()
        async with stub_for(app) as stub:
            yield app, stub


def _request(start: int | None, size: int, **fields: object) -> pb.GetCandlesRequest:
    request = pb.GetCandlesRequest(
        symbol="BTCUSDT", interval=pb.INTERVAL_1M, page_size=size, **fields
    )
    if start is not None:
        request.start_time.CopyFrom(timestamp(start))
    return request


async def test_one_api_over_both_tiers(
    service: tuple[App, marketdata_pb2_grpc.MarketDataServiceStub],
) -> None:
    app, stub = service
    assert app.history is not None
    assert await app.history.store.count() == MINUTES - 1 + 4  # closed 1m and 1h candles
    got: list[pb.Candle] = []
    request = _request(T0, 70)
    while True:
        response = await stub.GetCandles(request)
        got += response.candles
        if not response.next_page_token:
            break
        request.page_token = response.next_page_token
    assert [timestamp_ns(c.open_time) for c in got] == [T0 + m * MIN for m in range(MINUTES)]
    assert [c.close for c in got] == [100 + m for m in range(MINUTES)]
    assert [c.closed for c in got] == [True] * (MINUTES - 1) + [False]
    latest = await stub.GetCandles(_request(None, 250))
    assert list(latest.candles) == got[-250:]
    history = []
    subscribe = pb.SubscribeCandlesRequest(
        series=[pb.Series(symbol="BTCUSDT", interval=pb.INTERVAL_1M)], history=280
    )
    async for message in stub.SubscribeCandles(subscribe):
        if message.HasField("snapshot_end"):
            break
        history.append(message.candle)
    assert history == got[-280:]


async def test_coverage_fields(
    service: tuple[App, marketdata_pb2_grpc.MarketDataServiceStub],
) -> None:
    _, stub = service
    symbols = {s.symbol: s for s in (await stub.ListSymbols(pb.ListSymbolsRequest())).symbols}
    coverage = {c.interval: timestamp_ns(c.earliest_open_time) for c in symbols["BTCUSDT"].coverage}
    assert coverage == {pb.INTERVAL_1M: T0, pb.INTERVAL_1H: T0}
    assert list(symbols["ETHUSDT"].coverage) == []  # nothing held: nothing claimed
    window = _request(T0 - 10 * MIN, 1000, include_missing=True)
    window.end_time.CopyFrom(timestamp(T0 + 2 * MINUTES * MIN))
    response = await stub.GetCandles(window)
    assert len(response.candles) == MINUTES
    assert [
        (timestamp_ns(r.start_time), timestamp_ns(r.end_time)) for r in response.missing_ranges
    ] == [
        (T0 - 10 * MIN, T0)  # before the data; not after the newest candle
    ]
    page = await stub.GetCandles(_request(T0 + 5 * MIN, 10, include_missing=True))
    assert len(page.candles) == 10 and list(page.missing_ranges) == []
    plain = await stub.GetCandles(_request(T0 - 10 * MIN, 10))
    assert list(plain.missing_ranges) == []  # only when asked


async def test_postgres_away_fails_only_what_needs_it(caplog: pytest.LogCaptureFixture) -> None:
    feed = ScriptedFeed()
    with postgres() as own:
        async with (
            running(
                feed, postgres_url=own.url, retention=HOT, intervals="1m", heartbeat_interval=0.2
            ) as app,
            stub_for(app) as stub,
        ):
            await _load(feed, 0, MINUTES)
            assert app.history is not None and app.history.queue is not None
            await app.history.queue.drained()
            own.stop()
            recent = await stub.GetCandles(_request(None, 50))
            assert len(recent.candles) == 50
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await stub.GetCandles(_request(T0, 100))
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            async with asyncio.timeout(20):
                while "PostgreSQL" not in app.readiness.reason:
                    app.readiness.recheck()
                    await asyncio.sleep(0.05)  # polling the verdict, with a deadline
            assert app.ready  # degraded, still serving what the hot store holds
            assert await _health(app, "candlewire.history") == NOT_SERVING
            assert await _health(app, "marketdata.v1.MarketDataService") == SERVING
            assert await _health(app, "candlewire.store") == SERVING
            assert (
                'candlewire_dependency_up{dependency="history"} 0.0' in render(app.metrics).decode()
            )
            await _load(feed, MINUTES, 60)  # written while PostgreSQL is away: queued
            own.start()
            await until_writable(app.history.store)
            await app.history.queue.drained()
            response = await stub.GetCandles(_request(T0, 1000))
            assert [timestamp_ns(c.open_time) for c in response.candles] == [
                T0 + m * MIN for m in range(MINUTES + 60)
            ]
            assert app.history.queue.dropped == 0
            async with asyncio.timeout(20):
                while "PostgreSQL" in app.readiness.reason:
                    app.readiness.recheck()
                    await asyncio.sleep(0.05)
            assert await _health(app, "candlewire.history") == SERVING
            assert (
                'candlewire_dependency_up{dependency="history"} 1.0' in render(app.metrics).decode()
            )


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _health(app: App, service: str) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service)
        )
        return int(reply.status)


def _candlewire(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "candlewire", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


def test_bad_url_or_password_stops_the_start(pg_server: PostgresServer) -> None:
    wrong = pg_server.url.replace(PASSWORD, "hunter2-wrong")
    for url, reason in (
        (wrong, "password authentication failed"),
        (pg_server.url_for("nope"), 'database "nope" does not exist'),
        ("mysql://u:hunter2-wrong@localhost/db", "must start with postgresql://"),
    ):
        done = _candlewire(
            "serve", "--postgres-url", url, "--grpc-listen", "127.0.0.1:0", "--http-listen", ""
        )
        assert done.returncode == 2, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert "CANDLEWIRE_POSTGRES_URL" in last and reason in last
        assert "hunter2-wrong" not in done.stderr + done.stdout


def test_commands(tmp_path: Path, pg_server: PostgresServer) -> None:
    url = pg_server.create_database("commands")
    done = _candlewire("db", "upgrade", "--postgres-url", url)
    assert done.returncode == 0 and "version 2 (applied 1, 2)" in done.stdout
    done = _candlewire("db", "upgrade", "--postgres-url", url)
    assert done.returncode == 0 and "up to date" in done.stdout
    write(tmp_path / "BTCUSDT-1m-2024-01-01.zip", kline_rows(DAY_2024, 1440, 1))
    done = _candlewire("import", str(tmp_path), "--plain", "--postgres-url", url)
    assert done.returncode == 0, done.stderr
    assert "imported 1,440 candles from 1 files" in done.stdout
    bad = kline_rows(DAY_2024, 10, 1)
    bad[3][1] = "x"
    write(tmp_path / "BTCUSDT-1m-2024-01-02.csv", bad)
    done = _candlewire("import", str(tmp_path / "BTCUSDT-1m-2024-01-02.csv"), "--postgres-url", url)
    assert done.returncode == 1
    assert "BTCUSDT-1m-2024-01-02.csv line 4" in done.stderr
    done = _candlewire("import", str(tmp_path))
    assert done.returncode == 2 and "CANDLEWIRE_POSTGRES_URL" in done.stderr
