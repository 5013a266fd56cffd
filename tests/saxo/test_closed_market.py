"""A closed market is a gap in the candles, not a run of flat ones."""

from __future__ import annotations

from decimal import Decimal

from candlewire.aggregate import AggregatorConfig, SymbolAggregator
from candlewire.domain import Interval, Source, Trade

S = 1_000_000_000
FRIDAY = 1_767_996_000 * S  # 2026-01-09T22:00:00Z, a Friday: FX closes
SUNDAY = FRIDAY + 48 * 3600 * S  # 2026-01-11T22:00:00Z: FX opens again


def _tick(time: int, price: str) -> Trade:
    return Trade("EURUSD", time, Decimal(price), Decimal(0), Source.LIVE)


def _run(skip: bool) -> dict[int, tuple[int, Decimal, int, bool]]:
    aggregator = SymbolAggregator(
        "EURUSD", AggregatorConfig((Interval.M1, Interval.H1)), Source.LIVE
    )
    latest: dict[tuple[Interval, int], tuple[int, Decimal, int, bool]] = {}
    for candle in aggregator.add_trades(
        [_tick(FRIDAY - 90 * S, "1.1001"), _tick(FRIDAY - 30 * S, "1.1003")]
    ):
        latest[(candle.interval, candle.open_time)] = (
            candle.revision,
            candle.close,
            candle.trade_count,
            candle.closed,
        )
    if skip:
        aggregator.skip_gap()
    for candle in aggregator.add_trades([_tick(SUNDAY + 10 * S, "1.1010")]):
        latest[(candle.interval, candle.open_time)] = (
            candle.revision,
            candle.close,
            candle.trade_count,
            candle.closed,
        )
    return {t: v for (i, t), v in latest.items() if i is Interval.M1}


def test_no_flat_candles_over_a_closure() -> None:
    candles = _run(skip=True)
    assert sorted(candles) == [FRIDAY - 120 * S, FRIDAY - 60 * S, SUNDAY]
    assert candles[FRIDAY - 60 * S][1:] == (Decimal("1.1003"), 1, True)  # closed by the reopening
    assert candles[SUNDAY][1:] == (Decimal("1.1010"), 1, False)


def test_without_the_closure_the_gap_is_filled() -> None:
    candles = _run(skip=False)
    assert len(candles) == 2 + 48 * 60 + 1  # the control: zero-tick candles in between
    assert candles[FRIDAY][1:] == (Decimal("1.1003"), 0, True)
