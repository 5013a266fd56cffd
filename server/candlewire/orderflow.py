"""Order-flow analytics over trades: volume profile and footprint. Pure.

A *price level* of step ``s`` holds the trades with ``k*s <= price <
(k+1)*s`` and is named by its lower bound ``k*s``. Its volume is split by
the aggressor side (buy, sell, unknown). The *profile* is the levels of a
set of trades; the *footprint* is the profile of each candle of an interval
(trades bucketed by event time, as candles are). Arithmetic is exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, localcontext

from candlewire.domain import Interval, Side
from candlewire.intervals import bucket_end, bucket_start

__all__ = ["FootprintCandle", "Level", "TapeTrade", "footprint", "level_of", "profile"]

_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
_DIVIDE = Context(prec=400, Emax=MAX_EMAX, Emin=MIN_EMIN)
_ZERO = Decimal(0)

TapeTrade = tuple[int, Decimal, Decimal, Side]
"""(event time, price, quantity, aggressor side)."""


@dataclass(slots=True)
class Level:
    """The volume traded at prices ``[price, price + step)``."""

    price: Decimal
    buy: Decimal = _ZERO
    sell: Decimal = _ZERO
    unknown: Decimal = _ZERO
    count: int = 0

    @property
    def volume(self) -> Decimal:
        return self.buy + self.sell + self.unknown

    @property
    def delta(self) -> Decimal:
        return self.buy - self.sell


@dataclass(slots=True)
class FootprintCandle:
    open_time: int
    close_time: int
    levels: list[Level] = field(default_factory=list)


def level_of(price: Decimal, step: Decimal) -> Decimal:
    """The lower bound of the level of ``price``: ``floor(price / step) * step``
    (an integer division, exact; the quotient has few digits)."""
    with localcontext(_DIVIDE):
        whole, rest = divmod(price, step)
        if rest and (rest < 0) != (step < 0):
            whole -= 1
    with localcontext(_EXACT):
        return whole * step


def _add(levels: dict[Decimal, Level], price: Decimal, quantity: Decimal, side: Side) -> None:
    level = levels.get(price)
    if level is None:
        level = levels[price] = Level(price)
    if side is Side.BUY:
        level.buy += quantity
    elif side is Side.SELL:
        level.sell += quantity
    else:
        level.unknown += quantity
    level.count += 1


def profile(trades: Iterable[TapeTrade], step: Decimal) -> list[Level]:
    """The levels of ``trades``, ascending by price; levels without trades are left out."""
    if not step.is_finite() or step <= 0:
        raise ValueError(f"price step must be a positive number, got {step}")
    levels: dict[Decimal, Level] = {}
    of: dict[Decimal, Decimal] = {}  # price -> its level (prices repeat)
    with localcontext(_EXACT):
        for _, price, quantity, side in trades:
            level = of.get(price)
            if level is None:
                level = of[price] = level_of(price, step)
            _add(levels, level, quantity, side)
    return [levels[p] for p in sorted(levels)]


def footprint(
    trades: Iterable[TapeTrade], step: Decimal, interval: Interval
) -> list[FootprintCandle]:
    """The profile of each candle of ``interval`` that has trades, ascending by open time."""
    if not step.is_finite() or step <= 0:
        raise ValueError(f"price step must be a positive number, got {step}")
    candles: dict[int, dict[Decimal, Level]] = {}
    with localcontext(_EXACT):
        start = end = 0
        levels: dict[Decimal, Level] = {}
        of: dict[Decimal, Decimal] = {}  # price -> its level (prices repeat)
        for time, price, quantity, side in trades:
            if not start <= time < end or not candles:
                start = bucket_start(interval, time)
                end = bucket_end(interval, start)
                levels = candles.setdefault(start, {})
            level = of.get(price)
            if level is None:
                level = of[price] = level_of(price, step)
            _add(levels, level, quantity, side)
    return [
        FootprintCandle(
            open_time, bucket_end(interval, open_time), [found[p] for p in sorted(found)]
        )
        for open_time, found in sorted(candles.items())
    ]
