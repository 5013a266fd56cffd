"""The async client against the real service in-process: every method, exact values."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from candlewire.app import App
from candlewire_client import (
    Candle,
    CandleEvent,
    CandleStream,
    CandlewireClient,
    Heartbeat,
    Interval,
    InvalidArgumentError,
    NotFoundError,
    Series,
    SnapshotEnd,
    Source,
    UnavailableError,
)
from candlewire_client._convert import candle_from_pb, decimal_of
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc
from tests.client.conftest import FAST, Collector, has_snapshot_end
from tests.scripted import T0, ScriptedFeed, sec

T0_UTC = datetime.fromtimestamp(T0 // 10**9, UTC)

# (second after T0, price, quantity): exact decimals of up to 15 significant digits.
TAPE = [
    (0, "64123.45", "0.00123"),
    (0.25, "64125.5", "0.5"),
    (0.75, "64099.99", "1.25"),
    (1, "64100.01", "0.001"),
    (61, "64200", "2"),
    (61.5, "64333.33", "0.3"),
    (125, "63999.12", "0.12345"),
    (3700, "65000.5", "0.01"),
]


async def _play(feed: ScriptedFeed, symbol: str = "BTCUSDT") -> None:
    for seconds, price, quantity in TAPE:
        await feed.trade(symbol, sec(seconds), price, quantity)


def _expected(interval_seconds: int) -> dict[datetime, dict[str, object]]:
    """OHLCV per candle open time, computed with Decimal from TAPE."""
    buckets: dict[datetime, list[tuple[Decimal, Decimal]]] = defaultdict(list)
    for seconds, price, quantity in TAPE:
        start = int(seconds) // interval_seconds * interval_seconds
        buckets[T0_UTC + timedelta(seconds=start)].append((Decimal(price), Decimal(quantity)))
    return {
        open_time: {
            "open": trades[0][0],
            "high": max(p for p, _ in trades),
            "low": min(p for p, _ in trades),
            "close": trades[-1][0],
            "volume": sum((q for _, q in trades), Decimal(0)),
            "quote_volume": sum((p * q for p, q in trades), Decimal(0)),
            "trade_count": len(trades),
        }
        for open_time, trades in buckets.items()
    }


def _ohlcv(candle: Candle[Decimal]) -> dict[str, object]:
    return {
        "open": candle.open,
        "high": candle.high,
        "low": candle.low,
        "close": candle.close,
        "volume": candle.volume,
        "quote_volume": candle.quote_volume,
        "trade_count": candle.trade_count,
    }


def state_of(stream: CandleStream[Any]) -> str:
    """The stream's state, read anew (after an await mypy would still narrow it)."""
    return stream.state


# -- prices and symbols ---------------------------------------------------------------


async def test_get_price_is_exact_and_utc(
    feed: ScriptedFeed, client: CandlewireClient[Decimal]
) -> None:
    await feed.quote("BTCUSDT", sec(1.5), "64123.45", "64123.47")
    price = await client.get_price("btcusdt")
    assert price.symbol == "BTCUSDT"
    assert (price.bid, price.ask) == (Decimal("64123.45"), Decimal("64123.47"))
    assert price.mid == Decimal("64123.46")
    assert price.spread == Decimal("0.02")
    assert (price.bid_size, price.ask_size) == (Decimal("1.5"), Decimal("2.5"))
    assert price.last is None  # no last trade price in this quote
    assert price.event_time == T0_UTC + timedelta(seconds=1.5)
    assert price.event_time.tzinfo is UTC
    assert price.receive_time.tzinfo is UTC
    assert price.stale is False
    assert price.source is Source.LIVE


async def test_float_client_returns_floats(feed: ScriptedFeed, target: str) -> None:
    await feed.quote("ETHUSDT", sec(1), "3478.29", "3478.3")
    async with CandlewireClient(target) as client:
        price = await client.get_price("ETHUSDT")
    assert isinstance(price.bid, float)
    assert (price.bid, price.ask, price.mid) == (3478.29, 3478.3, 3478.295)


async def test_get_price_errors(client: CandlewireClient[Decimal]) -> None:
    with pytest.raises(NotFoundError) as caught:
        await client.get_price("NOPE")
    assert [(v.field, v.description) for v in caught.value.field_violations] == [
        ("symbol", "unknown symbol 'NOPE'")
    ]
    with pytest.raises(UnavailableError, match="no quote received for BTCUSDT"):
        await client.get_price("BTCUSDT")


async def test_get_prices_keeps_request_order(
    feed: ScriptedFeed, client: CandlewireClient[Decimal]
) -> None:
    await feed.quote("ETHUSDT", sec(1), "3478.29", "3478.31")
    prices = await client.get_prices(["ethusdt", "BTCUSDT"])
    assert list(prices) == ["ETHUSDT", "BTCUSDT"]
    eth = prices["ETHUSDT"]
    assert eth is not None
    assert eth.mid == Decimal("3478.30")
    assert prices["BTCUSDT"] is None  # served, but no quote yet
    with pytest.raises(InvalidArgumentError) as caught:
        await client.get_prices(["BTCUSDT", "btcusdt"])
    assert caught.value.field_violations[0].field == "symbols[1]"
    with pytest.raises(NotFoundError) as not_found:
        await client.get_prices(["BTCUSDT", "XRPUSDT"])
    assert not_found.value.field_violations[0].field == "symbols[1]"


async def test_list_symbols(client: CandlewireClient[Decimal]) -> None:
    symbols = await client.list_symbols()
    assert [s.symbol for s in symbols] == ["BTCUSDT", "ETHUSDT"]
    btc = symbols[0]
    assert (btc.base_asset, btc.quote_asset) == ("BTC", "USDT")
    assert (btc.price_precision, btc.quantity_precision) == (2, 4)
    assert btc.intervals == tuple(Interval)
    assert btc.source is Source.LIVE


# -- candles ----------------------------------------------------------------------------


@pytest.mark.parametrize(("interval", "seconds"), [("1s", 1), ("1m", 60), ("1h", 3600)])
async def test_candles_are_exact(
    feed: ScriptedFeed, client: CandlewireClient[Decimal], interval: str, seconds: int
) -> None:
    await _play(feed)
    candles = await client.fetch_candles("BTCUSDT", interval, start=T0_UTC)
    expected = _expected(seconds)
    got = {c.open_time: c for c in candles}
    # Intervals without trades are filled with flat candles; compare the traded ones.
    assert {t: _ohlcv(got[t]) for t in expected} == expected
    for candle in candles:
        assert candle.interval == interval
        assert candle.open_time.tzinfo is UTC
        assert candle.close_time - candle.open_time == Interval(interval).length
    assert [c.open_time for c in candles] == sorted(got)
    assert candles[-1].closed is False


async def test_paging_across_many_pages_equals_one_big_query(
    feed: ScriptedFeed,
    client: CandlewireClient[Decimal],
    stub: marketdata_pb2_grpc.MarketDataServiceAsyncStub,
) -> None:
    await feed.trades(
        [("BTCUSDT", sec(i), f"{100 + i % 17}.{i % 100:02d}", "0.5") for i in range(250)]
    )
    big = await stub.GetCandles(
        pb.GetCandlesRequest(
            symbol="BTCUSDT",
            interval=pb.INTERVAL_1S,
            start_time=Timestamp(seconds=T0 // 10**9),
            page_size=1000,
        )
    )
    assert not big.next_page_token
    expected = [candle_from_pb(c, decimal_of) for c in big.candles]
    assert len(expected) == 250

    paged = [c async for c in client.get_candles("BTCUSDT", "1s", start=T0_UTC, page_size=7)]
    assert paged == expected  # 36 pages
    backwards = await client.fetch_candles("BTCUSDT", "1s", page_size=9)
    assert list(backwards) == expected  # no start: walked back from now, 28 pages
    assert list(await client.fetch_candles("BTCUSDT", "1s")) == expected


async def test_candle_ranges_and_limits(
    feed: ScriptedFeed, client: CandlewireClient[Decimal]
) -> None:
    await feed.trades([("BTCUSDT", sec(i), "100", "1") for i in range(30)])
    at = [T0_UTC + timedelta(seconds=i) for i in range(30)]

    async def opens(**kwargs: object) -> list[datetime]:
        candles = await client.fetch_candles("BTCUSDT", Interval.S1, **kwargs)  # type: ignore[arg-type]
        return [c.open_time for c in candles]

    assert await opens(start=at[5], end=at[9]) == at[5:9]  # start inclusive, end exclusive
    assert await opens(start=at[5], limit=12, page_size=5) == at[5:17]
    assert await opens(limit=12, page_size=5) == at[18:30]  # no start: the latest
    assert await opens(end=at[10], limit=3) == at[7:10]
    assert await opens(start="2026-01-01T00:00:20Z", end="2026-01-01T00:00:22") == at[20:22]
    assert await opens(start=at[5], limit=0) == []
    with pytest.raises(InvalidArgumentError) as caught:
        await opens(start=at[9], end=at[5])
    assert caught.value.field_violations[0].field == "end_time"
    with pytest.raises(InvalidArgumentError, match="page_size"):
        await opens(page_size=1001)
    with pytest.raises(NotFoundError):
        await client.fetch_candles("NOPE", "1s")


# -- health -----------------------------------------------------------------------------


async def test_health_follows_readiness(
    feed: ScriptedFeed, client: CandlewireClient[Decimal]
) -> None:
    health = await client.health()
    assert (health.liveness, health.readiness) == ("SERVING", "NOT_SERVING")  # feed silent
    assert health.live and not health.ready
    await feed.trade("BTCUSDT", sec(0), "1")
    ready = await client.wait_until_ready(timeout=10)
    assert ready.live and ready.ready


# -- subscriptions ----------------------------------------------------------------------


async def test_subscription_history_then_live(
    feed: ScriptedFeed, client: CandlewireClient[Decimal]
) -> None:
    await _play(feed)
    stream = client.subscribe_candles(["BTCUSDT@1m", ("ETHUSDT", "1m")], history=2)
    events = Collector(stream)
    await events.wait_until(has_snapshot_end)
    history = [e.candle for e in events.items if isinstance(e, CandleEvent)]
    assert [(c.symbol, c.open_time) for c in history] == [
        ("BTCUSDT", T0_UTC + timedelta(minutes=60)),
        ("BTCUSDT", T0_UTC + timedelta(minutes=61)),
    ]
    assert stream.state == "live"
    snapshot_end = events.items[-1]
    assert isinstance(snapshot_end, SnapshotEnd)
    assert snapshot_end.resume_token

    await feed.trade("ETHUSDT", sec(3725), "3478.29", "0.7")
    await events.wait_until(
        lambda items: any(
            isinstance(e, CandleEvent) and e.candle.symbol == "ETHUSDT" for e in items
        )
    )
    live = next(
        e.candle
        for e in events.items
        if isinstance(e, CandleEvent) and e.candle.symbol == "ETHUSDT"
    )
    assert live.series == Series("ETHUSDT", Interval.M1)
    assert (live.open, live.volume, live.closed) == (Decimal("3478.29"), Decimal("0.7"), False)
    latest = events.items[-1]
    assert not isinstance(latest, SnapshotEnd)
    assert stream.resume_token == latest.resume_token

    await events.wait_until(lambda items: isinstance(items[-1], Heartbeat))
    beat = events.items[-1]
    assert isinstance(beat, Heartbeat)
    assert beat.server_time.tzinfo is UTC
    marks = {w.series: w.last_event_time for w in beat.watermarks}
    assert marks[Series("ETHUSDT", Interval.M1)] == T0_UTC + timedelta(seconds=3725)
    assert marks[Series("BTCUSDT", Interval.M1)] == T0_UTC + timedelta(seconds=3700)
    await stream.aclose()
    assert state_of(stream) == "closed"
    await events.wait_done()
    assert events.error is None


async def test_subscription_closed_only_from_start(
    feed: ScriptedFeed, client: CandlewireClient[Decimal]
) -> None:
    await feed.trades([("BTCUSDT", sec(i), f"{100 + i}", "1") for i in range(10)])
    stream = client.subscribe_candles(
        "BTCUSDT@1s", start=T0_UTC + timedelta(seconds=4), closed_only=True
    )
    events = Collector(stream)
    await events.wait_until(has_snapshot_end)
    history = [e.candle for e in events.items if isinstance(e, CandleEvent)]
    assert history
    assert all(c.closed for c in history)
    assert history[0].open_time == T0_UTC + timedelta(seconds=4)
    assert history[0].close == Decimal("104")
    await stream.aclose()


async def test_closing_the_client_ends_its_streams(app: App, target: str) -> None:
    client = CandlewireClient(target, retry=FAST)
    stream = client.subscribe_candles("BTCUSDT@1m")
    events = Collector(stream)
    await events.wait_until(has_snapshot_end)
    await client.close()
    await events.wait_done()
    assert events.error is None
    assert state_of(stream) == "closed"
    assert stream.reconnects == 0
    with pytest.raises(RuntimeError, match="closed"):
        await client.list_symbols()


async def test_aclose_from_another_task_while_waiting(
    client: CandlewireClient[Decimal],
) -> None:
    stream = client.subscribe_candles("BTCUSDT@1m")
    events = Collector(stream)
    await events.wait_until(has_snapshot_end)
    await stream.aclose()  # the collector is blocked reading
    await events.wait_done()
    assert events.error is None
    assert state_of(stream) == "closed"
