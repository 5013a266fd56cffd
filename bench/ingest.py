"""Ingest throughput on one core: aggregation, the full ingest path, store writes.

    python bench/ingest.py [--quick] [--json]     # run.py pins it with taskset

* aggregator: ``bench_aggregate.py``'s synthetic tape (300 trades/s of one
  symbol, a little out of order) through ``SymbolAggregator`` for all 16
  intervals, in batches of 1,000 trades (best of 3);
* ingestor: the same tape through ``Ingestor.trades`` (aggregation, memory
  store, hub publish with no subscribers), in backfill-sized batches of
  1,000 trades and in live-sized batches of one trade;
* store: the candle versions the aggregator emitted for one-trade batches
  (16 or more per trade), written to a fresh ``MemoryStore`` in the same
  batches: candle updates per second; and the same to a ``RedisStore`` on a
  ``redis-server`` this script starts on a free port (no persistence), when
  ``redis-server`` is on PATH, in one-trade batches (a live feed: one round
  trip per batch) and in batches of 1,000 trades (a backfill).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import free_port
from bench_aggregate import make_batches, run_aggregator

from candlewire.aggregate import AggregatorConfig, SymbolAggregator
from candlewire.domain import NANOS_PER_SECOND, Candle, Interval, Source, Trade
from candlewire.errors import StoreUnavailable
from candlewire.flow.ingest import Ingestor
from candlewire.hub import Hub
from candlewire.store.base import Store
from candlewire.store.memory import MemoryStore
from candlewire.store.redis import RedisStore

CONFIG = AggregatorConfig(tuple(Interval), lateness=NANOS_PER_SECOND)


def _rebatch(batches: list[list[Trade]], size: int) -> list[list[Trade]]:
    trades = [t for b in batches for t in b]
    return [trades[i : i + size] for i in range(0, len(trades), size)]


async def _ingest(batches: list[list[Trade]]) -> tuple[float, int]:
    store = MemoryStore()
    ingestor = Ingestor(store, Hub(), ["BTCUSDT"], CONFIG, Source.SIMULATED)
    started = time.perf_counter()
    for batch in batches:
        await ingestor.trades(batch)
    return time.perf_counter() - started, ingestor.candles_out


async def _store(
    emitted: Sequence[Sequence[Candle]], store: Store | None = None
) -> tuple[float, int]:
    store = store or MemoryStore()
    written = 0
    started = time.perf_counter()
    for candles in emitted:
        written += len(await store.write_candles(candles))
    return time.perf_counter() - started, written


def run(*, quick: bool) -> dict[str, Any]:
    count = 60_000 if quick else 200_000
    repeats = 2 if quick else 3
    batches = make_batches(count, 1_000, per_second=300)
    agg_seconds, emitted = min(run_aggregator(batches) for _ in range(repeats))
    result: dict[str, Any] = {
        "trades": count,
        "aggregator_trades_per_s": count / agg_seconds,
        "aggregator_candles": emitted,
    }
    big = min(asyncio.run(_ingest(batches)) for _ in range(repeats))
    result["ingest_batch1000_trades_per_s"] = count / big[0]
    result["ingest_batch1000_updates_per_s"] = big[1] / big[0]
    live_count = count // 4
    singles = _rebatch(batches, 1)[:live_count]
    small = min(asyncio.run(_ingest(singles)) for _ in range(repeats))
    result["ingest_batch1_trades_per_s"] = live_count / small[0]
    result["ingest_batch1_updates_per_s"] = small[1] / small[0]
    aggregator = SymbolAggregator("BTCUSDT", CONFIG, Source.SIMULATED)
    emitted_lists = [aggregator.add_trades(b) for b in singles]
    store_seconds, written = min(asyncio.run(_store(emitted_lists)) for _ in range(repeats))
    result["store_updates_per_s"] = written / store_seconds
    result["store_updates"] = written
    result.update(_redis(emitted_lists[: len(emitted_lists) // (4 if quick else 2)], batches))
    return result


async def _redis_writes(url: str, prefix: str, emitted: Sequence[Sequence[Candle]]) -> float:
    store = RedisStore(url, prefix=prefix)
    await store.connect()
    try:
        seconds, written = await _store(emitted, store)
    finally:
        await store.close()
    return written / seconds


def _redis(singles: list[list[Candle]], batches: list[list[Trade]]) -> dict[str, Any]:
    """Candle updates/s written to a RedisStore on a private redis-server."""
    server = shutil.which("redis-server")
    if server is None:
        return {"redis": "not measured: redis-server is not on PATH"}
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="cw-redis-") as tmp:
        argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", tmp, "--loglevel", "warning"]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            deadline = time.monotonic() + 10
            while True:  # until it accepts connections
                try:
                    asyncio.run(_redis_writes(url, "cw:probe:", []))
                    break
                except StoreUnavailable:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.05)
            aggregator = SymbolAggregator("BTCUSDT", CONFIG, Source.SIMULATED)
            big = [aggregator.add_trades(b) for b in batches[: max(1, len(batches) // 4)]]
            return {
                "redis_batch1_updates_per_s": asyncio.run(_redis_writes(url, "cw:a:", singles)),
                "redis_batch1_updates": sum(map(len, singles)),
                "redis_batch1000_updates_per_s": asyncio.run(_redis_writes(url, "cw:b:", big)),
                "redis_batch1000_updates": sum(map(len, big)),
            }
        finally:
            proc.terminate()
            proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(quick=args.quick)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:32} {value:12,.0f}" if isinstance(value, float | int) else value)


if __name__ == "__main__":
    main()
