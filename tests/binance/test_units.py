"""Parts of the Binance feed on their own: wire schemas, rate limiter, REST client,
what is retried (the backoff itself is tests/test_retry.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, InvalidStatus, InvalidURI
from websockets.http11 import Response

from candlewire.domain import NANOS_PER_MILLI, Interval, Source
from candlewire.feeds.binance import BinanceError, BinanceUnavailable
from candlewire.feeds.binance.http import BinanceHttp, RateLimiter
from candlewire.feeds.binance.schemas import (
    BookTicker,
    ExchangeInfo,
    KlineEvent,
    ServerShutdown,
    StreamError,
    StreamResponse,
    TradeEvent,
    decode_klines,
    decode_stream_message,
    instrument,
    kline_candle,
    precision,
    quote,
    row_candle,
    weight_limit,
)
from candlewire.feeds.binance.websocket import is_retryable, stream_names

# Payloads as printed in Binance's spot API documentation.
KLINE_EVENT = {
    "e": "kline",
    "E": 1672515782136,
    "s": "BNBBTC",
    "k": {
        "t": 1672515780000,
        "T": 1672515839999,
        "s": "BNBBTC",
        "i": "1m",
        "f": 100,
        "L": 200,
        "o": "0.0010",
        "c": "0.0020",
        "h": "0.0025",
        "l": "0.0015",
        "v": "1000",
        "n": 100,
        "x": False,
        "q": "1.0000",
        "V": "500",
        "Q": "0.500",
        "B": "123456",
    },
}
BOOK_TICKER = {
    "u": 400900217,
    "s": "BNBUSDT",
    "b": "25.35190000",
    "B": "31.21000000",
    "a": "25.36520000",
    "A": "40.66000000",
}
TRADE = {
    "e": "trade",
    "E": 1672515782136,
    "s": "BNBBTC",
    "t": 12345,
    "p": "0.001",
    "q": "100",
    "T": 1672515782136,
    "m": True,
    "M": True,
}
KLINE_ROW = [
    1499040000000,
    "0.01634790",
    "0.80000000",
    "0.01575800",
    "0.01577100",
    "148976.11427815",
    1499644799999,
    "2434.19055334",
    308,
    "1756.87402397",
    "28.46694368",
    "0",
]


def combined(stream: str, data: Any) -> str:
    return json.dumps({"stream": stream, "data": data})


def test_stream_messages_decode_into_their_schemas() -> None:
    kline = decode_stream_message(combined("bnbbtc@kline_1m", KLINE_EVENT))
    assert isinstance(kline, KlineEvent) and kline.k.l == Decimal("0.0015") and not kline.k.x
    assert isinstance(
        decode_stream_message(combined("bnbusdt@bookTicker", BOOK_TICKER)), BookTicker
    )
    assert isinstance(decode_stream_message(combined("bnbbtc@trade", TRADE)), TradeEvent)
    shutdown = {"e": "serverShutdown", "E": 1770123456789}
    assert isinstance(decode_stream_message(combined("!serverShutdown", shutdown)), ServerShutdown)
    assert isinstance(decode_stream_message(json.dumps(shutdown)), ServerShutdown)
    assert decode_stream_message('{"result": null, "id": 1}') == StreamResponse(result=None, id=1)
    error = decode_stream_message('{"code": 2, "msg": "Invalid request", "id": 3}')
    assert error == StreamError(code=2, msg="Invalid request", id=3)
    assert decode_stream_message(combined("bnbbtc@depth", {"lastUpdateId": 1})) is None


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        combined("bnbbtc@kline_1m", {**KLINE_EVENT, "k": {"t": "soon"}}),
        combined("bnbusdt@bookTicker", {"s": "BNBUSDT"}),
    ],
)
def test_malformed_messages_are_protocol_errors(text: str) -> None:
    with pytest.raises(BinanceError, match=r"malformed|unexpected"):
        decode_stream_message(text)


def test_wire_to_domain() -> None:
    event = KlineEvent.model_validate(KLINE_EVENT)
    candle = kline_candle(event.k, Source.LIVE)
    assert candle.interval is Interval.M1
    assert candle.open_time == 1672515780000 * NANOS_PER_MILLI
    assert candle.close_time == 1672515840000 * NANOS_PER_MILLI
    assert (candle.open, candle.high, candle.low, candle.close) == tuple(
        Decimal(x) for x in ("0.0010", "0.0025", "0.0015", "0.0020")
    )
    assert (candle.volume, candle.quote_volume, candle.trade_count) == (
        Decimal(1000),
        Decimal(1),
        100,
    )

    (row,) = decode_klines([KLINE_ROW])
    daily = row_candle(
        "BNBBTC", Interval.W1, row, closed=True, source=Source.BACKFILL, unit=NANOS_PER_MILLI
    )
    assert daily.close_time - daily.open_time == 7 * 86_400 * 10**9
    assert daily.quote_volume == Decimal("2434.19055334") and daily.trade_count == 308

    book = BookTicker.model_validate(BOOK_TICKER)
    price = quote(book, time=5, receive_time=6, last=Decimal("25.36"), source=Source.LIVE)
    assert (price.bid, price.ask, price.bid_size, price.ask_size) == (
        Decimal("25.35190000"),
        Decimal("25.36520000"),
        Decimal("31.21000000"),
        Decimal("40.66000000"),
    )


def test_malformed_klines_answer_is_a_protocol_error() -> None:
    with pytest.raises(BinanceError):
        decode_klines([["soon", "1"]])
    with pytest.raises(BinanceError):
        decode_klines({"code": -1121})


def test_exchange_info_gives_precision_and_weight_limit() -> None:
    info = ExchangeInfo.model_validate(
        {
            "timezone": "UTC",
            "serverTime": 1565246363776,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": 6000,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            ],
            "exchangeFilters": [],
            "symbols": [
                {
                    "symbol": "ETHBTC",
                    "status": "TRADING",
                    "baseAsset": "ETH",
                    "quoteAsset": "BTC",
                    "filters": [
                        {
                            "filterType": "PRICE_FILTER",
                            "minPrice": "0.00000100",
                            "tickSize": "0.00000100",
                        },
                        {
                            "filterType": "LOT_SIZE",
                            "minQty": "0.00010000",
                            "stepSize": "0.00010000",
                        },
                    ],
                }
            ],
        }
    )
    assert weight_limit(info) == 6000
    eth = instrument(info.symbols[0])
    assert (eth.base_asset, eth.quote_asset, eth.price_precision, eth.quantity_precision) == (
        "ETH",
        "BTC",
        6,
        4,
    )
    assert [precision(Decimal(s)) for s in ("0.01000000", "1.00000000", "10.00")] == [2, 0, 0]


def test_stream_names_are_lowercase_binance_names() -> None:
    assert stream_names("BTCUSDT", [Interval.S1, Interval.MO1]) == [
        "btcusdt@kline_1s",
        "btcusdt@kline_1M",
        "btcusdt@bookTicker",
        "btcusdt@trade",
    ]


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_rate_limiter_paces_to_the_next_minute() -> None:
    clock = FakeClock(1_699_999_990.0)  # 10 s into a minute
    limiter = RateLimiter(share=0.5, limit=100, clock=clock, sleep=clock.sleep)
    assert limiter.budget == 50
    for _ in range(25):
        await limiter.acquire(2)
    assert clock.sleeps == [] and limiter.used == 50
    await limiter.acquire(2)  # over budget: waits for the next minute
    assert clock.sleeps == [pytest.approx(50.01)]
    assert limiter.used == 2


async def test_rate_limiter_takes_the_servers_count() -> None:
    clock = FakeClock(1_700_000_000.0)
    limiter = RateLimiter(share=0.5, limit=100, clock=clock, sleep=clock.sleep)
    await limiter.acquire(2)
    limiter.observe(49)  # other processes on this IP used weight too
    await limiter.acquire(2)
    assert len(clock.sleeps) == 1


async def test_rate_limiter_pauses_and_bans() -> None:
    clock = FakeClock()
    limiter = RateLimiter(share=1.0, clock=clock, sleep=clock.sleep)
    limiter.pause(3)
    await limiter.acquire(1)
    assert clock.sleeps == [3]
    limiter.ban(120)
    assert limiter.banned_for == 120
    await limiter.acquire(1)
    assert clock.sleeps == [3, 120] and limiter.banned_for == 0


def rest(handler: Callable[[httpx.Request], httpx.Response]) -> tuple[BinanceHttp, FakeClock]:
    clock = FakeClock()
    limiter = RateLimiter(share=1.0, clock=clock, sleep=clock.sleep)
    client = BinanceHttp(
        "https://api.example", transport=httpx.MockTransport(handler), limiter=limiter
    )
    return client, clock


async def test_rest_waits_out_429_and_418() -> None:
    answers = [
        httpx.Response(429, headers={"Retry-After": "7"}, json={"code": -1003, "msg": "slow"}),
        httpx.Response(418, headers={"Retry-After": "30"}, json={"code": -1003, "msg": "banned"}),
        httpx.Response(200, json=[KLINE_ROW], headers={"X-MBX-USED-WEIGHT-1M": "42"}),
    ]
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return answers.pop(0)

    client, clock = rest(handler)
    rows = await client.klines("BNBBTC", "1m", start_ms=1, limit=5)
    await client.aclose()
    assert rows == decode_klines([KLINE_ROW])
    assert clock.sleeps == [7, 30]
    assert client.limiter.used == 42
    assert (
        seen[0] == "https://api.example/api/v3/klines?symbol=BNBBTC&interval=1m&limit=5&startTime=1"
    )


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (httpx.Response(503, text="busy"), BinanceUnavailable),
        (httpx.Response(403, text="waf"), BinanceUnavailable),
        (httpx.Response(400, json={"code": -1121, "msg": "Invalid symbol."}), BinanceError),
        (httpx.Response(200, text="<html>"), BinanceError),
    ],
)
async def test_rest_errors_are_mapped(response: httpx.Response, error: type[Exception]) -> None:
    client, _ = rest(lambda request: response)
    with pytest.raises(error) as raised:
        await client.klines("BNBBTC", "1m")
    await client.aclose()
    if response.status_code == 400:
        assert isinstance(raised.value, BinanceError) and raised.value.code == -1121


async def test_rest_transport_errors_are_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client, _ = rest(handler)
    with pytest.raises(BinanceUnavailable, match="ConnectError"):
        await client.exchange_info(["BNBBTC"])
    await client.aclose()


async def test_recent_klines_pages_backwards_and_since_pages_forwards() -> None:
    opens = list(range(0, 2500 * 60_000, 60_000))

    def handler(request: httpx.Request) -> httpx.Response:
        params = request.url.params
        limit = int(params["limit"])
        times = opens
        if "startTime" in params:
            times = [t for t in times if t >= int(params["startTime"])][:limit]
        else:
            if "endTime" in params:
                times = [t for t in times if t <= int(params["endTime"])]
            times = times[-limit:]
        rows = [[t, "1", "1", "1", "1", "0", t + 59_999, "0", 0, "0", "0", "0"] for t in times]
        return httpx.Response(200, json=rows)

    client, _ = rest(handler)
    recent = await client.recent_klines("BNBBTC", "1m", 2200)
    since = await client.klines_since("BNBBTC", "1m", opens[300])
    everything = await client.recent_klines("BNBBTC", "1m", 5000)
    await client.aclose()
    assert [r.openTime for r in recent] == opens[-2200:]
    assert [r.openTime for r in since] == opens[300:]
    assert [r.openTime for r in everything] == opens


def test_network_errors_are_retried_and_others_surfaced() -> None:
    def status(code: int) -> InvalidStatus:
        return InvalidStatus(Response(code, "", Headers()))

    assert is_retryable(OSError("reset"))
    assert is_retryable(TimeoutError())
    assert is_retryable(ConnectionClosedError(None, None))
    assert is_retryable(BinanceUnavailable("down"))
    assert is_retryable(status(503)) and is_retryable(status(429))
    assert not is_retryable(status(400))
    assert not is_retryable(InvalidURI("x", "bad"))
    assert not is_retryable(BinanceError("malformed"))
    assert not is_retryable(KeyError("bug"))
