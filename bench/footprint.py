"""Footprint: memory per stored candle and time to readiness.

    python bench/footprint.py candles [--series-symbols 20] [--per-series 5000]
    python bench/footprint.py ready

``candles`` fills a fresh ``MemoryStore`` (this process) with 20 symbols x
16 intervals x 5,000 candles, written in batches of 1,000 as a backfill
would, and divides the growth of resident memory by the number of candles.
The store's whole footprint counts: encoded frames, index arrays and the
update log that resume tokens replay from. Prints one JSON line.

``ready`` starts ``candlewire serve`` with the embedded defaults (only the
gRPC port changed) and reports the seconds from process start to liveness
and to readiness SERVING (``marketdata.v1.MarketDataService``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SYMBOLS, free_port, rss_bytes, spawn, wait_serving

from candlewire.domain import NANOS_PER_SECOND, Candle, Interval, Source
from candlewire.store.memory import MemoryStore

START = 1_700_000_000 * NANOS_PER_SECOND


def _series(symbol: str, interval: Interval, count: int) -> list[Candle]:
    step = 60 * NANOS_PER_SECOND
    price = Decimal("65000.00")
    tick = Decimal("0.01")
    candles = []
    for i in range(count):
        open_ = price + (i % 97) * tick
        close = price + (i % 89) * tick
        candles.append(
            Candle(
                symbol,
                interval,
                START + i * step,
                START + (i + 1) * step,
                open_,
                max(open_, close) + 3 * tick,
                min(open_, close) - 2 * tick,
                close,
                Decimal("1.23456") + i % 50,
                (Decimal("1.23456") + i % 50) * close,
                37 + i % 300,
                True,
                i % 7,
                Source.SIMULATED,
            )
        )
    return candles


async def fill(symbols: int, per_series: int) -> dict[str, float]:
    store = MemoryStore(retention=per_series)
    sample = _series(SYMBOLS[0], Interval.M1, 10)
    await MemoryStore().write_candles(sample)  # warm imports and caches
    del sample
    gc.collect()
    before = rss_bytes()
    frame_bytes = 0
    total = 0
    for symbol in SYMBOLS[:symbols]:
        for interval in Interval:
            candles = _series(symbol, interval, per_series)
            for i in range(0, len(candles), 1000):
                updates = await store.write_candles(candles[i : i + 1000])
                frame_bytes += sum(len(u.frame) for u in updates)
                total += len(updates)
            del candles, updates
    gc.collect()
    after = rss_bytes()
    # A full collection walks every tracked object: what the store adds to
    # every gen-2 pause of the server (the event loop stops meanwhile).
    started = time.perf_counter()
    gc.collect()
    pause = time.perf_counter() - started
    return {
        "gc_tracked_objects": len(gc.get_objects()),
        "full_gc_ms": pause * 1000,
        "candles": total,
        "rss_growth": after - before,
        "bytes_per_candle": (after - before) / total,
        "frame_bytes_mean": frame_bytes / total,
    }


def ready() -> dict[str, float]:
    port = free_port()
    argv = [
        str(Path(sys.executable).with_name("candlewire")),
        "serve",
        "--grpc-listen",
        f"127.0.0.1:{port}",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLEWIRE_")}
    started = time.monotonic()
    with spawn(argv, env=env):
        live = wait_serving(port, timeout=60) - started
        serving = wait_serving(port, service="marketdata.v1.MarketDataService", timeout=60)
    return {"liveness_s": live, "ready_s": serving - started}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("candles", "ready"))
    parser.add_argument("--series-symbols", type=int, default=20)
    parser.add_argument("--per-series", type=int, default=5000)
    args = parser.parse_args()
    if args.what == "candles":
        print(json.dumps(asyncio.run(fill(args.series_symbols, args.per_series))))
    else:
        print(json.dumps(ready()))


if __name__ == "__main__":
    main()
