"""The blocking client: the same essentials, from plain threads and ``for`` loops.

The blocking code runs in a worker thread (``asyncio.to_thread``) while the
test's event loop runs the service; threads hand events over through queues.
"""

from __future__ import annotations

import asyncio
import gc
import queue
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from candlewire.app import App
from candlewire_client import (
    Candle,
    CandleEvent,
    CandlewireError,
    Client,
    Heartbeat,
    InvalidArgumentError,
    NotFoundError,
    Series,
    SnapshotEnd,
    UnavailableError,
)
from tests.client.conftest import FAST, WAIT, SideServer, logged_candles
from tests.scripted import T0, ScriptedFeed, sec

T0_UTC = datetime.fromtimestamp(T0 // 10**9, UTC)


def _loop_threads() -> int:
    return sum(t.name == "candlewire-client-loop" for t in threading.enumerate())


async def test_unary_methods(feed: ScriptedFeed, target: str) -> None:
    await feed.trades([("BTCUSDT", sec(i), f"{64000 + i}.01", "0.25") for i in range(40)])
    await feed.quote("BTCUSDT", sec(40), "64039.99", "64040.01")

    def work() -> None:
        with Client(target, decimals=True, retry=FAST) as client:
            assert client.get_price("BTCUSDT").mid == Decimal("64040.00")
            prices = client.get_prices(["BTCUSDT", "ETHUSDT"])
            assert list(prices) == ["BTCUSDT", "ETHUSDT"]
            assert prices["ETHUSDT"] is None
            assert [s.symbol for s in client.list_symbols()] == ["BTCUSDT", "ETHUSDT"]

            paged = list(client.get_candles("BTCUSDT", "1s", start=T0_UTC, page_size=6))
            assert len(paged) == 40
            assert paged[7].open == Decimal("64007.01")
            assert paged[7].open_time == T0_UTC + timedelta(seconds=7)
            candles = client.fetch_candles("BTCUSDT", "1s")
            assert list(candles) == paged
            frame = client.fetch_candles("BTCUSDT", "1m").to_pandas()
            assert frame.loc[T0_UTC, "volume"] == Decimal("10.00")
            assert frame.loc[T0_UTC, "high"] == Decimal("64039.01")

            with pytest.raises(NotFoundError):
                client.get_price("NOPE")
            with pytest.raises(InvalidArgumentError):
                list(client.get_candles("BTCUSDT", "7m"))
            assert client.health().live
        assert client.closed
        with pytest.raises(RuntimeError, match="closed"):
            client.list_symbols()

    before = _loop_threads()
    await asyncio.to_thread(work)
    assert _loop_threads() == before


async def test_breaking_out_of_a_candle_loop(feed: ScriptedFeed, target: str) -> None:
    await feed.trades([("BTCUSDT", sec(i), "100", "1") for i in range(30)])

    def work() -> list[float]:
        with Client(target) as client:
            closes = []
            for candle in client.get_candles("BTCUSDT", "1s", start=T0_UTC, page_size=5):
                closes.append(candle.close)
                if len(closes) == 7:
                    break
            return closes

    assert await asyncio.to_thread(work) == [100.0] * 7


async def test_subscription_in_a_for_loop(feed: ScriptedFeed, target: str) -> None:
    await feed.trade("BTCUSDT", sec(0), "100.5", "2")
    events: queue.Queue[Any] = queue.Queue()

    def work() -> None:
        with Client(target, decimals=True) as client:
            with client.subscribe_candles("BTCUSDT@1m", history=5) as stream:
                for event in stream:
                    events.put(event)
                    if isinstance(event, CandleEvent) and event.candle.trade_count == 2:
                        break
            events.put(stream.state)

    worker = asyncio.create_task(asyncio.to_thread(work))

    async def next_event() -> Any:
        return await asyncio.to_thread(events.get, timeout=WAIT)

    first = await next_event()
    assert isinstance(first, CandleEvent)
    assert first.candle.close == Decimal("100.5")
    assert isinstance(await next_event(), SnapshotEnd)
    await feed.trade("BTCUSDT", sec(1), "100.75", "1")
    while not isinstance(update := await next_event(), CandleEvent):
        assert isinstance(update, Heartbeat)
    assert (update.candle.close, update.candle.volume) == (Decimal("100.75"), Decimal("3"))
    await asyncio.wait_for(worker, WAIT)
    assert events.get_nowait() == "closed"


async def test_blocking_subscription_survives_a_restart(app: App, feed: ScriptedFeed) -> None:
    side = SideServer(app, feed)
    await side.start()
    series = Series.of("BTCUSDT@1s")
    events: queue.Queue[Any] = queue.Queue()
    reconnects: queue.Queue[tuple[int, float, CandlewireError]] = queue.Queue()
    stop = threading.Event()

    def work() -> None:
        with Client(side.target, decimals=True, retry=FAST) as client:
            stream = client.subscribe_candles(
                series, on_reconnect=lambda *report: reconnects.put(report)
            )
            for event in stream:
                if not isinstance(event, Heartbeat):
                    events.put(event)
                if stop.is_set():
                    break

    worker = asyncio.create_task(asyncio.to_thread(work))
    assert isinstance(await asyncio.to_thread(events.get, timeout=WAIT), SnapshotEnd)
    head = await app.store.head(("BTCUSDT", "ETHUSDT"))
    await side.stop()
    attempt, _, error = await asyncio.to_thread(reconnects.get, timeout=WAIT)
    assert (attempt, type(error)) == (1, UnavailableError)
    for i in range(3):  # while the server is down
        await feed.trade("BTCUSDT", sec(i), f"{100 + i}.5")
    await side.start()
    await feed.trade("BTCUSDT", sec(3), "103.5")
    expected = await logged_candles(app, [series], head)
    got: list[Candle[Decimal]] = []
    while len(got) < len(expected):
        event = await asyncio.to_thread(events.get, timeout=WAIT)
        assert isinstance(event, CandleEvent)
        got.append(event.candle)
    assert got == expected
    stop.set()
    await feed.trade("BTCUSDT", sec(4), "104.5")  # wakes the loop up to see `stop`
    await asyncio.wait_for(worker, WAIT)
    await side.stop()


async def test_close_from_another_thread_ends_iteration(app: App, target: str) -> None:
    client = Client(target)
    stream = client.subscribe_candles("BTCUSDT@1m")
    started = threading.Event()

    def iterate() -> str:
        for event in stream:
            if isinstance(event, SnapshotEnd):
                started.set()
        return "ended"

    worker = asyncio.create_task(asyncio.to_thread(iterate))
    assert await asyncio.to_thread(started.wait, WAIT)
    await asyncio.to_thread(client.close)
    assert await asyncio.wait_for(worker, WAIT) == "ended"


async def test_an_unclosed_client_is_closed_when_collected(target: str) -> None:
    before = _loop_threads()

    def work() -> None:
        client = Client(target)
        client.list_symbols()
        assert _loop_threads() == before + 1

    await asyncio.to_thread(work)
    await asyncio.to_thread(gc.collect)
    assert _loop_threads() == before
