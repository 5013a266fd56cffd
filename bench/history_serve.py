"""The read path under test: MarketDataService over the memory store and the
PostgreSQL history tier (:class:`~candlewire.history.tiered.TieredStore`).

    python bench/history_serve.py --postgres-url URL --symbol BTCUSDT

The hot store holds ``--hot`` 1m candles of ``--symbol`` ending now; history
is whatever the database holds. Prints ``PORT <n>`` once gRPC listens; runs
until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import run_on_loop

from candlewire.api.server import ApiServer
from candlewire.api.servicer import Catalog, Limits, MarketDataServicer
from candlewire.domain import Candle, Instrument, Interval, Source
from candlewire.history import HistoryStore
from candlewire.history.tiered import TieredStore
from candlewire.hub import Hub
from candlewire.intervals import bucket_start
from candlewire.store.memory import MemoryStore

MIN = 60 * 10**9


async def main(args: argparse.Namespace) -> None:
    history = HistoryStore(args.postgres_url, pool_size=4)
    await history.connect()
    memory = MemoryStore(retention=args.hot)
    last = bucket_start(Interval.M1, time.time_ns())
    price = Decimal("50000.00")
    candles = [
        Candle(args.symbol, Interval.M1, t, t + MIN, price, price + 5, price - 5, price + 1,
               Decimal("1.25"), Decimal("62500.5"), 42, t != last, 0, Source.LIVE)
        for t in range(last - (args.hot - 1) * MIN, last + MIN, MIN)
    ]  # fmt: skip
    await memory.write_candles(candles)
    catalog = Catalog(
        {args.symbol: Instrument(args.symbol, "BTC", "USDT", 2, 5, Source.LIVE)}, (Interval.M1,)
    )
    servicer = MarketDataServicer(TieredStore(memory, history), Hub(), catalog, Limits())
    server = ApiServer(servicer, "127.0.0.1:0")
    await server.start()
    await server.set_ready(True)
    print(f"PORT {server.port}", flush=True)
    await asyncio.to_thread(sys.stdin.read)
    await server.stop(0)
    await history.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres-url", required=True)
    parser.add_argument("--symbol", default="BTCUSDT")
    parser.add_argument("--hot", type=int, default=5000)
    run_on_loop(main(parser.parse_args()), [])
