"""The unary RPCs of marketdata.v1.MarketDataService over a real server and channel.

Every test drives the service through the scripted feed, then asserts what a
client sees: values, ordering, paging, and for every refused request the status
code and the ``google.rpc.BadRequest`` field violation naming the bad field.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from candlewire.app import App
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1.marketdata_pb2_grpc import MarketDataServiceStub
from tests.scripted import ScriptedFeed, running, sec, stub_for

Stub = MarketDataServiceStub
S = 1_000_000_000
MIN = 60 * S

ALL_INTERVALS = [
    pb.INTERVAL_1S,
    pb.INTERVAL_1M,
    pb.INTERVAL_3M,
    pb.INTERVAL_5M,
    pb.INTERVAL_15M,
    pb.INTERVAL_30M,
    pb.INTERVAL_1H,
    pb.INTERVAL_2H,
    pb.INTERVAL_4H,
    pb.INTERVAL_6H,
    pb.INTERVAL_8H,
    pb.INTERVAL_12H,
    pb.INTERVAL_1D,
    pb.INTERVAL_3D,
    pb.INTERVAL_1W,
    pb.INTERVAL_1MO,
]


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def ts(ns: int) -> Timestamp:
    seconds, nanos = divmod(ns, S)
    return Timestamp(seconds=seconds, nanos=nanos)


def ns_of(value: Timestamp) -> int:
    return value.seconds * S + value.nanos


def violations(status: status_pb2.Status | None) -> list[str]:
    """Fields named by the BadRequest details of a status."""
    if status is None:
        return []
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return fields


async def refused(call: Any, code: grpc.StatusCode, field: str | None = None) -> str:
    """Await a unary call that must fail with ``code``.

    For ``field`` given, the status must carry exactly one BadRequest field
    violation naming it; otherwise it must carry none. Returns the message.
    """
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    error = info.value
    assert error.code() == code, f"{error.code()}: {error.details()}"
    status = await rpc_status.aio.from_call(call)
    if field is None:
        assert violations(status) == []
    else:
        assert status is not None, "no google.rpc.Status details in the trailers"
        assert status.code == code.value[0]
        assert violations(status) == [field], status
    return str(error.details())


def candles_req(
    symbol: str = "BTCUSDT",
    interval: int = pb.INTERVAL_1M,
    *,
    start: int | None = None,
    end: int | None = None,
    page_size: int = 0,
    page_token: str = "",
) -> pb.GetCandlesRequest:
    request = pb.GetCandlesRequest(
        symbol=symbol,
        interval=interval,  # type: ignore[arg-type]
        page_size=page_size,
        page_token=page_token,
    )
    if start is not None:
        request.start_time.CopyFrom(ts(start))
    if end is not None:
        request.end_time.CopyFrom(ts(end))
    return request


def opens(candles: Sequence[pb.Candle]) -> list[int]:
    return [ns_of(c.open_time) for c in candles]


async def all_pages(stub: Stub, request: pb.GetCandlesRequest) -> tuple[list[pb.Candle], int]:
    """Every candle of a paged query, following next_page_token; and the page count."""
    candles: list[pb.Candle] = []
    pages = 0
    token = ""
    while True:
        page_request = pb.GetCandlesRequest()
        page_request.CopyFrom(request)
        page_request.page_token = token
        response = await stub.GetCandles(page_request, timeout=5)
        pages += 1
        assert pages < 1000, "paging does not end"
        candles.extend(response.candles)
        token = response.next_page_token
        if not token:
            return candles, pages


async def still_serves(stub: Stub) -> None:
    """A valid call right after a refused one is answered normally."""
    response = await stub.ListSymbols(pb.ListSymbolsRequest(), timeout=5)
    assert [s.symbol for s in response.symbols] == ["BTCUSDT", "ETHUSDT"]


async def tape(feed: ScriptedFeed) -> None:
    """A known trade tape on BTCUSDT, 1m candles m0..m3 (minutes from T0).

    m0: four trades in one call; m1: no trades (empty at m0's close);
    m2: a trade, then closed by a watermark, then corrected by a late trade;
    m3: the forming (open, empty) candle at the corrected close.
    """
    await feed.trades(
        [
            ("BTCUSDT", sec(1), "100.1", "0.1"),
            ("BTCUSDT", sec(15), "101.7", "0.2"),
            ("BTCUSDT", sec(30), "99.3", "0.3"),
            ("BTCUSDT", sec(59), "100.2", "0.6"),
        ]
    )  # m0 rev 0
    await feed.watermark("BTCUSDT", sec(60))  # m0 closed (rev 1), m1 opened empty (rev 0)
    await feed.trade("BTCUSDT", sec(125), "102", "1")  # m1 closed (rev 1), m2 rev 0
    await feed.watermark("BTCUSDT", sec(181))  # m2 closed (rev 1), m3 opened (rev 0)
    # Late by 1.5 s (lateness is 2 s): corrects closed m2 (rev 2) and the
    # previous close of the empty m3 (rev 1).
    await feed.trade("BTCUSDT", sec(179.5), "103", "0.5")


# --------------------------------------------------------------------------
# GetPrice
# --------------------------------------------------------------------------


async def test_get_price_returns_every_field_of_a_fresh_quote(
    feed: ScriptedFeed, stub: Stub
) -> None:
    received = time.time_ns() - 1 * S
    await feed.quote("BTCUSDT", sec(3.25), "100.10", "100.30", receive_time=received)

    price = (await stub.GetPrice(pb.GetPriceRequest(symbol="BTCUSDT"), timeout=5)).price

    assert price.symbol == "BTCUSDT"
    assert repr(price.bid) == "100.1"
    assert repr(price.ask) == "100.3"
    assert repr(price.mid) == "100.2"
    assert repr(price.spread) == "0.2"  # exact decimal arithmetic, not 100.3 - 100.1
    assert price.bid_size == 1.5
    assert price.ask_size == 2.5
    assert ns_of(price.event_time) == sec(3.25)
    assert ns_of(price.receive_time) == received
    assert price.stale is False
    assert price.source == pb.SOURCE_LIVE
    assert price.last == 0.0  # no trade seen yet


async def test_get_price_is_stale_for_a_quote_received_long_ago(
    feed: ScriptedFeed, stub: Stub
) -> None:
    # stale_after is 10 s by default.
    await feed.quote("BTCUSDT", sec(1), "100", "101", receive_time=time.time_ns() - 60 * S)
    await feed.quote("ETHUSDT", sec(1), "10", "11", receive_time=time.time_ns() - 2 * S)

    old = (await stub.GetPrice(pb.GetPriceRequest(symbol="BTCUSDT"), timeout=5)).price
    fresh = (await stub.GetPrice(pb.GetPriceRequest(symbol="ETHUSDT"), timeout=5)).price

    assert old.stale is True
    assert old.bid == 100.0  # a stale price is still returned, marked
    assert fresh.stale is False


async def test_get_price_follows_the_latest_quote(feed: ScriptedFeed, stub: Stub) -> None:
    await feed.quote("BTCUSDT", sec(1), "100", "101")
    await feed.quote("BTCUSDT", sec(2), "200", "202")

    price = (await stub.GetPrice(pb.GetPriceRequest(symbol="BTCUSDT"), timeout=5)).price

    assert (price.bid, price.ask, price.mid, price.spread) == (200.0, 202.0, 201.0, 2.0)
    assert ns_of(price.event_time) == sec(2)


async def test_get_price_last_is_the_last_trade_price(feed: ScriptedFeed, stub: Stub) -> None:
    """Contract: Price.last is the price of the last trade, 0 only before any trade."""
    await feed.trade("BTCUSDT", sec(1), "100.5", "1")
    await feed.quote("BTCUSDT", sec(2), "100", "101")

    price = (await stub.GetPrice(pb.GetPriceRequest(symbol="BTCUSDT"), timeout=5)).price

    assert price.last == 100.5, (
        "Price.last must be the last trade's price once a trade was seen (proto: "
        "'0 when no trade was seen yet'); the service only copies Quote.last, which "
        "feeds that report trades and quotes separately never set"
    )


async def test_get_price_accepts_a_lowercase_symbol(feed: ScriptedFeed, stub: Stub) -> None:
    await feed.quote("BTCUSDT", sec(1), "100", "101")

    price = (await stub.GetPrice(pb.GetPriceRequest(symbol="btcUsdt"), timeout=5)).price

    assert price.symbol == "BTCUSDT"
    assert price.bid == 100.0


async def test_get_price_of_a_known_symbol_without_quote_is_unavailable(stub: Stub) -> None:
    message = await refused(
        stub.GetPrice(pb.GetPriceRequest(symbol="ETHUSDT"), timeout=5),
        grpc.StatusCode.UNAVAILABLE,
    )
    assert "ETHUSDT" in message
    await still_serves(stub)


async def test_get_price_of_an_unknown_symbol_is_not_found(stub: Stub) -> None:
    message = await refused(
        stub.GetPrice(pb.GetPriceRequest(symbol="DOGEUSDT"), timeout=5),
        grpc.StatusCode.NOT_FOUND,
        "symbol",
    )
    assert "DOGEUSDT" in message
    await still_serves(stub)


async def test_get_price_without_symbol_is_invalid(stub: Stub) -> None:
    await refused(
        stub.GetPrice(pb.GetPriceRequest(), timeout=5), grpc.StatusCode.INVALID_ARGUMENT, "symbol"
    )
    await still_serves(stub)


async def test_get_price_of_a_very_long_unknown_symbol_is_refused_cleanly(stub: Stub) -> None:
    """A long (8 KB) symbol is a small request (the limit is 1 MiB); the refusal
    must still be a clean status naming the field, not an echo of the value so
    large that the client drops the trailers (RESOURCE_EXHAUSTED, metadata limit).
    """
    call = stub.GetPrice(pb.GetPriceRequest(symbol="X" * 8000), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT), (
        f"got {info.value.code()} ({str(info.value.details())[:120]}): the error echoes the "
        "whole symbol into grpc-message and grpc-status-details-bin, over the client's "
        "metadata limit"
    )
    assert violations(await rpc_status.aio.from_call(call)) == ["symbol"]
    assert len(str(info.value.details())) < 1024
    await still_serves(stub)


# --------------------------------------------------------------------------
# BatchGetPrices
# --------------------------------------------------------------------------


async def test_batch_get_prices_keeps_request_order(feed: ScriptedFeed, stub: Stub) -> None:
    await feed.quote("BTCUSDT", sec(1), "100", "101")
    await feed.quote("ETHUSDT", sec(2), "10", "11")

    for order in (["ETHUSDT", "BTCUSDT"], ["BTCUSDT", "ETHUSDT"]):
        response = await stub.BatchGetPrices(pb.BatchGetPricesRequest(symbols=order), timeout=5)
        assert [p.symbol for p in response.prices] == order
    by_symbol = {p.symbol: p for p in response.prices}
    assert by_symbol["BTCUSDT"].mid == 100.5
    assert by_symbol["ETHUSDT"].mid == 10.5
    assert ns_of(by_symbol["ETHUSDT"].event_time) == sec(2)
    assert not any(p.stale for p in response.prices)


async def test_batch_get_prices_marks_a_symbol_without_quote_stale(
    feed: ScriptedFeed, stub: Stub
) -> None:
    await feed.quote("BTCUSDT", sec(1), "100", "101")

    response = await stub.BatchGetPrices(
        pb.BatchGetPricesRequest(symbols=["ethusdt", "BTCUSDT"]), timeout=5
    )

    eth, btc = response.prices
    assert eth.symbol == "ETHUSDT"
    assert eth.stale is True
    assert (eth.bid, eth.ask) == (0.0, 0.0)
    assert btc.symbol == "BTCUSDT"
    assert btc.stale is False
    assert btc.bid == 100.0


async def test_batch_get_prices_marks_an_old_quote_stale(feed: ScriptedFeed, stub: Stub) -> None:
    await feed.quote("BTCUSDT", sec(1), "100", "101", receive_time=time.time_ns() - 60 * S)
    await feed.quote("ETHUSDT", sec(1), "10", "11")

    response = await stub.BatchGetPrices(
        pb.BatchGetPricesRequest(symbols=["BTCUSDT", "ETHUSDT"]), timeout=5
    )

    assert [p.stale for p in response.prices] == [True, False]


@pytest.mark.parametrize(
    ("symbols", "code", "field"),
    [
        pytest.param([], grpc.StatusCode.INVALID_ARGUMENT, "symbols", id="empty-list"),
        pytest.param(
            ["BTCUSDT", "ETHUSDT", "btcusdt"],
            grpc.StatusCode.INVALID_ARGUMENT,
            "symbols[2]",
            id="repeated-symbol",
        ),
        pytest.param(
            ["BTCUSDT", "DOGEUSDT"], grpc.StatusCode.NOT_FOUND, "symbols[1]", id="unknown-symbol"
        ),
        pytest.param(
            ["BTCUSDT", ""], grpc.StatusCode.INVALID_ARGUMENT, "symbols[1]", id="empty-symbol"
        ),
        pytest.param(
            ["BTCUSDT"] * 1001, grpc.StatusCode.INVALID_ARGUMENT, "symbols", id="over-1000"
        ),
        # 1000 is allowed: the request fails on the repeat, not on the count.
        pytest.param(
            ["BTCUSDT"] * 1000,
            grpc.StatusCode.INVALID_ARGUMENT,
            "symbols[1]",
            id="exactly-1000",
        ),
    ],
)
async def test_batch_get_prices_refuses(
    feed: ScriptedFeed,
    stub: Stub,
    symbols: list[str],
    code: grpc.StatusCode,
    field: str,
) -> None:
    await feed.quote("BTCUSDT", sec(1), "100", "101")
    await refused(
        stub.BatchGetPrices(pb.BatchGetPricesRequest(symbols=symbols), timeout=5), code, field
    )
    await still_serves(stub)


# --------------------------------------------------------------------------
# GetCandles: values
# --------------------------------------------------------------------------


async def test_get_candles_exact_ohlcv_of_a_known_tape(feed: ScriptedFeed, stub: Stub) -> None:
    await tape(feed)

    response = await stub.GetCandles(candles_req(), timeout=5)

    assert response.next_page_token == ""
    m0, m1, m2, m3 = response.candles
    assert opens(response.candles) == [sec(0), sec(60), sec(120), sec(180)]
    for candle in response.candles:
        assert candle.symbol == "BTCUSDT"
        assert candle.interval == pb.INTERVAL_1M
        assert ns_of(candle.close_time) == ns_of(candle.open_time) + MIN
        assert candle.source == pb.SOURCE_LIVE

    # m0: open = earliest, close = latest, exact sums (float sums would be off).
    assert (m0.open, m0.high, m0.low, m0.close) == (100.1, 101.7, 99.3, 100.2)
    assert 0.1 + 0.2 + 0.3 + 0.6 != 1.2  # the naive double sum is not exact ...
    assert repr(m0.volume) == "1.2"  # ... the service's is
    assert repr(m0.quote_volume) == "120.26"  # 10.01 + 20.34 + 29.79 + 60.12
    assert m0.trade_count == 4
    assert (m0.closed, m0.revision) == (True, 1)

    # m1: no trades, a zero-volume candle at the previous close.
    assert (m1.open, m1.high, m1.low, m1.close) == (100.2, 100.2, 100.2, 100.2)
    assert (m1.volume, m1.quote_volume, m1.trade_count) == (0.0, 0.0, 0)
    assert (m1.closed, m1.revision) == (True, 1)

    # m2: closed, then corrected by a late trade: higher revision, still closed.
    assert (m2.open, m2.high, m2.low, m2.close) == (102.0, 103.0, 102.0, 103.0)
    assert repr(m2.volume) == "1.5"
    assert repr(m2.quote_volume) == "153.5"
    assert m2.trade_count == 2
    assert (m2.closed, m2.revision) == (True, 2)

    # m3: forming, empty at the corrected previous close.
    assert (m3.open, m3.high, m3.low, m3.close) == (103.0, 103.0, 103.0, 103.0)
    assert (m3.volume, m3.trade_count) == (0.0, 0)
    assert (m3.closed, m3.revision) == (False, 1)


async def test_get_candles_volume_of_point_one_plus_point_two_is_point_three(
    feed: ScriptedFeed, stub: Stub
) -> None:
    await feed.trade("BTCUSDT", sec(1), "10.1", "0.1")
    await feed.trade("BTCUSDT", sec(2), "10.2", "0.2")

    (candle,) = (await stub.GetCandles(candles_req(), timeout=5)).candles

    assert repr(candle.volume) == "0.3"
    assert repr(candle.quote_volume) == "3.05"  # 1.01 + 2.04
    assert (candle.open, candle.close, candle.trade_count) == (10.1, 10.2, 2)
    assert (candle.closed, candle.revision) == (False, 1)


async def test_get_candles_of_a_symbol_without_trades_is_empty(stub: Stub) -> None:
    response = await stub.GetCandles(candles_req("ETHUSDT"), timeout=5)
    assert list(response.candles) == []
    assert response.next_page_token == ""
    response = await stub.GetCandles(candles_req("ETHUSDT", start=sec(0)), timeout=5)
    assert list(response.candles) == []
    assert response.next_page_token == ""


async def test_get_candles_fills_gaps_between_trades_with_empty_candles(
    feed: ScriptedFeed, stub: Stub
) -> None:
    await feed.trade("BTCUSDT", sec(10), "50", "2")
    await feed.trade("BTCUSDT", sec(5 * 60 + 10), "55", "1")

    candles = list((await stub.GetCandles(candles_req(), timeout=5)).candles)

    assert opens(candles) == [sec(60 * i) for i in range(6)]
    assert [c.close for c in candles] == [50.0, 50.0, 50.0, 50.0, 50.0, 55.0]
    assert [c.open for c in candles] == [50.0, 50.0, 50.0, 50.0, 50.0, 55.0]
    assert [c.volume for c in candles] == [2.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert [c.closed for c in candles] == [True, True, True, True, True, False]
    # The 5m series holds the same trades in two candles.
    five = list((await stub.GetCandles(candles_req(interval=pb.INTERVAL_5M), timeout=5)).candles)
    assert opens(five) == [sec(0), sec(300)]
    assert [(c.open, c.close, c.volume, c.trade_count) for c in five] == [
        (50.0, 50.0, 2.0, 1),
        (55.0, 55.0, 1.0, 1),
    ]


# --------------------------------------------------------------------------
# GetCandles: ranges and paging
# --------------------------------------------------------------------------


async def test_get_candles_without_range_returns_the_latest_page(
    feed: ScriptedFeed, stub: Stub
) -> None:
    await tape(feed)

    response = await stub.GetCandles(candles_req(page_size=2), timeout=5)

    assert opens(response.candles) == [sec(120), sec(180)]
    assert response.next_page_token == ""


async def test_get_candles_with_only_end_returns_the_latest_before_it(
    feed: ScriptedFeed, stub: Stub
) -> None:
    await tape(feed)

    response = await stub.GetCandles(candles_req(end=sec(120), page_size=1), timeout=5)
    assert opens(response.candles) == [sec(60)]
    assert response.next_page_token == ""
    # An end that is not a boundary: open_time < end.
    response = await stub.GetCandles(candles_req(end=sec(120) + 1), timeout=5)
    assert opens(response.candles) == [sec(0), sec(60), sec(120)]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        pytest.param(60, 180, [60, 120], id="start-inclusive-end-exclusive"),
        pytest.param(61, None, [120, 180], id="start-between-boundaries"),
        pytest.param(0, 120, [0, 60], id="end-on-a-boundary-excluded"),
        pytest.param(0, 60.000000001, [0, 60], id="end-one-ns-after-open-included"),
        pytest.param(-3600, 1, [0], id="start-before-first-candle"),
        pytest.param(240, None, [], id="start-after-last-candle"),
        pytest.param(120, 121, [120], id="tiny-range"),
    ],
)
async def test_get_candles_range(
    feed: ScriptedFeed,
    stub: Stub,
    start: float,
    end: float | None,
    expected: list[int],
) -> None:
    await tape(feed)

    response = await stub.GetCandles(
        candles_req(start=sec(start), end=None if end is None else sec(end)), timeout=5
    )

    assert opens(response.candles) == [sec(e) for e in expected]
    assert response.next_page_token == ""


async def test_get_candles_paging_equals_one_big_query(feed: ScriptedFeed, stub: Stub) -> None:
    # 1s candles: trades every 7 s over 200 s, the seconds between filled empty.
    await feed.trades([("BTCUSDT", sec(t), str(100 + t % 13), "0.01") for t in range(0, 200, 7)])
    await feed.watermark("BTCUSDT", sec(205))
    request = candles_req(interval=pb.INTERVAL_1S, start=sec(3), end=sec(190), page_size=7)

    paged, pages = await all_pages(stub, request)
    whole = await stub.GetCandles(
        candles_req(interval=pb.INTERVAL_1S, start=sec(3), end=sec(190), page_size=1000),
        timeout=5,
    )

    assert whole.next_page_token == ""
    assert opens(whole.candles) == [sec(t) for t in range(3, 190)]
    assert pages == -(-187 // 7)  # 187 candles in pages of 7, the last one partial
    assert opens(paged) == opens(whole.candles)  # no gap, no duplicate
    assert [c.SerializeToString() for c in paged] == [c.SerializeToString() for c in whole.candles]


async def test_get_candles_page_ending_exactly_at_the_range_end_has_no_token(
    feed: ScriptedFeed, stub: Stub
) -> None:
    await tape(feed)

    first = await stub.GetCandles(candles_req(start=sec(0), page_size=2), timeout=5)
    assert opens(first.candles) == [sec(0), sec(60)]
    assert first.next_page_token
    second = await stub.GetCandles(
        candles_req(start=sec(0), page_size=2, page_token=first.next_page_token), timeout=5
    )
    assert opens(second.candles) == [sec(120), sec(180)]
    assert second.next_page_token == ""


@pytest.fixture
async def long_series(feed: ScriptedFeed, stub: Stub) -> Stub:
    """BTCUSDT 1s candles at T0 .. T0+1500 s (1501 candles)."""
    await feed.trade("BTCUSDT", sec(0), "10", "1")
    await feed.trade("BTCUSDT", sec(1500), "11", "1")
    return stub


async def test_get_candles_page_size_zero_is_500(long_series: Stub) -> None:
    latest = await long_series.GetCandles(candles_req(interval=pb.INTERVAL_1S), timeout=5)
    assert opens(latest.candles) == [sec(t) for t in range(1001, 1501)]
    assert latest.next_page_token == ""

    first = await long_series.GetCandles(
        candles_req(interval=pb.INTERVAL_1S, start=sec(0)), timeout=5
    )
    assert opens(first.candles) == [sec(t) for t in range(500)]
    assert first.next_page_token


@pytest.mark.parametrize("page_size", [1001, 5000, 2**31 - 1])
async def test_get_candles_page_size_above_1000_is_1000(long_series: Stub, page_size: int) -> None:
    latest = await long_series.GetCandles(
        candles_req(interval=pb.INTERVAL_1S, page_size=page_size), timeout=5
    )
    assert opens(latest.candles) == [sec(t) for t in range(501, 1501)]

    request = candles_req(interval=pb.INTERVAL_1S, start=sec(0), page_size=page_size)
    first = await long_series.GetCandles(request, timeout=5)
    assert len(first.candles) == 1000
    assert first.next_page_token
    request.page_token = first.next_page_token
    second = await long_series.GetCandles(request, timeout=5)
    assert opens(second.candles) == [sec(t) for t in range(1000, 1501)]
    assert second.next_page_token == ""


# --------------------------------------------------------------------------
# GetCandles: refused requests
# --------------------------------------------------------------------------


def _bad_time(seconds: int = 1_767_225_600, nanos: int = 0) -> Timestamp:
    return Timestamp(seconds=seconds, nanos=nanos)


def _with(request: pb.GetCandlesRequest, **fields: Any) -> pb.GetCandlesRequest:
    for name, value in fields.items():
        if isinstance(value, Timestamp):
            getattr(request, name).CopyFrom(value)
        else:
            setattr(request, name, value)
    return request


@pytest.mark.parametrize(
    ("request_", "code", "field"),
    [
        pytest.param(candles_req(""), grpc.StatusCode.INVALID_ARGUMENT, "symbol", id="no-symbol"),
        pytest.param(
            candles_req("DOGEUSDT"), grpc.StatusCode.NOT_FOUND, "symbol", id="unknown-symbol"
        ),
        pytest.param(
            candles_req(interval=pb.INTERVAL_UNSPECIFIED),
            grpc.StatusCode.INVALID_ARGUMENT,
            "interval",
            id="interval-unspecified",
        ),
        pytest.param(
            candles_req(interval=99),
            grpc.StatusCode.INVALID_ARGUMENT,
            "interval",
            id="interval-unknown-value",
        ),
        pytest.param(
            candles_req(page_size=-1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_size",
            id="negative-page-size",
        ),
        pytest.param(
            candles_req(start=sec(60), end=sec(60)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "end_time",
            id="end-equals-start",
        ),
        pytest.param(
            candles_req(start=sec(60), end=sec(0)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "end_time",
            id="end-before-start",
        ),
        pytest.param(
            _with(candles_req(), start_time=_bad_time(nanos=1_000_000_000)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "start_time",
            id="start-nanos-too-big",
        ),
        pytest.param(
            _with(candles_req(), start_time=_bad_time(nanos=-1)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "start_time",
            id="start-nanos-negative",
        ),
        pytest.param(
            _with(candles_req(), end_time=_bad_time(nanos=1_000_000_000)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "end_time",
            id="end-nanos-too-big",
        ),
        pytest.param(
            _with(candles_req(), start_time=_bad_time(seconds=253402300800)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "start_time",
            id="start-after-year-9999",
        ),
        pytest.param(
            _with(candles_req(), end_time=_bad_time(seconds=-62135596801)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "end_time",
            id="end-before-year-1",
        ),
        pytest.param(
            candles_req(start=sec(0), page_token="garbage!"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_token",
            id="garbage-page-token",
        ),
        pytest.param(
            candles_req(start=sec(0), page_token="AAAAAAAAAAAAAAAAAAAAAA"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_token",
            id="well-formed-base64-page-token",
        ),
        pytest.param(
            candles_req(start=sec(0), page_token="\u00e9t\u00e9"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_token",
            id="non-ascii-page-token",
        ),
    ],
)
async def test_get_candles_refuses(
    stub: Stub, request_: pb.GetCandlesRequest, code: grpc.StatusCode, field: str
) -> None:
    await refused(stub.GetCandles(request_, timeout=5), code, field)
    await still_serves(stub)


async def test_get_candles_symbol_is_checked_before_interval(stub: Stub) -> None:
    """One violation per response: the first bad field in request order."""
    await refused(
        stub.GetCandles(candles_req("", pb.INTERVAL_UNSPECIFIED, page_size=-1), timeout=5),
        grpc.StatusCode.INVALID_ARGUMENT,
        "symbol",
    )


async def test_get_candles_page_token_with_other_fields_is_invalid(
    feed: ScriptedFeed, stub: Stub
) -> None:
    await tape(feed)
    first = await stub.GetCandles(candles_req(start=sec(0), page_size=1), timeout=5)
    token = first.next_page_token
    assert token

    others = {
        "other start": candles_req(start=sec(60), page_size=1, page_token=token),
        "added end": candles_req(start=sec(0), end=sec(240), page_size=1, page_token=token),
        "other interval": candles_req(
            interval=pb.INTERVAL_1S, start=sec(0), page_size=1, page_token=token
        ),
        "other symbol": candles_req("ETHUSDT", start=sec(0), page_size=1, page_token=token),
        "no start": candles_req(page_size=1, page_token=token),
    }
    for name, request in others.items():
        message = await refused(
            stub.GetCandles(request, timeout=5), grpc.StatusCode.INVALID_ARGUMENT, "page_token"
        )
        assert message, name

    # The same fields with another page size are fine (the token is not tied to it);
    # a lowercase symbol is the same request.
    second = await stub.GetCandles(
        candles_req("btcusdt", start=sec(0), page_size=10, page_token=token), timeout=5
    )
    assert opens(second.candles) == [sec(60), sec(120), sec(180)]
    assert second.next_page_token == ""


async def test_get_candles_of_an_interval_not_served_is_invalid() -> None:
    feed = ScriptedFeed()
    async with running(feed, intervals="1m,1h") as app, stub_for(app) as stub:
        await feed.trade("BTCUSDT", sec(1), "10", "1")
        for interval in (pb.INTERVAL_1S, pb.INTERVAL_5M, pb.INTERVAL_1MO):
            message = await refused(
                stub.GetCandles(candles_req(interval=interval), timeout=5),
                grpc.StatusCode.INVALID_ARGUMENT,
                "interval",
            )
            assert "not served" in message
        served = await stub.GetCandles(candles_req(interval=pb.INTERVAL_1H), timeout=5)
        assert opens(served.candles) == [sec(0)]
        symbols = await stub.ListSymbols(pb.ListSymbolsRequest(), timeout=5)
        for info in symbols.symbols:
            assert list(info.intervals) == [pb.INTERVAL_1M, pb.INTERVAL_1H]


# --------------------------------------------------------------------------
# ListSymbols
# --------------------------------------------------------------------------


async def test_list_symbols(stub: Stub) -> None:
    response = await stub.ListSymbols(pb.ListSymbolsRequest(), timeout=5)

    assert [s.symbol for s in response.symbols] == ["BTCUSDT", "ETHUSDT"]
    for info in response.symbols:
        assert info.price_precision == 2
        assert info.quantity_precision == 4
        assert info.source == pb.SOURCE_LIVE
        assert list(info.intervals) == ALL_INTERVALS
    btc, eth = response.symbols
    assert (btc.base_asset, btc.quote_asset) == ("BTC", "USDT")
    assert (eth.base_asset, eth.quote_asset) == ("ETH", "USDT")


async def test_list_symbols_of_a_three_symbol_deployment() -> None:
    feed = ScriptedFeed(("BTCUSDT", "ETHUSDT", "EURUSD"))
    async with running(feed, intervals="1h, 1s,1M") as app, stub_for(app) as stub:
        response = await stub.ListSymbols(pb.ListSymbolsRequest(), timeout=5)
    assert [s.symbol for s in response.symbols] == ["BTCUSDT", "ETHUSDT", "EURUSD"]
    eur = response.symbols[2]
    assert (eur.base_asset, eur.quote_asset) == ("EUR", "USD")
    assert list(eur.intervals) == [pb.INTERVAL_1S, pb.INTERVAL_1H, pb.INTERVAL_1MO]


# --------------------------------------------------------------------------
# Robustness
# --------------------------------------------------------------------------


@pytest.fixture
async def raw_channel(app: App) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield channel


async def test_an_undecodable_request_does_not_harm_the_service(
    feed: ScriptedFeed, stub: Stub, raw_channel: grpc.aio.Channel
) -> None:
    await feed.quote("BTCUSDT", sec(1), "100", "101")
    method = raw_channel.unary_unary(
        "/marketdata.v1.MarketDataService/GetPrice",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await method(b"\xff\xff\xff\xff", timeout=5)
    assert info.value.code() != grpc.StatusCode.OK

    price = (await stub.GetPrice(pb.GetPriceRequest(symbol="BTCUSDT"), timeout=5)).price
    assert price.bid == 100.0


async def test_a_burst_of_bad_requests_does_not_harm_the_service(
    feed: ScriptedFeed, stub: Stub
) -> None:
    await feed.trade("BTCUSDT", sec(1), "10", "1")
    bad = [
        stub.GetCandles(candles_req(start=sec(0), page_token="x" * 500), timeout=5),
        stub.GetCandles(candles_req(page_size=-5), timeout=5),
        stub.GetPrice(pb.GetPriceRequest(symbol="?" * 100), timeout=5),
        stub.BatchGetPrices(pb.BatchGetPricesRequest(symbols=[""] * 1000), timeout=5),
    ]
    for call in bad:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
        )

    (candle,) = (await stub.GetCandles(candles_req(), timeout=5)).candles
    assert candle.close == 10.0
    await feed.trade("BTCUSDT", sec(2), "11", "1")  # ingestion is unharmed too
    (candle,) = (await stub.GetCandles(candles_req(), timeout=5)).candles
    assert (candle.close, candle.trade_count) == (11.0, 2)
