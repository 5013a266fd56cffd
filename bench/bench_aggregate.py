"""Throughput of SymbolAggregator: synthetic trades through all 16 intervals.

Run with ``PYTHONPATH=server python bench/bench_aggregate.py [trades] [batch]``.
Prints trades per second for the aggregator and for a do-nothing loop over the
same batches (the cost of merely touching every trade), and their ratio.
"""

from __future__ import annotations

import random
import sys
import time
from decimal import Decimal

from candlewire.aggregate import AggregatorConfig, SymbolAggregator
from candlewire.domain import NANOS_PER_SECOND, Interval, Source, Trade

START = 1_709_251_200 * NANOS_PER_SECOND  # 2024-03-01T00:00:00Z


def make_batches(count: int, batch: int, per_second: int) -> list[list[Trade]]:
    """``count`` trades, ``per_second`` a second, a little out of order, in batches."""
    rng = random.Random(42)
    step = NANOS_PER_SECOND // per_second
    price = 65_000.0
    trades = []
    for i in range(count):
        price = max(1.0, price + rng.gauss(0.0, 5.0))
        jitter = rng.randrange(0, 50 * 1_000_000)  # up to 50 ms out of order
        trades.append(
            Trade(
                "BTCUSDT",
                START + i * step + jitter,
                Decimal(f"{price:.2f}"),
                Decimal(rng.randrange(1, 100_000)).scaleb(-5),
                Source.SIMULATED,
            )
        )
    return [trades[i : i + batch] for i in range(0, count, batch)]


def run_aggregator(batches: list[list[Trade]]) -> tuple[float, int]:
    config = AggregatorConfig(tuple(Interval), lateness=NANOS_PER_SECOND)
    aggregator = SymbolAggregator("BTCUSDT", config, Source.SIMULATED)
    emitted = 0
    started = time.perf_counter()
    for batch in batches:
        emitted += len(aggregator.add_trades(batch))
    return time.perf_counter() - started, emitted


def run_baseline(batches: list[list[Trade]]) -> float:
    started = time.perf_counter()
    volume = Decimal(0)
    for batch in batches:
        for trade in batch:
            volume = trade.quantity  # touch every trade, nothing else
    del volume
    return time.perf_counter() - started


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000
    batches = make_batches(count, batch, per_second=300)
    seconds = [run_aggregator(batches) for _ in range(3)]
    best, emitted = min(seconds)
    baseline = min(run_baseline(batches) for _ in range(3))
    print(f"{count:,} trades in batches of {batch:,}, all {len(Interval)} intervals")
    print(f"aggregator: {count / best:,.0f} trades/s ({emitted:,} candle snapshots emitted)")
    print(f"baseline:   {count / baseline:,.0f} trades/s (do-nothing loop)")
    print(f"ratio:      {best / baseline:.1f}x the do-nothing loop")


if __name__ == "__main__":
    main()
