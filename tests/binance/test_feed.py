"""The Binance feed built from settings: start-up validation, history, live data, prices."""

from __future__ import annotations

from decimal import Decimal

import grpc
import pytest

from candlewire.domain import Interval
from candlewire.errors import ConfigError
from candlewire.feeds.binance import BinanceConfig, BinanceFeed
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc
from tests.binance.exchange import (
    MS,
    T0,
    Exchange,
    SymbolSpec,
    candle_key,
    collecting,
    make_tape,
    serving,
    truth_of,
)
from tests.scripted import running

SPECS = [
    SymbolSpec("BTCUSDT", "BTC", "USDT", tick="0.01000000", step="0.00001000"),
    SymbolSpec("ETHUSDT", "ETH", "USDT", tick="0.01000000", step="0.00010000"),
    SymbolSpec("LUNAUSDT", "LUNA", "USDT", status="BREAK"),
]


async def test_settings_build_a_feed_that_serves_symbols_prices_and_candles() -> None:
    symbols = ("BTCUSDT", "ETHUSDT")
    series = [(s, i) for s in symbols for i in (Interval.M1, Interval.M5)]
    tape = make_tape(symbols, T0 - 600_000, T0 + 120_000, seed=3)
    async with (
        Exchange(tape, SPECS, weight_limit=1200) as exchange,
        serving(
            feed="binance",
            symbols="BTCUSDT,ETHUSDT",
            intervals="1m,5m",
            binance_rest_url=exchange.rest_url,
            binance_ws_url=exchange.ws_url,
            binance_weight_share=0.25,
        ) as app,
    ):
        feed = app.feed
        assert isinstance(feed, BinanceFeed)
        assert feed.config.rest_url == exchange.rest_url
        assert feed.limiter.budget == 300  # a quarter of exchangeInfo's REQUEST_WEIGHT
        await exchange.until(lambda: exchange.connections == 1, "a connection")
        async with (
            collecting(app, series) as collector,
            grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
        ):
            stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
            listed = {
                s.symbol: s for s in (await stub.ListSymbols(pb.ListSymbolsRequest())).symbols
            }
            assert set(listed) == set(symbols)
            btc = listed["BTCUSDT"]
            assert (btc.base_asset, btc.quote_asset) == ("BTC", "USDT")
            assert (btc.price_precision, btc.quantity_precision) == (2, 5)
            assert listed["ETHUSDT"].quantity_precision == 4
            assert btc.source == pb.SOURCE_LIVE

            for t in range(T0 + 2_000, T0 + 90_001, 2_000):
                await exchange.advance(t)
            await collector.until_equal(truth_of(exchange, series))

            last = [t for t in exchange.tape if t.symbol == "BTCUSDT" and t.time <= exchange.now][
                -1
            ]
            price = (await stub.GetPrice(pb.GetPriceRequest(symbol="BTCUSDT"))).price
            assert price.last == float(last.price)
            tick = Decimal("0.01")
            assert (price.bid, price.ask) == (float(last.price - tick), float(last.price + tick))
            assert (price.bid_size, price.ask_size) == (1.5, 2.5)
            assert last.time <= price.event_time.ToMilliseconds() <= exchange.now
            assert price.source == pb.SOURCE_LIVE
        assert feed.status() == (True, "ok")


async def test_history_pages_past_1000_klines() -> None:
    tape = make_tape(["BTCUSDT"], T0 - 3_000_000, T0 + 10_000, seed=4)
    async with Exchange(tape, SPECS[:1]) as exchange:
        config = BinanceConfig(rest_url=exchange.rest_url, ws_url=exchange.ws_url, history=2500)
        feed = BinanceFeed(["BTCUSDT"], (Interval.S1, Interval.M1), config)
        async with running(feed, symbols="BTCUSDT", intervals="1s,1m") as app:
            await exchange.until(lambda: exchange.connections == 1, "a connection")
            bootstrap = [
                r.params for r in exchange.kline_requests() if r.params["interval"] == "1s"
            ]
            pages = bootstrap[:3]
            assert [p["limit"] for p in pages] == ["1000", "1000", "500"]
            assert "endTime" not in pages[0]
            truth = exchange.truth("BTCUSDT", Interval.S1)
            first = truth[-2500].open_time
            assert int(pages[1]["endTime"]) == truth[-1000].open_time - 1
            assert int(pages[2]["endTime"]) == truth[-2000].open_time - 1
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
                stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
                got = []
                request = pb.GetCandlesRequest(
                    symbol="BTCUSDT",
                    interval=pb.INTERVAL_1S,
                    page_size=1000,
                )
                request.start_time.FromNanoseconds(0)
                while True:
                    response = await stub.GetCandles(request)
                    got += [candle_key(c) for c in response.candles]
                    if not response.next_page_token:
                        break
                    request.page_token = response.next_page_token
            assert got == [k.key() for k in truth[-2500:]]
            assert got[0][0] == first * MS


@pytest.mark.parametrize(
    ("symbols", "message"),
    [
        ("BTCUSDT,NOPEUSDT", "NOPEUSDT"),
        ("BTCUSDT,LUNAUSDT", r"LUNAUSDT is not trading \(status BREAK\)"),
    ],
)
async def test_unknown_or_halted_symbol_stops_the_start(symbols: str, message: str) -> None:
    async with Exchange([], SPECS) as exchange:
        with pytest.raises(ConfigError, match=message):
            async with serving(
                feed="binance",
                symbols=symbols,
                binance_rest_url=exchange.rest_url,
                binance_ws_url=exchange.ws_url,
            ):
                pass
        assert exchange.connections == 0
        assert exchange.kline_requests() == []
