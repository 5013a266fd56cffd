"""Try the Binance feed against the real Binance, by hand. The test suite never runs this.

    python tests/manual/try_binance.py --symbols BTCUSDT,ETHUSDT --intervals 1s,1m --seconds 90

It starts the whole service in this process (gRPC on a free local port) with
``feed=binance`` and the public endpoints (or ``--rest-url`` / ``--ws-url``),
subscribes to every (symbol, interval), prints each closed candle and the
prices every few seconds, and at the end checks that each series it received
is contiguous (no gap, no duplicate). Ctrl-C stops it early. It needs network
access to api.binance.com and stream.binance.com (no API key).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import sys
import time

import grpc

from candlewire.app import App
from candlewire.config import load
from candlewire.domain import Interval
from candlewire.intervals import bucket_end
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", default="BTCUSDT,ETHUSDT")
    parser.add_argument("--intervals", default="1s,1m")
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--history", type=int, default=120)
    parser.add_argument("--rest-url", default="https://api.binance.com")
    parser.add_argument("--ws-url", default="wss://stream.binance.com:9443")
    parser.add_argument("--verbose", action="store_true")
    return parser.parse_args()


async def _watch(app: App, args: argparse.Namespace) -> int:
    symbols = [s.strip().upper() for s in args.symbols.split(",")]
    intervals = [Interval.parse(i.strip()) for i in args.intervals.split(",")]
    request = pb.SubscribeCandlesRequest(
        series=[pb.Series(symbol=s, interval=int(i)) for s in symbols for i in intervals],  # type: ignore[arg-type]
        history=5,
    )
    closed: dict[tuple[str, int], list[int]] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
        listed = await stub.ListSymbols(pb.ListSymbolsRequest())
        for info in listed.symbols:
            print(
                f"{info.symbol}: {info.base_asset}/{info.quote_asset}, "
                f"price precision {info.price_precision}, quantity {info.quantity_precision}"
            )
        call = stub.SubscribeCandles(request)
        deadline = time.monotonic() + args.seconds
        next_price = 0.0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.seconds):
                async for response in call:
                    if response.WhichOneof("event") == "snapshot_end":
                        print("-- history sent; live from here")
                    candle = response.candle
                    if response.WhichOneof("event") == "candle" and candle.closed:
                        key = (candle.symbol, candle.interval)
                        closed.setdefault(key, []).append(candle.open_time.ToNanoseconds())
                        print(
                            f"{candle.symbol} {Interval(candle.interval).label:>3} "
                            f"{candle.open_time.ToJsonString()} o={candle.open} h={candle.high} "
                            f"l={candle.low} c={candle.close} v={candle.volume} "
                            f"n={candle.trade_count} rev={candle.revision} "
                            f"{pb.Source.Name(candle.source)}"
                        )
                    if time.monotonic() >= next_price:
                        next_price = time.monotonic() + 5
                        prices = await stub.BatchGetPrices(
                            pb.BatchGetPricesRequest(symbols=symbols)
                        )
                        for price in prices.prices:
                            print(
                                f"   {price.symbol} bid {price.bid} ask {price.ask} "
                                f"last {price.last} stale={price.stale}"
                            )
                        feed_status = getattr(app.feed, "status", None)
                        if feed_status is not None:
                            print(f"   feed status: {feed_status()}")
                    if time.monotonic() >= deadline:
                        break
        call.cancel()
    problems = 0
    for (symbol, interval), opens in sorted(closed.items()):
        unique = sorted(set(opens))
        gaps = [
            (a, b) for a, b in itertools.pairwise(unique) if bucket_end(Interval(interval), a) != b
        ]
        if gaps or len(unique) != len(opens):
            problems += 1
        print(
            f"{symbol}@{Interval(interval).label}: {len(unique)} closed candles, "
            f"{len(opens) - len(unique)} repeated closes, {len(gaps)} gaps"
        )
    return 1 if problems else 0


async def _main(args: argparse.Namespace) -> int:
    settings = load(
        feed="binance",
        symbols=args.symbols,
        intervals=args.intervals,
        grpc_listen="127.0.0.1:0",
        binance_rest_url=args.rest_url,
        binance_ws_url=args.ws_url,
        binance_history=args.history,
        shutdown_grace=1.0,
    )
    async with App(settings) as app:
        return await _watch(app, args)


if __name__ == "__main__":
    arguments = _arguments()
    logging.basicConfig(
        level=logging.DEBUG if arguments.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(asyncio.run(_main(arguments)))
