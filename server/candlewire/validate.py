"""The validation policy: every feed's input passes here before aggregation.

:class:`Validator` is pure (no I/O; the service clock is an argument). It
returns what it accepts, unchanged, and drops the rest: input is never
clamped or repaired. Each refusal is counted per symbol and reason in a
:class:`Rejections` (shared with the API, which shows it in
``ListSymbols``) and reported to a callback (the ingestor logs it, rate
limited).

The rules, in the order they are checked:

* ``NON_POSITIVE_PRICE``: a trade price, a quote's bid or ask, or a venue
  candle's open, high, low or close that is zero, negative, infinite or NaN.
* ``NON_POSITIVE_SIZE``: a trade quantity that is zero, negative, infinite or
  NaN (a quote tick of a market without trades carries 0: only negative,
  infinite and NaN are refused there); a quote size or a candle volume that
  is negative, infinite or NaN (a quote size of 0 means "not stated").
* ``CROSSED_QUOTE``: a quote whose bid is above its ask (bid == ask, a locked
  market, passes).
* ``FUTURE_TIME``: an event time more than ``max_future`` ahead of the
  service clock (trades, quotes, watermarks, and a candle's open time).
* ``LATE``: a trade whose event time is more than ``lateness`` behind the
  symbol's watermark (the largest event time of its accepted trades and
  watermarks): the aggregator could no longer apply it.
* ``OUTLIER``: a trade price further than ``max_jump`` (a fraction, 0.2 =
  20 %) from the median of the symbol's last ``outlier_window`` trade prices
  (accepted, or refused as outliers: a lasting move of the market becomes the
  reference once it fills half the window). Off when ``max_jump`` is None,
  and until the window holds ``outlier_min`` prices.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from typing import Protocol

from candlewire.domain import Candle, Quote, Trade

__all__ = [
    "Reason",
    "Rejected",
    "RejectionCounts",
    "Rejections",
    "ValidationConfig",
    "Validator",
]


class Reason(IntEnum):
    """Why input was refused; the values are those of ``marketdata.v1.RejectReason``."""

    NON_POSITIVE_PRICE = 1
    NON_POSITIVE_SIZE = 2
    CROSSED_QUOTE = 3
    FUTURE_TIME = 4
    LATE = 5
    OUTLIER = 6

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class ValidationConfig:
    """The settings of the rules (times in nanoseconds)."""

    lateness: int = 0
    max_future: int = 5_000_000_000
    max_jump: Decimal | None = Decimal("0.2")
    outlier_window: int = 32
    outlier_min: int = 8

    def __post_init__(self) -> None:
        if self.lateness < 0 or self.max_future < 0:
            raise ValueError("lateness and max_future must be >= 0")
        if self.max_jump is not None and not self.max_jump > 0:
            raise ValueError(f"max_jump must be positive, got {self.max_jump}")
        if not 1 <= self.outlier_min <= self.outlier_window:
            raise ValueError("outlier_min must be between 1 and outlier_window")


@dataclass(frozen=True, slots=True)
class Rejected:
    """One refused input."""

    symbol: str
    reason: Reason
    time: int
    detail: str


@dataclass(slots=True)
class _Count:
    count: int = 0
    last_time: int = 0


class RejectionCounts(Protocol):
    """What the API shows of the refusals: this process's own
    (:class:`Rejections`), or those of a shared store
    (:class:`~candlewire.flow.rejections.RejectionReader`)."""

    def of(self, symbol: str) -> list[tuple[Reason, int, int]]:
        """``(reason, count, last event time)`` of ``symbol``, by reason."""
        ...

    def all(self) -> dict[str, list[tuple[Reason, int, int]]]:
        """:meth:`of` of every symbol with refusals."""
        ...


class Rejections:
    """Refusals per symbol and reason, since the process started."""

    def __init__(self) -> None:
        self._counts: dict[str, dict[Reason, _Count]] = {}

    def add(self, rejected: Rejected) -> None:
        count = self._counts.setdefault(rejected.symbol, {}).setdefault(rejected.reason, _Count())
        count.count += 1
        count.last_time = max(count.last_time, rejected.time)

    def of(self, symbol: str) -> list[tuple[Reason, int, int]]:
        """``(reason, count, last event time)`` of ``symbol``, by reason."""
        counts = self._counts.get(symbol, {})
        return [(r, counts[r].count, counts[r].last_time) for r in sorted(counts)]

    def all(self) -> dict[str, list[tuple[Reason, int, int]]]:
        return {symbol: self.of(symbol) for symbol in self._counts}

    def total(self, symbol: str | None = None) -> int:
        symbols = self._counts.values() if symbol is None else [self._counts.get(symbol, {})]
        return sum(c.count for counts in symbols for c in counts.values())


def _positive(value: Decimal) -> bool:
    return value.is_finite() and value > 0


def _non_negative(value: Decimal) -> bool:
    return value.is_finite() and value >= 0


class Validator:
    """Applies :class:`ValidationConfig` to one feed's input (see the module docstring)."""

    def __init__(
        self,
        config: ValidationConfig,
        rejections: Rejections | None = None,
        on_reject: Callable[[Rejected], None] | None = None,
    ) -> None:
        self._config = config
        self.rejections = rejections if rejections is not None else Rejections()
        self._on_reject = on_reject
        self._watermarks: dict[str, int] = {}
        self._recent: dict[str, deque[Decimal]] = {}

    def _reject(self, symbol: str, reason: Reason, time: int, detail: str) -> None:
        rejected = Rejected(symbol, reason, time, detail)
        self.rejections.add(rejected)
        if self._on_reject is not None:
            self._on_reject(rejected)

    def _future(self, time: int, now: int) -> bool:
        return time > now + self._config.max_future

    def trades(self, trades: Sequence[Trade], now: int, *, ticks: bool = False) -> list[Trade]:
        """The trades that pass, in order; ``now`` is the service clock (ns).

        ``ticks``: quote ticks of a market without trades (FX), whose size is
        0 (not stated): a size must then be finite and not negative."""
        config = self._config
        accepted: list[Trade] = []
        for trade in trades:
            symbol, time = trade.symbol, trade.time
            if not _positive(trade.price):
                self._reject(symbol, Reason.NON_POSITIVE_PRICE, time, f"price {trade.price}")
                continue
            if not (_non_negative if ticks else _positive)(trade.quantity):
                self._reject(symbol, Reason.NON_POSITIVE_SIZE, time, f"quantity {trade.quantity}")
                continue
            if self._future(time, now):
                self._reject(symbol, Reason.FUTURE_TIME, time, f"{(time - now) / 1e9:.3f}s ahead")
                continue
            mark = self._watermarks.get(symbol)
            if mark is not None and time < mark - config.lateness:
                self._reject(symbol, Reason.LATE, time, f"{(mark - time) / 1e9:.3f}s late")
                continue
            if config.max_jump is not None:
                recent = self._recent.get(symbol)
                if recent is None:
                    recent = self._recent[symbol] = deque(maxlen=config.outlier_window)
                if len(recent) >= config.outlier_min:
                    ordered = sorted(recent)
                    reference = ordered[len(ordered) // 2]
                    jump = abs(trade.price - reference) / reference
                    if jump > config.max_jump:
                        recent.append(trade.price)
                        self._reject(
                            symbol,
                            Reason.OUTLIER,
                            time,
                            f"price {trade.price} is {jump:.1%} from {reference}",
                        )
                        continue
                recent.append(trade.price)
            if mark is None or time > mark:
                self._watermarks[symbol] = time
            accepted.append(trade)
        return accepted

    def quotes(self, quotes: Sequence[Quote], now: int) -> list[Quote]:
        accepted: list[Quote] = []
        for quote in quotes:
            symbol, time = quote.symbol, quote.time
            if not (_positive(quote.bid) and _positive(quote.ask)):
                self._reject(
                    symbol, Reason.NON_POSITIVE_PRICE, time, f"bid {quote.bid} ask {quote.ask}"
                )
            elif not (_non_negative(quote.bid_size) and _non_negative(quote.ask_size)):
                self._reject(
                    symbol,
                    Reason.NON_POSITIVE_SIZE,
                    time,
                    f"sizes {quote.bid_size} / {quote.ask_size}",
                )
            elif quote.bid > quote.ask:
                self._reject(
                    symbol, Reason.CROSSED_QUOTE, time, f"bid {quote.bid} above ask {quote.ask}"
                )
            elif self._future(time, now):
                self._reject(symbol, Reason.FUTURE_TIME, time, f"{(time - now) / 1e9:.3f}s ahead")
            else:
                accepted.append(quote)
        return accepted

    def watermark(self, symbol: str, time: int, now: int) -> bool:
        """Whether the watermark passes (it moves the symbol's watermark)."""
        if self._future(time, now):
            self._reject(
                symbol, Reason.FUTURE_TIME, time, f"watermark {(time - now) / 1e9:.3f}s ahead"
            )
            return False
        if time > self._watermarks.get(symbol, time - 1):
            self._watermarks[symbol] = time
        return True

    def candles(self, candles: Sequence[Candle], now: int) -> list[Candle]:
        """Venue candles (kline feeds) that pass."""
        accepted: list[Candle] = []
        for candle in candles:
            symbol, time = candle.symbol, candle.open_time
            prices = (candle.open, candle.high, candle.low, candle.close)
            if not all(_positive(p) for p in prices):
                self._reject(symbol, Reason.NON_POSITIVE_PRICE, time, f"{candle.series} prices")
            elif not (
                _non_negative(candle.volume)
                and _non_negative(candle.quote_volume)
                and _non_negative(candle.buy_volume)
                and _non_negative(candle.buy_quote_volume)
            ):
                self._reject(symbol, Reason.NON_POSITIVE_SIZE, time, f"{candle.series} volumes")
            elif self._future(time, now):
                self._reject(symbol, Reason.FUTURE_TIME, time, f"{candle.series} opens ahead")
            else:
                accepted.append(candle)
        return accepted
