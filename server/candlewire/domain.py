"""Domain types: symbols, intervals, trades, quotes and candles.

Times are integers: nanoseconds since the Unix epoch, UTC. Prices and
quantities are :class:`~decimal.Decimal`, so candle arithmetic is exact; they
become doubles only on the wire. Every type here is immutable.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum

__all__ = [
    "NANOS_PER_MILLI",
    "NANOS_PER_SECOND",
    "Candle",
    "FeedState",
    "Instrument",
    "Interval",
    "MarketState",
    "PriceType",
    "Quote",
    "SeriesKey",
    "Side",
    "Source",
    "Trade",
]

NANOS_PER_SECOND = 1_000_000_000
NANOS_PER_MILLI = 1_000_000


class Interval(IntEnum):
    """Candle intervals; the values are those of ``marketdata.v1.Interval``."""

    S1 = 1
    M1 = 2
    M3 = 3
    M5 = 4
    M15 = 5
    M30 = 6
    H1 = 7
    H2 = 8
    H4 = 9
    H6 = 10
    H8 = 11
    H12 = 12
    D1 = 13
    D3 = 14
    W1 = 15
    MO1 = 16

    @property
    def label(self) -> str:
        """The interval as users and Binance write it: ``1s``, ``1m`` ... ``1M``."""
        return _LABELS[self]

    @classmethod
    def parse(cls, text: str) -> Interval:
        """Parse ``1s``, ``1m``, ``1h``, ``1d``, ``1w``, ``1M`` (also ``1mo``) and enum names."""
        value = _BY_LABEL.get(text) or _BY_LABEL.get(text.lower()) or _BY_NAME.get(text.upper())
        if value is None:
            raise ValueError(
                f"unknown interval {text!r}; expected one of {', '.join(_LABELS.values())}"
            )
        return value


_LABELS = {
    Interval.S1: "1s",
    Interval.M1: "1m",
    Interval.M3: "3m",
    Interval.M5: "5m",
    Interval.M15: "15m",
    Interval.M30: "30m",
    Interval.H1: "1h",
    Interval.H2: "2h",
    Interval.H4: "4h",
    Interval.H6: "6h",
    Interval.H8: "8h",
    Interval.H12: "12h",
    Interval.D1: "1d",
    Interval.D3: "3d",
    Interval.W1: "1w",
    Interval.MO1: "1M",
}
_BY_LABEL = {label: interval for interval, label in _LABELS.items()} | {"1mo": Interval.MO1}
_BY_NAME = (
    {interval.name: interval for interval in Interval}
    | {
        f"INTERVAL_{label.upper()}": interval
        for interval, label in _LABELS.items()
        if interval is not Interval.MO1
    }
    | {"INTERVAL_1MO": Interval.MO1}
)


class Source(IntEnum):
    """Where data came from; the values are those of ``marketdata.v1.Source``."""

    LIVE = 1
    BACKFILL = 2
    SIMULATED = 3
    REPLAY = 4


class Side(IntEnum):
    """The aggressor (taker) side of a trade; the values are those of
    ``marketdata.v1.AggressorSide`` (``UNKNOWN`` is ``AGGRESSOR_SIDE_UNSPECIFIED``)."""

    UNKNOWN = 0
    BUY = 1
    SELL = 2


class FeedState(IntEnum):
    """The state of the upstream feed; the values are those of ``marketdata.v1.FeedState``."""

    UNSPECIFIED = 0
    OK = 1
    DOWN = 2
    LOGIN_REQUIRED = 3


class MarketState(IntEnum):
    """Whether the market of a quote is open; the values are those of
    ``marketdata.v1.MarketState`` (UNSPECIFIED: the feed does not say)."""

    UNSPECIFIED = 0
    OPEN = 1
    CLOSED = 2
    PRE_MARKET = 3
    POST_MARKET = 4
    AUCTION = 5
    SUSPENDED = 6


class PriceType(IntEnum):
    """What a quoted price is worth; the values are those of ``marketdata.v1.PriceType``
    (UNSPECIFIED: the feed does not say)."""

    UNSPECIFIED = 0
    TRADABLE = 1
    INDICATIVE = 2
    OLD_INDICATIVE = 3
    NO_MARKET = 4


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """One candle series: a symbol at an interval."""

    symbol: str
    interval: Interval

    def __str__(self) -> str:
        return f"{self.symbol}@{self.interval.label}"


@dataclass(frozen=True, slots=True)
class Trade:
    """One trade as reported by the upstream, at its event time.

    ``side`` is the aggressor's (the taker's); ``trade_id`` the venue's id
    ("" when it has none); ``receive_time`` when this service received it
    (0: not recorded, as for replayed history).
    """

    symbol: str
    time: int
    price: Decimal
    quantity: Decimal
    source: Source
    side: Side = Side.UNKNOWN
    trade_id: str = ""
    receive_time: int = 0


@dataclass(frozen=True, slots=True)
class Quote:
    """Best bid and ask of a symbol (and the last trade price when known)."""

    symbol: str
    time: int
    bid: Decimal
    ask: Decimal
    bid_size: Decimal
    ask_size: Decimal
    source: Source
    receive_time: int
    last: Decimal | None = None
    market_state: MarketState = MarketState.UNSPECIFIED
    price_type: PriceType = PriceType.UNSPECIFIED
    """The worse of the bid's and the ask's price type."""

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2

    @property
    def spread(self) -> Decimal:
        return self.ask - self.bid


@dataclass(frozen=True, slots=True)
class Candle:
    """A full snapshot of one OHLCV candle at one revision.

    ``open_time`` is inclusive and ``close_time`` exclusive. A candle with no
    trades has zero volume and all four prices at the previous close.
    """

    symbol: str
    interval: Interval
    open_time: int
    close_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    quote_volume: Decimal
    trade_count: int
    closed: bool
    revision: int
    source: Source
    buy_volume: Decimal = Decimal(0)
    """Base volume of the trades whose aggressor bought (sell volume is the rest)."""
    buy_quote_volume: Decimal = Decimal(0)

    @property
    def series(self) -> SeriesKey:
        return SeriesKey(self.symbol, self.interval)


@dataclass(frozen=True, slots=True)
class Instrument:
    """A symbol the deployment serves, with its precision as the venue states it."""

    symbol: str
    base_asset: str
    quote_asset: str
    price_precision: int
    quantity_precision: int
    source: Source
