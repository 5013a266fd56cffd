"""The store interface and the values it returns.

Trades have a log of their own (:class:`TradeStore`): each symbol's trades
are numbered 1, 2, 3 ... in the order they were written (a *trade sequence
number*, separate from the candles'), and the oldest are evicted beyond a
count or an age. A trade also records its *mark*: the largest event time of
the symbol's trades up to and including it, which never decreases, so time
ranges are found by bisection and a late trade stays where it arrived.

Every candle version written gets a *sequence number* that grows with every
update of the same symbol (across that symbol's intervals). Numbers of
different symbols are not comparable: a store may number each symbol on its
own (Redis Cluster does, one counter per symbol slot) or share one counter
(the memory store does). A *position* maps symbols to the last sequence
number seen of each (a missing symbol is 0). The store can replay the updates
of any set of series after a position while they are retained, and can
rebuild the history snapshot that was current at a position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from candlewire.domain import Candle, Quote, SeriesKey, Trade

__all__ = [
    "Bounds",
    "CandleSlice",
    "Connects",
    "HotTrades",
    "LeaseStore",
    "Position",
    "RejectionLog",
    "SharedStore",
    "Snapshot",
    "Store",
    "TradeFeed",
    "TradeHistory",
    "TradeSlice",
    "TradeStore",
    "TradeSymbol",
    "TradeUpdate",
    "Update",
    "UpdateLog",
]

Position = Mapping[str, int]
"""Symbol -> the sequence number of its last update seen (missing: 0)."""

Bounds = tuple[int, int | None]
"""A series' stored candle count and oldest open time (None when it has none)."""


@dataclass(frozen=True, slots=True)
class Update:
    """One stored candle version, as written to the update log."""

    seq: int
    series: SeriesKey
    open_time: int
    revision: int
    closed: bool
    frame: bytes
    """The candle, encoded once (see :mod:`candlewire.codec`)."""


@dataclass(frozen=True, slots=True)
class CandleSlice:
    """Candles of one series, ascending by open time."""

    open_times: Sequence[int]
    frames: Sequence[bytes]

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Candles of several series as they were at ``position`` (which names
    every symbol of the series)."""

    position: dict[str, int]
    slices: Sequence[CandleSlice]


@dataclass(frozen=True, slots=True)
class TradeSymbol:
    """The key under which a symbol's trades are published (see :class:`~candlewire.hub.Hub`)."""

    symbol: str


@dataclass(frozen=True, slots=True)
class TradeUpdate:
    """One stored trade, as published to trade streams."""

    seq: int
    series: TradeSymbol
    mark: int
    frame: bytes
    """The trade, encoded once (:func:`candlewire.codec.trade_frame`)."""

    @property
    def open_time(self) -> int:
        return self.seq

    @property
    def closed(self) -> bool:
        """Always True: trades are never conflated."""
        return True


@dataclass(frozen=True, slots=True)
class TradeSlice:
    """Trades of one symbol in sequence order.

    ``complete`` is False when trades of the selection may have been evicted
    already (the selection reaches before the oldest trade retained)."""

    seqs: Sequence[int]
    frames: Sequence[bytes]
    complete: bool

    def __len__(self) -> int:
        return len(self.frames)


@runtime_checkable
class TradeStore(Protocol):
    """The trade log of a store (see the module docstring)."""

    async def write_trades(self, trades: Sequence[Trade]) -> list[TradeUpdate]:
        """Append trades (each with its frame) to their symbols' logs, in order;
        return them numbered, in order per symbol."""
        ...

    async def trade_heads(self, symbols: Sequence[str]) -> dict[str, int]:
        """Per symbol, the sequence number of its newest trade (0 when none)."""
        ...

    async def get_trades(
        self,
        symbol: str,
        *,
        start: int | None = None,
        end: int | None = None,
        after: int = 0,
        upto: int | None = None,
        limit: int,
        latest: bool = False,
    ) -> TradeSlice:
        """Trades with ``after < seq <= upto`` and ``start <= mark < end``:
        the first ``limit`` of them, or the last ``limit`` when ``latest``."""
        ...

    async def read_trades(self, symbols: Sequence[str], after: Position) -> list[TradeUpdate]:
        """Trades with ``seq > after[symbol]``, in order per symbol; raises
        DataExpired when some of them are no longer retained."""
        ...


@runtime_checkable
class TradeHistory(Protocol):
    """Trades that reach past the hot store's log (a history tier in front of it).

    Trades are named by *cursors* that order them as received across the
    tiers: a trade of the hot store's current epoch is named by its trade
    sequence number (so cursors of the hot log are what they always were),
    an older one by a negative number. ``after=None`` is before every trade.
    ``complete`` is False when the selection reaches before what the
    history's retention kept."""

    async def page_trades(
        self,
        symbol: str,
        *,
        start: int | None,
        end: int | None,
        after: int | None,
        upto: int | None,
        limit: int,
    ) -> TradeSlice:
        """The first ``limit`` trades with a cursor after ``after`` (and at most
        ``upto``, a sequence number of the hot log) and ``start <= mark < end``;
        their cursors are the slice's ``seqs``."""
        ...

    async def latest_trades(self, symbol: str, *, end: int | None, limit: int) -> TradeSlice:
        """The last ``limit`` trades with ``mark < end``, in the order received."""
        ...


class Store(TradeStore, Protocol):
    """What the service needs from a store (trades included). Implementations raise
    :class:`~candlewire.errors.StoreUnavailable` when they cannot be reached and
    :class:`~candlewire.errors.DataExpired` for positions no longer retained."""

    @property
    def epoch(self) -> bytes:
        """Eight bytes naming this update log; positions of another epoch are invalid."""
        ...

    async def ping(self) -> None:
        """Return when the store is reachable; raise StoreUnavailable otherwise."""
        ...

    async def close(self) -> None: ...

    async def put_quotes(self, quotes: Sequence[Quote]) -> None:
        """Replace the latest quote of each symbol."""
        ...

    async def get_quotes(self, symbols: Sequence[str]) -> list[Quote | None]:
        """The latest quote of each symbol, None where there is none."""
        ...

    async def recent_ticks(self, symbol: str, limit: int) -> list[Quote]:
        """The last ``limit`` quotes put for ``symbol`` (at most the number the
        store keeps), oldest first."""
        ...

    async def write_candles(self, candles: Sequence[Candle]) -> list[Update]:
        """Upsert candles by (series, open_time) and append them to the log.

        A version whose revision is not newer than the stored one is ignored
        (writes are idempotent); the returned updates are those applied, in
        order, with their sequence numbers.
        """
        ...

    async def get_candles(
        self, series: SeriesKey, *, start: int | None, end: int | None, limit: int
    ) -> CandleSlice:
        """Candles with ``start <= open_time < end``: the first ``limit`` of them
        when ``start`` is given, otherwise the last ``limit``."""
        ...

    async def head(self, symbols: Sequence[str]) -> dict[str, int]:
        """Per symbol, the sequence number of its newest update (0 when none)."""
        ...

    async def snapshot(
        self,
        series: Sequence[SeriesKey],
        *,
        history: int,
        start: int | None,
        closed_only: bool,
        at: Position | None = None,
    ) -> Snapshot:
        """For each series, the last ``history`` candles (or those with
        ``open_time >= start``), as they were at position ``at`` (default: now)."""
        ...

    async def read_updates(self, series: Sequence[SeriesKey], after: Position) -> list[Update]:
        """Updates of ``series`` with ``seq > after[symbol]``, in sequence
        order per symbol (the order across symbols is the store's)."""
        ...


@runtime_checkable
class Connects(Protocol):
    """A store that must be connected before use (the app awaits
    :meth:`connect` before serving; :attr:`Store.epoch` is valid after it)."""

    async def connect(self) -> None:
        """Reach the store and load what the sync properties return; raise
        StoreUnavailable when it cannot be reached."""
        ...


class UpdateLog(Protocol):
    """What a serving replica's follower (:class:`~candlewire.flow.follow.UpdateReader`)
    needs from a store shared by processes: its update log, read and waited on,
    its price streams, and where the log stands."""

    @property
    def epoch(self) -> bytes: ...

    @property
    def cluster(self) -> bool:
        """True when one :meth:`wait_for_updates` may name one symbol's streams only."""
        ...

    async def ping(self) -> None: ...

    async def head(self, symbols: Sequence[str]) -> dict[str, int]: ...

    async def get_quotes(self, symbols: Sequence[str]) -> list[Quote | None]: ...

    async def snapshot(
        self,
        series: Sequence[SeriesKey],
        *,
        history: int,
        start: int | None,
        closed_only: bool,
        at: Position | None = None,
    ) -> Snapshot: ...

    async def read_updates(self, series: Sequence[SeriesKey], after: Position) -> list[Update]: ...

    async def follow_updates(
        self, series: Sequence[SeriesKey], after: Position
    ) -> tuple[list[Update], dict[SeriesKey, Bounds]]:
        """:meth:`Store.read_updates`, with each series' :data:`Bounds` as they
        are after the last update returned (read at the same instant)."""
        ...

    async def wait_for_updates(
        self,
        series: Sequence[SeriesKey],
        after: Position,
        prices: dict[str, bytes],
        block: float,
    ) -> list[tuple[str, Quote]]:
        """Wait up to ``block`` seconds for an update of ``series`` after
        ``after`` or a new quote in the price streams of ``prices`` (symbol ->
        last entry id, advanced here); return the new quotes."""
        ...

    async def price_positions(self, symbols: Sequence[str]) -> dict[str, bytes]:
        """The last entry id of each symbol's price stream."""
        ...


class TradeFeed(Protocol):
    """What a serving replica's trade follower
    (:class:`~candlewire.flow.follow.TradeReader`) needs from a shared store."""

    @property
    def epoch(self) -> bytes: ...

    @property
    def cluster(self) -> bool: ...

    async def trade_heads(self, symbols: Sequence[str]) -> dict[str, int]: ...

    async def read_trades(self, symbols: Sequence[str], after: Position) -> list[TradeUpdate]: ...

    async def wait_for_trades(self, symbols: Sequence[str], after: Position, block: float) -> None:
        """Wait up to ``block`` seconds for a trade after ``after`` (on a
        cluster, of one symbol)."""
        ...


class LeaseStore(Protocol):
    """What leased ingestion (:class:`~candlewire.flow.lease.LeasedIngestion`)
    needs from a store shared by processes: leases with fencing tokens."""

    async def acquire_lease(self, name: str, owner: str, ttl: float) -> str | None:
        """Take lease ``name`` for ``ttl`` seconds if nobody holds it: the
        holder's value (``<fencing token>:<owner>``), or None."""
        ...

    async def renew_lease(self, name: str, value: str, ttl: float) -> bool:
        """Extend the lease for ``ttl`` seconds (0 releases it); False when it was lost."""
        ...

    async def lease_holder(self, name: str) -> str | None:
        """The value of lease ``name``, None when nobody holds it."""
        ...

    def fence(self, name: str, value: str) -> None:
        """Refuse this store's writes unless lease ``name`` holds ``value``."""
        ...


@runtime_checkable
class RejectionLog(Protocol):
    """Totals of refused input, kept by a shared store for every replica
    (see :mod:`candlewire.flow.rejections`)."""

    async def add_rejections(self, added: Mapping[str, Mapping[int, tuple[int, int]]]) -> None:
        """Add counts: symbol -> reason (``RejectReason`` value) -> (count to
        add, newest event time refused)."""
        ...

    async def rejection_counts(
        self, symbols: Sequence[str]
    ) -> dict[str, dict[int, tuple[int, int]]]:
        """symbol -> reason -> (count, newest event time refused)."""
        ...


class SharedStore(Store, UpdateLog, TradeFeed, LeaseStore, Connects, RejectionLog, Protocol):
    """A store shared by processes (Redis): serving replicas follow its
    update log and ingestors take turns under its leases."""


class HotTrades:
    """Trade methods of a store in front of a hot store (``self.hot``): trades
    are written to, streamed from and paged in the hot store's log (a history
    tier reads older trades through :class:`TradeHistory` instead)."""

    hot: Store

    async def write_trades(self, trades: Sequence[Trade]) -> list[TradeUpdate]:
        return await self.hot.write_trades(trades)

    async def trade_heads(self, symbols: Sequence[str]) -> dict[str, int]:
        return await self.hot.trade_heads(symbols)

    async def get_trades(
        self,
        symbol: str,
        *,
        start: int | None = None,
        end: int | None = None,
        after: int = 0,
        upto: int | None = None,
        limit: int,
        latest: bool = False,
    ) -> TradeSlice:
        return await self.hot.get_trades(
            symbol, start=start, end=end, after=after, upto=upto, limit=limit, latest=latest
        )

    async def read_trades(self, symbols: Sequence[str], after: Position) -> list[TradeUpdate]:
        return await self.hot.read_trades(symbols, after)
