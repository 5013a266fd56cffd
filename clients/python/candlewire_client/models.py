"""Typed results of the Candlewire client: candles, trades, prices, symbols, order
flow and stream events.

Every value is an immutable (frozen) dataclass. Times are timezone-aware
:class:`~datetime.datetime` objects in UTC (microsecond resolution). Prices and
volumes are either :class:`float` or exact :class:`~decimal.Decimal`, as the
client was asked (``decimals=True``); the classes are generic in that number
type, so ``Candle[Decimal]`` and ``Candle[float]`` type-check separately.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, Generic, TypeAlias, TypeVar, overload

from candlewire_client.errors import InvalidArgumentError

__all__ = [
    "Candle",
    "CandleEvent",
    "CandleList",
    "ContinuityLost",
    "Event",
    "FootprintCandle",
    "Health",
    "Heartbeat",
    "Interval",
    "IntervalLike",
    "N",
    "Price",
    "PriceLevel",
    "Rejection",
    "Series",
    "SeriesLike",
    "Side",
    "SnapshotEnd",
    "Source",
    "SymbolInfo",
    "TimeLike",
    "Trade",
    "TradeEvent",
    "TradeList",
    "TradeStreamEvent",
    "TradesContinuityLost",
    "VolumeProfile",
    "Watermark",
    "parse_time",
]

N = TypeVar("N", float, Decimal)
"""The number type of prices and volumes: ``float`` or ``Decimal``."""


class Interval(StrEnum):
    """A candle length. The value is the label users write: ``"1m"``, ``"1h"``, ``"1M"``.

    Boundaries are in UTC; weeks start on Monday 00:00, months are calendar
    months, and 3d candles are aligned to 1970-01-01. Being a ``str`` enum,
    ``Interval.M1 == "1m"`` and ``Interval("1h")`` work directly; use
    :meth:`parse` for the other spellings (``"1H"``, ``"1mo"``, ``"INTERVAL_1H"``).
    """

    S1 = "1s"
    M1 = "1m"
    M3 = "3m"
    M5 = "5m"
    M15 = "15m"
    M30 = "30m"
    H1 = "1h"
    H2 = "2h"
    H4 = "4h"
    H6 = "6h"
    H8 = "8h"
    H12 = "12h"
    D1 = "1d"
    D3 = "3d"
    W1 = "1w"
    MO1 = "1M"

    @property
    def label(self) -> str:
        """The interval as users (and Binance) write it: ``1s``, ``1m`` ... ``1M``."""
        return self.value

    @property
    def number(self) -> int:
        """The value of ``marketdata.v1.Interval`` on the wire."""
        return _NUMBERS[self]

    @property
    def length(self) -> timedelta | None:
        """The fixed length of a candle, or ``None`` for calendar months."""
        return _LENGTHS.get(self)

    @classmethod
    def from_number(cls, number: int) -> Interval:
        """The interval of a ``marketdata.v1.Interval`` wire value."""
        try:
            return _BY_NUMBER[number]
        except KeyError:
            raise InvalidArgumentError.local(
                "interval", f"unknown interval number {number}"
            ) from None

    @classmethod
    def parse(cls, value: IntervalLike) -> Interval:
        """Parse ``1s``, ``1m``, ``1h``, ``1d``, ``1w``, ``1M`` (also ``1mo``) and enum names.

        ``1M`` (capital M) is a month and ``1m`` a minute; otherwise case does
        not matter. Raises :class:`~candlewire_client.errors.InvalidArgumentError`
        (a ``ValueError``) for anything else.
        """
        if isinstance(value, Interval):
            return value
        text = str(value).strip()
        found = _BY_LABEL.get(text) or _BY_LABEL.get(text.lower()) or _BY_NAME.get(text.upper())
        if found is None:
            raise InvalidArgumentError.local(
                "interval",
                f"unknown interval {value!r}; expected one of {', '.join(i.value for i in cls)}",
            )
        return found


IntervalLike: TypeAlias = Interval | str
"""An :class:`Interval` or a string :meth:`Interval.parse` accepts."""

_NUMBERS = {interval: number for number, interval in enumerate(Interval, start=1)}
_BY_NUMBER = {number: interval for interval, number in _NUMBERS.items()}
_BY_LABEL = {i.value: i for i in Interval} | {"1mo": Interval.MO1}
_BY_NAME = (
    {i.name: i for i in Interval}
    | {f"INTERVAL_{i.value.upper()}": i for i in Interval if i is not Interval.MO1}
    | {"INTERVAL_1MO": Interval.MO1}
)
_S = timedelta(seconds=1)
_LENGTHS = {
    Interval.S1: _S,
    Interval.M1: 60 * _S,
    Interval.M3: 180 * _S,
    Interval.M5: 300 * _S,
    Interval.M15: 900 * _S,
    Interval.M30: 1800 * _S,
    Interval.H1: timedelta(hours=1),
    Interval.H2: timedelta(hours=2),
    Interval.H4: timedelta(hours=4),
    Interval.H6: timedelta(hours=6),
    Interval.H8: timedelta(hours=8),
    Interval.H12: timedelta(hours=12),
    Interval.D1: timedelta(days=1),
    Interval.D3: timedelta(days=3),
    Interval.W1: timedelta(days=7),
}


class Source(StrEnum):
    """Where a piece of data came from."""

    UNSPECIFIED = "unspecified"
    LIVE = "live"
    """Streamed live from the upstream venue."""
    BACKFILL = "backfill"
    """Fetched from the venue's history API (start-up or gap fill)."""
    SIMULATED = "simulated"
    """Produced by the built-in simulator: not a market."""
    REPLAY = "replay"
    """Replayed from a recorded data file."""

    @classmethod
    def from_number(cls, number: int) -> Source:
        """The source of a ``marketdata.v1.Source`` wire value (unknown values: UNSPECIFIED)."""
        members = list(cls)
        return members[number] if 0 <= number < len(members) else cls.UNSPECIFIED


@dataclass(frozen=True, slots=True)
class Series:
    """One candle series: a symbol at an interval. ``str(series)`` is ``BTCUSDT@1m``."""

    symbol: str
    interval: Interval

    def __str__(self) -> str:
        return f"{self.symbol}@{self.interval.value}"

    @classmethod
    def of(cls, value: SeriesLike) -> Series:
        """A series from a :class:`Series`, ``(symbol, interval)`` or ``"SYMBOL@INTERVAL"``."""
        if isinstance(value, Series):
            return value
        if isinstance(value, str):
            symbol, sep, interval = value.rpartition("@")
            if not sep or not symbol:
                raise InvalidArgumentError.local(
                    "series", f"{value!r} is not SYMBOL@INTERVAL (for example BTCUSDT@1m)"
                )
            return cls(symbol, Interval.parse(interval))
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
            return cls(value[0], Interval.parse(value[1]))
        raise InvalidArgumentError.local("series", f"{value!r} is not a series")


SeriesLike: TypeAlias = Series | str | tuple[str, IntervalLike]
"""A :class:`Series`, ``"SYMBOL@INTERVAL"`` or a ``(symbol, interval)`` pair."""

TimeLike: TypeAlias = datetime | date | str
"""A point in time: an aware ``datetime`` (naive ones are taken as UTC), a ``date``
(its midnight UTC) or an ISO-8601 string such as ``2026-01-01T12:00:00Z``."""


def parse_time(value: TimeLike, field: str = "time") -> datetime:
    """A :data:`TimeLike` as an aware UTC ``datetime``.

    Naive datetimes and strings without an offset are taken as UTC, because
    every time of the service is UTC. Raises InvalidArgumentError (a
    ``ValueError``) naming ``field`` for text that is not ISO 8601.
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise InvalidArgumentError.local(
                field, f"{value!r} is not an ISO-8601 time (e.g. 2026-01-01T00:00:00Z)"
            ) from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise InvalidArgumentError.local(field, f"{value!r} is not a time")


@dataclass(frozen=True, slots=True)
class Candle(Generic[N]):
    """One OHLCV bar: a full snapshot of the candle at one revision.

    ``open_time`` is inclusive and ``close_time`` exclusive. ``closed`` becomes
    true once event time passes ``close_time``; a closed candle may still be
    corrected by a late trade, with a higher ``revision``.
    """

    symbol: str
    interval: Interval
    open_time: datetime
    close_time: datetime
    open: N
    high: N
    low: N
    close: N
    volume: N
    """Base-asset volume."""
    quote_volume: N
    """Quote-asset volume (sum of price times quantity)."""
    trade_count: int
    closed: bool
    revision: int
    source: Source
    buy_volume: N
    """Base-asset volume of the trades whose aggressor bought."""
    buy_quote_volume: N
    """Quote-asset volume of the trades whose aggressor bought."""

    @property
    def series(self) -> Series:
        """The series this candle belongs to."""
        return Series(self.symbol, self.interval)

    @property
    def delta(self) -> N:
        """Buy minus sell volume (``2 * buy_volume - volume``)."""
        return self.buy_volume * 2 - self.volume

    @property
    def vwap(self) -> N | None:
        """Volume-weighted average price (``quote_volume / volume``); None without volume."""
        return self.quote_volume / self.volume if self.volume else None

    def to_row(self) -> dict[str, Any]:
        """The candle as a dict in :attr:`CandleList.COLUMNS` order (plain values)."""
        return {
            "symbol": self.symbol,
            "interval": self.interval.value,
            "open_time": self.open_time,
            "close_time": self.close_time,
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "quote_volume": self.quote_volume,
            "trade_count": self.trade_count,
            "closed": self.closed,
            "revision": self.revision,
            "source": self.source.value,
            "buy_volume": self.buy_volume,
            "buy_quote_volume": self.buy_quote_volume,
        }


@dataclass(frozen=True)
class CandleList(Sequence[Candle[N]]):
    """Candles of one query, ascending by open time; a read-only sequence.

    :meth:`to_rows` gives plain dicts (for ``csv.DictWriter`` or JSON) and
    :meth:`to_pandas` a ``pandas.DataFrame`` indexed by open time.
    """

    candles: tuple[Candle[N], ...]

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "symbol",
        "interval",
        "open_time",
        "close_time",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "trade_count",
        "closed",
        "revision",
        "source",
        "buy_volume",
        "buy_quote_volume",
    )
    """The keys of :meth:`to_rows` and the columns of :meth:`to_pandas`, in order."""

    def __len__(self) -> int:
        return len(self.candles)

    @overload
    def __getitem__(self, index: int) -> Candle[N]: ...
    @overload
    def __getitem__(self, index: slice) -> CandleList[N]: ...
    def __getitem__(self, index: int | slice) -> Candle[N] | CandleList[N]:
        if isinstance(index, slice):
            return CandleList(self.candles[index])
        return self.candles[index]

    def __iter__(self) -> Iterator[Candle[N]]:
        return iter(self.candles)

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per candle with the keys of :attr:`COLUMNS`.

        Values stay typed: ``datetime`` (UTC) times and ``Decimal`` or ``float``
        numbers, as the client returned them.
        """
        return [candle.to_row() for candle in self.candles]

    def to_pandas(self, *, index: str | None = "open_time") -> Any:
        """A ``pandas.DataFrame`` with the :attr:`COLUMNS`, indexed by ``index``.

        Times become ``datetime64[..., UTC]`` columns. Numbers keep their type:
        ``float64`` columns from a float client, object columns of ``Decimal``
        from a ``decimals=True`` client (``df.astype(float)`` when needed).
        ``index=None`` keeps a range index. pandas is imported here, on first
        use; it is not a dependency of the client, so this raises
        ``ModuleNotFoundError`` with install advice when it is missing.
        """
        try:
            pd = importlib.import_module("pandas")
        except ModuleNotFoundError as error:
            raise ModuleNotFoundError(
                "CandleList.to_pandas() needs pandas, which candlewire_client does not "
                "install: pip install pandas",
                name="pandas",
            ) from error
        frame = pd.DataFrame.from_records(self.to_rows(), columns=list(self.COLUMNS))
        for column in ("open_time", "close_time"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        if index is not None:
            frame = frame.set_index(index)
        return frame


@dataclass(frozen=True, slots=True)
class Price(Generic[N]):
    """The latest quote of a symbol.

    ``last`` is the price of the last trade, ``None`` when no trade was seen
    yet. ``event_time`` is the upstream's clock, ``receive_time`` the service's;
    ``stale`` is true when the quote was received longer ago than the service's
    configured stale age.
    """

    symbol: str
    bid: N
    ask: N
    mid: N
    spread: N
    last: N | None
    bid_size: N
    ask_size: N
    event_time: datetime
    receive_time: datetime
    stale: bool
    source: Source


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """A symbol the deployment serves, with the intervals served for it."""

    symbol: str
    base_asset: str
    quote_asset: str
    price_precision: int
    """Decimal places of prices."""
    quantity_precision: int
    """Decimal places of quantities."""
    intervals: tuple[Interval, ...]
    source: Source
    rejections: tuple[Rejection, ...] = ()
    """Input of this symbol the service's validation policy refused, per reason."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """How much input of a symbol was refused for one reason (``non_positive_price``,
    ``non_positive_size``, ``crossed_quote``, ``future_time``, ``late``, ``outlier``)."""

    reason: str
    count: int
    last_time: datetime | None


@dataclass(frozen=True, slots=True)
class CandleEvent(Generic[N]):
    """A stream event carrying a candle: a newer revision replaces an older one.

    ``resume_token`` continues a stream exactly after this event (the client
    does that by itself when it reconnects).
    """

    candle: Candle[N]
    resume_token: str


@dataclass(frozen=True, slots=True)
class SnapshotEnd:
    """History is complete for every series; live updates follow.

    Sent once per subscription: a resumed stream does not repeat it.
    """

    resume_token: str


@dataclass(frozen=True, slots=True)
class Watermark:
    """How far the upstream of a series has progressed (``None``: no event yet)."""

    series: Series
    last_event_time: datetime | None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Sent by the server when nothing else was sent for a heartbeat interval."""

    server_time: datetime
    watermarks: tuple[Watermark, ...]
    resume_token: str


@dataclass(frozen=True, slots=True)
class ContinuityLost:
    """The stream could not be resumed where it was; it starts again from ``since``.

    Yielded when the server refuses the stream's resume token while
    reconnecting (OUT_OF_RANGE: a server restarted with the in-memory store, a
    flushed Redis, a position past retention). The client then subscribes
    afresh, with ``start = since``, and yields, after this event:

    * the candles from ``since`` on again, as the server now has them, except
      versions the caller already has: per series, candles opening before the
      newest candle it delivered, and any candle whose market data (every
      field but ``revision`` and ``source``) equals the version delivered for
      the same series and open time. A candle that changed is delivered,
      whatever its ``revision``: a restarted server numbers revisions from 0
      again, so replace what you hold by open time instead of comparing
      revisions across this event;
    * a new :class:`SnapshotEnd`, then live updates.

    ``series`` are the stream's series (all are restarted: the server refuses
    the token as a whole). ``since`` is the earliest open time that can be
    sent again: the oldest of each series' newest delivered candle (a series
    with none delivered yet restarts from there too, or from the original
    ``start`` if that is older). ``since`` is ``None`` when no candle had been
    delivered and the original request is simply sent again (its ``history``
    or ``start`` apply). ``reason`` is the server's message. Updates made
    while the stream was away and overwritten since are not recoverable;
    what the server holds now is delivered.

    From this event on, the stream's ``resume_token`` belongs to the fresh
    request: to continue it in a later process, subscribe with
    ``start=since`` (and no ``history``) when ``since`` is set.
    """

    series: tuple[Series, ...]
    since: datetime | None
    reason: str


Event: TypeAlias = CandleEvent[N] | SnapshotEnd | Heartbeat | ContinuityLost
"""What a candle subscription yields."""


@dataclass(frozen=True, slots=True)
class Health:
    """The gRPC health of a server.

    ``liveness`` is the status of the server as a whole (service ``""``) and
    ``readiness`` that of ``marketdata.v1.MarketDataService``, which is
    ``SERVING`` only once history is loaded and the upstream feed is fresh.
    Statuses are the names of ``grpc.health.v1.HealthCheckResponse.ServingStatus``
    (``SERVING``, ``NOT_SERVING``, ``SERVICE_UNKNOWN``, ``UNKNOWN``).
    """

    liveness: str
    readiness: str

    @property
    def live(self) -> bool:
        """The server answers health checks and says it is serving."""
        return self.liveness == "SERVING"

    @property
    def ready(self) -> bool:
        """The market-data service is ready to serve fresh data."""
        return self.readiness == "SERVING"


class Side(StrEnum):
    """The aggressor (taker) side of a trade."""

    BUY = "buy"
    SELL = "sell"
    UNKNOWN = "unknown"

    @classmethod
    def from_number(cls, number: int) -> Side:
        """From ``marketdata.v1.AggressorSide`` (unspecified: unknown)."""
        return {1: cls.BUY, 2: cls.SELL}.get(number, cls.UNKNOWN)


@dataclass(frozen=True, slots=True)
class Trade(Generic[N]):
    """One trade as the upstream reported it.

    ``side`` is the aggressor's; ``trade_id`` the venue's id ("" when it has
    none); ``event_time`` the upstream's clock and ``receive_time`` the
    service's (``None`` when not recorded).
    """

    symbol: str
    trade_id: str
    price: N
    quantity: N
    side: Side
    event_time: datetime
    receive_time: datetime | None
    source: Source

    def to_row(self) -> dict[str, Any]:
        """The trade as a dict in :attr:`TradeList.COLUMNS` order (plain values)."""
        return {
            "symbol": self.symbol,
            "trade_id": self.trade_id,
            "price": self.price,
            "quantity": self.quantity,
            "side": self.side.value,
            "event_time": self.event_time,
            "receive_time": self.receive_time,
            "source": self.source.value,
        }


def _pandas(what: str) -> Any:
    try:
        return importlib.import_module("pandas")
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"{what}.to_pandas() needs pandas, which candlewire_client does not "
            "install: pip install pandas",
            name="pandas",
        ) from error


@dataclass(frozen=True)
class TradeList(Sequence[Trade[N]]):
    """Trades of one query, in the order the service received them; a read-only sequence."""

    trades: tuple[Trade[N], ...]

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "symbol",
        "trade_id",
        "price",
        "quantity",
        "side",
        "event_time",
        "receive_time",
        "source",
    )
    """The keys of :meth:`to_rows` and the columns of :meth:`to_pandas`, in order."""

    def __len__(self) -> int:
        return len(self.trades)

    @overload
    def __getitem__(self, index: int) -> Trade[N]: ...
    @overload
    def __getitem__(self, index: slice) -> TradeList[N]: ...
    def __getitem__(self, index: int | slice) -> Trade[N] | TradeList[N]:
        if isinstance(index, slice):
            return TradeList(self.trades[index])
        return self.trades[index]

    def __iter__(self) -> Iterator[Trade[N]]:
        return iter(self.trades)

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per trade with the keys of :attr:`COLUMNS` (typed values)."""
        return [trade.to_row() for trade in self.trades]

    def to_pandas(self, *, index: str | None = "event_time") -> Any:
        """A ``pandas.DataFrame`` with the :attr:`COLUMNS`, indexed by ``index``
        (``None``: a range index); needs pandas, as :meth:`CandleList.to_pandas`."""
        pd = _pandas("TradeList")
        frame = pd.DataFrame.from_records(self.to_rows(), columns=list(self.COLUMNS))
        for column in ("event_time", "receive_time"):
            frame[column] = pd.to_datetime(frame[column], utc=True)
        if index is not None:
            frame = frame.set_index(index)
        return frame


@dataclass(frozen=True, slots=True)
class TradeEvent(Generic[N]):
    """A trade stream event carrying a trade."""

    trade: Trade[N]
    resume_token: str


@dataclass(frozen=True, slots=True)
class TradesContinuityLost:
    """A trade stream could not be resumed where it was; it starts again from ``since``.

    The trade-stream form of :class:`ContinuityLost`: the client subscribes
    afresh with ``start = since`` (the oldest of each symbol's newest trade
    delivered) and leaves out the trades it already delivered (per symbol,
    those before its newest delivered trade, and any trade equal to one of
    the last 512 delivered). ``since`` is ``None`` when no trade had been
    delivered and the original request is sent again.
    """

    symbols: tuple[str, ...]
    since: datetime | None
    reason: str


TradeStreamEvent: TypeAlias = TradeEvent[N] | SnapshotEnd | Heartbeat | TradesContinuityLost
"""What a trade subscription yields."""


@dataclass(frozen=True, slots=True)
class PriceLevel(Generic[N]):
    """The volume traded at prices ``[price, price + step)``, by aggressor side."""

    price: N
    buy_volume: N
    sell_volume: N
    unknown_volume: N
    trade_count: int

    @property
    def volume(self) -> N:
        """All volume at this level."""
        return self.buy_volume + self.sell_volume + self.unknown_volume

    @property
    def delta(self) -> N:
        """Buy minus sell volume."""
        return self.buy_volume - self.sell_volume


@dataclass(frozen=True, slots=True)
class FootprintCandle(Generic[N]):
    """The volume profile of one candle."""

    open_time: datetime
    close_time: datetime
    levels: tuple[PriceLevel[N], ...]


@dataclass(frozen=True, slots=True)
class VolumeProfile(Generic[N]):
    """Volume at price over a time range (``levels``, ascending by price) and,
    when an interval was asked for, per candle (``footprint``).

    ``truncated`` is true when the range starts before the oldest trade the
    service retains."""

    levels: tuple[PriceLevel[N], ...]
    footprint: tuple[FootprintCandle[N], ...]
    trade_count: int
    truncated: bool

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "price",
        "buy_volume",
        "sell_volume",
        "unknown_volume",
        "trade_count",
    )

    def to_pandas(self) -> Any:
        """The levels as a ``pandas.DataFrame`` indexed by price (needs pandas)."""
        pd = _pandas("VolumeProfile")
        rows = [{c: getattr(level, c) for c in self.COLUMNS} for level in self.levels]
        return pd.DataFrame.from_records(rows, columns=list(self.COLUMNS)).set_index("price")
