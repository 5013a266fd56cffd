"""Subscriptions that survive server restarts and falling behind, and fail fast otherwise."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from candlewire.app import App
from candlewire_client import (
    CandleEvent,
    CandlewireClient,
    CandlewireError,
    NotFoundError,
    OutOfRangeError,
    ResourceExhaustedError,
    RetryPolicy,
    Series,
    SnapshotEnd,
    UnavailableError,
)
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.client.conftest import (
    FAST,
    WAIT,
    Collector,
    FakeService,
    SideServer,
    events_without_heartbeats,
    has_candle,
    has_snapshot_end,
    logged_candles,
    target_of,
)
from tests.scripted import ScriptedFeed, running, sec

SERIES = [Series.of("BTCUSDT@1s"), Series.of("BTCUSDT@1m"), Series.of("ETHUSDT@1m")]

Reconnects = list[tuple[int, float, CandlewireError]]


def _recorder(into: Reconnects, reported: asyncio.Event | None = None) -> Any:
    def on_reconnect(attempt: int, delay: float, error: CandlewireError) -> None:
        into.append((attempt, delay, error))
        if reported is not None:
            reported.set()

    return on_reconnect


async def test_subscription_survives_a_server_restart(app: App, feed: ScriptedFeed) -> None:
    """A subscriber whose server goes down and comes back on the same port (same store
    and hub) yields exactly what a subscriber on a server that stayed up yields."""
    side = SideServer(app, feed)
    await side.start()
    clock = iter(range(10, 1000))
    for i in range(6):
        await feed.trade("BTCUSDT", sec(i), f"{64000 + i}.25", "0.5")
    await feed.trade("ETHUSDT", sec(5), "3478.29", "2")

    reconnects: Reconnects = []
    reported = asyncio.Event()
    async with (
        CandlewireClient(side.target, decimals=True, retry=FAST) as resilient_client,
        CandlewireClient(target_of(app), decimals=True) as steady_client,
    ):
        resilient = Collector(
            resilient_client.subscribe_candles(
                SERIES, history=3, on_reconnect=_recorder(reconnects, reported)
            )
        )
        steady = Collector(steady_client.subscribe_candles(SERIES, history=3))
        await resilient.wait_until(has_snapshot_end)
        await steady.wait_until(has_snapshot_end)

        async def trade(symbol: str, price: str, *, resilient_up: bool) -> None:
            """Trade, then wait until subscribers saw its last update (so that the hub
            never conflates versions for either of them)."""
            head = await app.store.head(("BTCUSDT", "ETHUSDT"))
            await feed.trade(symbol, sec(next(clock) + 0.5), price, "0.1")
            last = (await logged_candles(app, SERIES, head))[-1]
            await steady.wait_until(lambda items: has_candle(items, last))
            if resilient_up:
                await resilient.wait_until(lambda items: has_candle(items, last))

        await trade("BTCUSDT", "64010.5", resilient_up=True)
        await trade("ETHUSDT", "3479.01", resilient_up=True)

        await side.stop()
        await asyncio.wait_for(reported.wait(), WAIT)
        for price in ("64020.75", "64019.5", "64030.125"):  # missed while down
            await trade("BTCUSDT", price, resilient_up=False)
        for _ in range(50):  # cross into the next minute: closes 1m candles
            next(clock)
        await trade("ETHUSDT", "3480.5", resilient_up=False)
        await side.start()

        await trade("BTCUSDT", "64040", resilient_up=True)
        await trade("ETHUSDT", "3481.25", resilient_up=True)
        await resilient.stop()
        await steady.stop()

    expected = events_without_heartbeats(steady.items)
    assert len(expected) > 20
    assert events_without_heartbeats(resilient.items) == expected
    assert reconnects, "the reconnect was reported"
    attempt, delay, error = reconnects[0]
    assert attempt == 1
    assert 0 < delay <= FAST.maximum
    assert isinstance(error, UnavailableError)
    assert [a for a, _, _ in reconnects] == list(range(1, len(reconnects) + 1))
    assert sum(isinstance(e, SnapshotEnd) for e in resilient.items) == 1


async def test_a_stream_that_falls_behind_resumes_without_gaps() -> None:
    feed = ScriptedFeed()
    async with running(feed, subscriber_queue_size=8, heartbeat_interval=0.2) as app:
        await feed.attached()
        reconnects: Reconnects = []
        reported = asyncio.Event()
        async with CandlewireClient(target_of(app), decimals=True, retry=FAST) as client:
            events = Collector(
                client.subscribe_candles(SERIES[0], on_reconnect=_recorder(reconnects, reported))
            )
            await events.wait_until(has_snapshot_end)
            head = await app.store.head(("BTCUSDT", "ETHUSDT"))
            # One batch: every update is offered to the queue at once, which overflows.
            await feed.trades([("BTCUSDT", sec(i), f"{100 + i}.5", "1") for i in range(40)])
            expected = await logged_candles(app, SERIES[:1], head)
            assert len(expected) >= 40
            await events.wait_until(lambda items: has_candle(items, expected[-1]))
            # A stream still reading the store's log when the queue overflowed
            # sends every update from there, then ends: the reconnect may come
            # after the last candle.
            async with asyncio.timeout(WAIT):
                await reported.wait()
            await events.stop()
    got = [e.candle for e in events.items if isinstance(e, CandleEvent)]
    assert got == expected
    assert [(a, type(e)) for a, _, e in reconnects] == [(1, ResourceExhaustedError)]
    assert "fell more than 8 updates behind" in reconnects[0][2].details


async def test_unknown_symbol_fails_at_once(client: CandlewireClient[Decimal]) -> None:
    reconnects: Reconnects = []
    stream = client.subscribe_candles(
        ["BTCUSDT@1m", "DOGEUSDT@1m"], on_reconnect=_recorder(reconnects)
    )
    with pytest.raises(NotFoundError) as caught:
        await anext(stream)
    assert caught.value.field_violations[0].field == "series[1].symbol"
    assert reconnects == []
    assert stream.state == "failed"


async def test_expired_resume_token_fails_at_once(
    feed: ScriptedFeed, client: CandlewireClient[Decimal]
) -> None:
    await feed.trade("BTCUSDT", sec(0), "100")
    stream = client.subscribe_candles("BTCUSDT@1m", history=5)
    async for event in stream:
        if isinstance(event, SnapshotEnd):
            break
    token = stream.resume_token
    await stream.aclose()
    assert token

    other = ScriptedFeed()
    async with running(other) as fresh_app:  # a new store: the token's data is gone
        reconnects: Reconnects = []
        async with CandlewireClient(target_of(fresh_app), retry=FAST) as fresh:
            resumed = fresh.subscribe_candles(
                "BTCUSDT@1m", history=5, resume_token=token, on_reconnect=_recorder(reconnects)
            )
            with pytest.raises(OutOfRangeError, match="no longer retained"):
                await anext(resumed)
            assert reconnects == []
            changed = fresh.subscribe_candles("BTCUSDT@1m", history=6, resume_token=token)
            with pytest.raises(CandlewireError) as caught:
                await anext(changed)
            assert caught.value.field_violations[0].field == "resume_token"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_max_attempts_bounds_reconnects() -> None:
    reconnects: Reconnects = []
    policy = RetryPolicy(initial=0.01, maximum=0.05, max_attempts=3)
    async with CandlewireClient(f"127.0.0.1:{_closed_port()}", retry=policy) as client:
        stream = client.subscribe_candles("BTCUSDT@1m", on_reconnect=_recorder(reconnects))
        with pytest.raises(UnavailableError):
            await anext(stream)
    assert [a for a, _, _ in reconnects] == [1, 2, 3]
    assert all(0 < d <= 0.05 for _, d, _ in reconnects)
    assert stream.reconnects == 3


async def _flaky_stream(
    request: pb.SubscribeCandlesRequest, context: grpc.aio.ServicerContext[Any, Any]
) -> AsyncIterator[pb.SubscribeCandlesResponse]:
    """Sends one event continuing after the client's token, then drops the stream."""
    number = int(request.resume_token or "0") + 1
    yield pb.SubscribeCandlesResponse(
        candle=pb.Candle(symbol="BTCUSDT", interval=pb.INTERVAL_1M, revision=number),
        resume_token=str(number),
    )
    await context.abort(grpc.StatusCode.UNAVAILABLE, "going away")


@pytest.mark.parametrize(("reset_after", "attempts"), [(0.0, [1, 1, 1, 1]), (60.0, [1, 2, 3, 4])])
async def test_backoff_resets_after_a_healthy_stream(
    fake: FakeService, reset_after: float, attempts: list[int]
) -> None:
    fake.handlers["SubscribeCandles"] = _flaky_stream
    await fake.start()
    reconnects: Reconnects = []
    policy = RetryPolicy(initial=0.01, maximum=0.02, reset_after=reset_after)
    async with CandlewireClient(fake.target, retry=policy, api_key="k") as client:
        stream = client.subscribe_candles("BTCUSDT@1m", on_reconnect=_recorder(reconnects))
        revisions = []
        async for event in stream:
            assert isinstance(event, CandleEvent)
            revisions.append(event.candle.revision)
            if len(revisions) == 5:
                break
        await stream.aclose()
    assert revisions == [1, 2, 3, 4, 5]  # each reconnect resumed from the last token
    assert [r.resume_token for r in fake.requests] == ["", "1", "2", "3", "4"]
    assert all(m["x-api-key"] == "k" for m in fake.metadata)
    assert [a for a, _, _ in reconnects] == attempts


async def test_retry_info_sets_the_least_delay(fake: FakeService) -> None:
    calls = 0

    async def limited(request: Any, context: Any) -> AsyncIterator[pb.SubscribeCandlesResponse]:
        nonlocal calls
        calls += 1
        if calls == 1:
            info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=300_000_000))
            packed = any_pb2.Any()
            packed.Pack(info)
            status = status_pb2.Status(
                code=code_pb2.RESOURCE_EXHAUSTED, message="too many streams", details=[packed]
            )
            await context.abort_with_status(rpc_status.to_status(status))
        yield pb.SubscribeCandlesResponse(snapshot_end=pb.SnapshotEnd(), resume_token="t")

    fake.handlers["SubscribeCandles"] = limited
    await fake.start()
    reconnects: Reconnects = []
    async with CandlewireClient(fake.target, retry=FAST) as client:
        stream = client.subscribe_candles("BTCUSDT@1m", on_reconnect=_recorder(reconnects))
        started = time.monotonic()
        event = await asyncio.wait_for(anext(stream), WAIT)
        waited = time.monotonic() - started
        await stream.aclose()
    assert isinstance(event, SnapshotEnd)
    [(attempt, delay, error)] = reconnects
    assert (attempt, delay) == (1, 0.3)
    assert isinstance(error, ResourceExhaustedError)
    assert error.retry_delay == 0.3
    assert waited >= 0.3


async def test_async_reconnect_callbacks_are_awaited(fake: FakeService) -> None:
    fake.handlers["SubscribeCandles"] = _flaky_stream
    await fake.start()
    seen: list[int] = []

    async def on_reconnect(attempt: int, delay: float, error: CandlewireError) -> None:
        await asyncio.sleep(0)
        seen.append(attempt)

    async with CandlewireClient(fake.target, retry=FAST) as client:
        stream = client.subscribe_candles("BTCUSDT@1m", on_reconnect=on_reconnect)
        await anext(stream)
        await anext(stream)
        await stream.aclose()
    assert seen == [1]


async def test_idle_timeout_counts_as_a_lost_connection(fake: FakeService) -> None:
    silent = asyncio.Event()

    async def quiet(request: Any, context: Any) -> AsyncIterator[pb.SubscribeCandlesResponse]:
        if request.resume_token:
            yield pb.SubscribeCandlesResponse(snapshot_end=pb.SnapshotEnd(), resume_token="2")
            return
        yield pb.SubscribeCandlesResponse(heartbeat=pb.Heartbeat(), resume_token="1")
        await silent.wait()  # never set: a hung server

    fake.handlers["SubscribeCandles"] = quiet
    await fake.start()
    reconnects: Reconnects = []
    async with CandlewireClient(fake.target, retry=FAST) as client:
        stream = client.subscribe_candles(
            "BTCUSDT@1m", idle_timeout=0.2, on_reconnect=_recorder(reconnects)
        )
        await anext(stream)
        assert isinstance(await asyncio.wait_for(anext(stream), WAIT), SnapshotEnd)
        await stream.aclose()
    [(_, _, error)] = reconnects
    assert "idle_timeout" in error.details
