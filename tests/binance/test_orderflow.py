"""Binance order flow through the local exchange: ``@trade`` events become
trades with the aggressor side (``m``, the buyer is the maker, means the
aggressor sold), and klines carry the taker-buy volumes as buy volumes."""

from __future__ import annotations

import grpc

from candlewire.domain import Interval
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc
from tests.binance.exchange import (
    T0,
    Exchange,
    SymbolSpec,
    collecting,
    make_tape,
    serving,
    truth_of,
)
from tests.trading import read_trades

SPECS = [SymbolSpec("BTCUSDT", "BTC", "USDT", tick="0.01000000", step="0.00001000")]


async def test_trades_carry_the_aggressor_side_and_klines_the_taker_buy_volume() -> None:
    series = [("BTCUSDT", Interval.M1)]
    tape = make_tape(["BTCUSDT"], T0 - 300_000, T0 + 60_000, seed=5)
    async with (
        Exchange(tape, SPECS) as exchange,
        serving(
            feed="binance",
            symbols="BTCUSDT",
            intervals="1m",
            binance_rest_url=exchange.rest_url,
            binance_ws_url=exchange.ws_url,
        ) as app,
    ):
        await exchange.until(lambda: exchange.connections == 1, "a connection")
        async with (
            collecting(app, series) as collector,
            grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
        ):
            stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
            call = stub.SubscribeTrades(pb.SubscribeTradesRequest(symbols=["BTCUSDT"]))
            await read_trades(call, 1)  # snapshot_end: nothing recorded before the stream
            start = exchange.now
            for t in range(T0 + 5_000, T0 + 60_001, 5_000):
                await exchange.advance(t)
            await collector.until_equal(truth_of(exchange, series))
            sent = [t for t in exchange.tape if start < t.time <= exchange.now]
            assert any(t.buyer_maker for t in sent) and not all(t.buyer_maker for t in sent)
            got = [r.trade for r in await read_trades(call, len(sent))]
            call.cancel()
            assert [
                (g.trade_id, g.price, g.quantity, g.event_time.ToMilliseconds()) for g in got
            ] == [(str(t.id), float(t.price), float(t.qty), t.time) for t in sent]
            assert [g.side for g in got] == [
                pb.AGGRESSOR_SIDE_SELL if t.buyer_maker else pb.AGGRESSOR_SIDE_BUY for t in sent
            ]
            assert all(g.source == pb.SOURCE_LIVE and g.receive_time.seconds for g in got)

            candles = (
                await stub.GetCandles(
                    pb.GetCandlesRequest(symbol="BTCUSDT", interval=pb.INTERVAL_1M, page_size=20)
                )
            ).candles
            truth = {k.open_time: k for k in exchange.truth("BTCUSDT", Interval.M1)}
            assert len(candles) >= 5
            assert any(c.buy_volume for c in candles)
            for candle in candles:
                kline = truth[candle.open_time.ToMilliseconds()]
                assert (candle.buy_volume, candle.buy_quote_volume) == (
                    float(kline.taker_volume),
                    float(kline.taker_quote),
                )
                assert candle.buy_volume <= candle.volume
