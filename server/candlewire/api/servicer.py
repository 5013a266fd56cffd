"""The MarketDataService servicer: validation, then store and hub calls.

Every request field is checked before anything is read; a bad field is an
InvalidArgument naming it (``series[2].interval``). Responses that carry
candles are assembled from the frames the store encoded once (see
:mod:`candlewire.codec`), so these handlers return bytes.

Trades follow the candles' conventions: ``GetTrades`` pages like
``GetCandles`` (its page token names the next trade's sequence number; with
a history tier, its cursor, which is the same number for a trade of the hot
log: see :class:`~candlewire.store.base.TradeHistory`), and
``SubscribeTrades`` is ``SubscribeCandles`` over the store's trade log, with
trade sequence numbers in its resume tokens (history: the snapshot position
and the last trade sent; live: the last trade sent per symbol). Trades are
never conflated: a stream that falls behind is ended by the trade hub.
``GetVolumeProfile`` reads the stored trades of its range and computes the
profile and footprint exactly (:mod:`candlewire.orderflow`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from candlewire.api.outlet import Outlet, outlet_of
from candlewire.api.status import abort, translate_errors
from candlewire.api.tokens import PageToken, Phase, ResumeToken, fingerprint, live_token
from candlewire.codec import FrameRun, field_bytes, quote_to_price, timestamp, timestamp_ns
from candlewire.domain import FeedState, Instrument, Interval, Quote, SeriesKey, Side
from candlewire.errors import (
    CandlewireError,
    DataExpired,
    DependencyUnavailable,
    InvalidArgument,
    LimitExceeded,
    NoData,
    UnknownSymbol,
)
from candlewire.hub import Hub, Key, Sink, Subscription
from candlewire.intervals import bucket_end, bucket_start
from candlewire.orderflow import Level, TapeTrade, footprint, profile
from candlewire.store.base import (
    CandleSlice,
    Snapshot,
    Store,
    TradeHistory,
    TradeSlice,
    TradeSymbol,
    TradeUpdate,
    Update,
)
from candlewire.store.coverage import coverage_of
from candlewire.validate import RejectionCounts, Rejections
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb

__all__ = ["Catalog", "Limits", "MarketDataServicer"]

Context = grpc.aio.ServicerContext[object, object]

_MIN_SECONDS = -62135596800  # 0001-01-01T00:00:00Z
_MAX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
_SNAPSHOT_END = field_bytes(2, b"")
_MAX_SYMBOL = 32


@dataclass(frozen=True, slots=True)
class Catalog:
    """What this deployment serves."""

    instruments: dict[str, Instrument]
    intervals: tuple[Interval, ...]
    known: bool = True
    """False until the feed's symbols are known (see :meth:`pending`)."""
    _exact: frozenset[str] = dataclass_field(init=False, repr=False, compare=False)
    """Symbols that :meth:`symbol` returns unchanged when given as they are."""

    @classmethod
    def pending(cls, intervals: tuple[Interval, ...]) -> Catalog:
        """The catalog while the feed's symbols are not known: every symbol is UNAVAILABLE."""
        return cls({}, intervals, known=False)

    def require_known(self) -> None:
        """Raise DependencyUnavailable while the feed's symbols are not known."""
        if not self.known:
            raise DependencyUnavailable("the feed's symbols are not known yet")

    def __post_init__(self) -> None:
        exact = frozenset(
            s for s in self.instruments if 0 < len(s) <= _MAX_SYMBOL and s.upper() == s
        )
        object.__setattr__(self, "_exact", exact)

    def symbol(self, value: str, field: str) -> str:
        if not value:
            raise InvalidArgument(field, "required")
        if value in self._exact:
            return value
        if len(value) > _MAX_SYMBOL:
            raise InvalidArgument(field, f"at most {_MAX_SYMBOL} characters")
        symbol = value.upper()
        if symbol not in self.instruments:
            self.require_known()
            raise UnknownSymbol(value, field)
        return symbol

    def distinct_symbols(self, values: Sequence[str], field: str) -> list[str]:
        """The symbols ``values`` name (``field[i]`` in errors), each once."""
        exact = self._exact
        symbols: list[str] = []
        seen: set[str] = set()
        for i, value in enumerate(values):
            # A symbol spelled as listed is valid as it is; others take the full check.
            symbol = value if value in exact else self.symbol(value, f"{field}[{i}]")
            if symbol in seen:
                raise InvalidArgument(f"{field}[{i}]", f"{symbol} is repeated")
            seen.add(symbol)
            symbols.append(symbol)
        return symbols

    def interval(self, value: int, field: str) -> Interval:
        if value == pb.INTERVAL_UNSPECIFIED:
            raise InvalidArgument(field, "required")
        try:
            interval = Interval(value)
        except ValueError:
            raise InvalidArgument(field, f"unknown interval {value}") from None
        if interval not in self.intervals:
            served = ", ".join(i.label for i in self.intervals)
            raise InvalidArgument(field, f"{interval.label} is not served here (served: {served})")
        return interval


@dataclass(frozen=True, slots=True)
class Limits:
    stale_after: float = 10.0
    heartbeat_interval: float = 5.0
    max_series: int = 100
    max_history: int = 1000
    max_batch: int = 1000
    default_page_size: int = 500
    max_page_size: int = 1000
    recent_ticks: int = 100
    """Quotes kept per symbol: the most GetRecentTicks returns."""
    history_bytes: int = 256 << 20
    """Encoded history all streams may hold at once (see :class:`_HistoryBudget`)."""
    history_bytes_per_connection: int = 64 << 20
    """... and the streams of one connection."""


def _time(ts: Timestamp, field: str) -> int:
    if not _MIN_SECONDS <= ts.seconds <= _MAX_SECONDS or not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidArgument(field, "not a valid timestamp")
    return timestamp_ns(ts)


def _token_field(token: ResumeToken) -> bytes:
    return field_bytes(15, token.encode().encode())


def _joined(frames: Sequence[bytes], count: int) -> bytes:
    """The first ``count`` frames, concatenated."""
    if isinstance(frames, FrameRun):
        return frames.prefix(count)
    return b"".join(frames[:count])


# Live updates are the bulk of what streams send: the response for one update
# and one request fingerprint is the same bytes for every stream that asked
# the same and stands at the same position (the token names the epoch, the
# request and the position only), so it is built once and shared. A position
# is one sequence number per symbol of the request; a one-symbol request's
# key holds that number alone. The cache is small and simply restarted when full.
_MESSAGES_MAX = 8192
_MessageKey = tuple[bytes, int, int | tuple[int, ...], str]
"""(epoch, request fingerprint, position, symbol of the update) of a shared
live message. With sequence numbers per symbol, one position of a
several-symbol request is reached by the last update of either symbol: the
symbol tells which."""


class _PriceCache:
    """Each symbol's latest quote as field 1 of a response (``price`` of
    GetPriceResponse, one of ``prices`` of BatchGetPricesResponse), encoded
    once per quote and staleness instead of once per request."""

    __slots__ = ("_entries", "_missing")

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Quote, list[bytes | None]]] = {}
        self._missing: dict[str, bytes] = {}

    def field(self, quote: Quote, stale: bool) -> bytes:
        entry = self._entries.get(quote.symbol)
        if entry is None or (entry[0] is not quote and entry[0] != quote):
            entry = (quote, [None, None])
            self._entries[quote.symbol] = entry
        encoded = entry[1][stale]
        if encoded is None:
            encoded = field_bytes(1, quote_to_price(quote, stale=stale).SerializeToString())
            entry[1][stale] = encoded
        return encoded

    def missing(self, symbol: str) -> bytes:
        """A symbol without a quote yet: the symbol, marked stale."""
        encoded = self._missing.get(symbol)
        if encoded is None:
            encoded = field_bytes(1, pb.Price(symbol=symbol, stale=True).SerializeToString())
            self._missing[symbol] = encoded
        return encoded


def _frames_bytes(frames: Sequence[bytes]) -> int:
    """The encoded size of ``frames``."""
    return len(frames.data) if isinstance(frames, FrameRun) else sum(map(len, frames))


def _snapshot_bytes(snapshot: Snapshot) -> int:
    """The encoded candles a snapshot holds."""
    return sum(_frames_bytes(candles.frames) for candles in snapshot.slices)


class _HistoryBudget:
    """The encoded history that streams in their history phase hold, in
    total and per connection (gRPC peer).

    A stream holds its snapshot until it has sent all of it; a client that
    does not read keeps it suspended, and the snapshot with it. So a stream
    whose snapshot would take a connection, or the server, past its bound
    is refused (RESOURCE_EXHAUSTED, with a retry delay) instead.

    A trade stream's history is read in chunks (:data:`_HISTORY_CHUNK`
    trades) and holds one at a time: each chunk is taken before its first
    trade is sent and given back once its last one was. A chunk past the
    bound ends the stream the same way (after some history: the client
    resumes from its last resume token).
    """

    __slots__ = ("_by_peer", "_per_peer", "_total", "used")

    def __init__(self, total: int, per_peer: int) -> None:
        self._total = total
        self._per_peer = per_peer
        self._by_peer: dict[str, int] = {}
        self.used = 0

    def take(self, peer: str, size: int) -> None:
        if not size:
            return
        held = self._by_peer.get(peer, 0)
        if held + size > self._per_peer:
            raise LimitExceeded(
                "this connection's streams hold too much unsent history; "
                "read the streams already open, or retry later",
                retry_after=1.0,
            )
        if self.used + size > self._total:
            raise LimitExceeded(
                "the server's streams hold too much unsent history; retry later", retry_after=1.0
            )
        self._by_peer[peer] = held + size
        self.used += size

    def give(self, peer: str, size: int) -> None:
        if not size:
            return
        self.used -= size
        held = self._by_peer[peer] - size
        if held:
            self._by_peer[peer] = held
        else:
            del self._by_peer[peer]


class MarketDataServicer:
    """Implements ``marketdata.v1.MarketDataService``."""

    def __init__(
        self,
        store: Store,
        hub: Hub[Update],
        catalog: Catalog,
        limits: Limits,
        *,
        feed_state: Callable[[], Awaitable[tuple[FeedState, str]]] | None = None,
        trade_hub: Hub[TradeUpdate] | None = None,
        rejections: RejectionCounts | None = None,
    ) -> None:
        self._feed_state = feed_state
        self._store = store
        self._history_trades = store if isinstance(store, TradeHistory) else None
        """The store's trades past the hot log (a history tier), if it has them."""
        self._hub = hub
        # (an empty hub is falsy: compare with None)
        self._trade_hub: Hub[TradeUpdate] = Hub(conflate=False) if trade_hub is None else trade_hub
        self._rejections: RejectionCounts = Rejections() if rejections is None else rejections
        self._trade_messages: dict[_MessageKey, bytes] = {}
        self._catalog = catalog
        self._limits = limits
        self._stale_ns = limits.stale_after * 1e9
        self._prices = _PriceCache()
        self._messages: dict[_MessageKey, bytes] = {}
        self._history = _HistoryBudget(limits.history_bytes, limits.history_bytes_per_connection)

    def set_catalog(self, catalog: Catalog) -> None:
        """Serve ``catalog`` (the feed's symbols, once known)."""
        self._catalog = catalog

    def _stale(self, receive_time: int) -> bool:
        return time.time_ns() - receive_time > self._stale_ns

    @translate_errors
    async def GetPrice(self, request: pb.GetPriceRequest, context: Context) -> bytes:
        symbol = self._catalog.symbol(request.symbol, "symbol")
        (quote,) = await self._store.get_quotes([symbol])
        if quote is None:
            raise NoData(f"no quote received for {symbol} yet")
        # GetPriceResponse is field 1 (price) only: the cached field is the response.
        return self._prices.field(quote, self._stale(quote.receive_time))

    @translate_errors
    async def BatchGetPrices(self, request: pb.BatchGetPricesRequest, context: Context) -> bytes:
        values = request.symbols
        if not values:
            raise InvalidArgument("symbols", "at least one symbol is required")
        if len(values) > self._limits.max_batch:
            raise InvalidArgument("symbols", f"at most {self._limits.max_batch} symbols")
        symbols = self._catalog.distinct_symbols(values, "symbols")
        quotes = await self._store.get_quotes(symbols)
        now = time.time_ns()
        stale_ns = self._stale_ns
        prices = self._prices
        # BatchGetPricesResponse is field 1 (prices) repeated: the fields concatenated.
        return b"".join(
            [
                prices.missing(symbol)
                if quote is None
                else prices.field(quote, now - quote.receive_time > stale_ns)
                for symbol, quote in zip(symbols, quotes, strict=True)
            ]
        )

    @translate_errors
    async def GetCandles(self, request: pb.GetCandlesRequest, context: Context) -> bytes:
        symbol = self._catalog.symbol(request.symbol, "symbol")
        interval = self._catalog.interval(request.interval, "interval")
        start = _time(request.start_time, "start_time") if request.HasField("start_time") else None
        end = _time(request.end_time, "end_time") if request.HasField("end_time") else None
        if start is not None and end is not None and end <= start:
            raise InvalidArgument("end_time", "must be after start_time")
        if request.page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        size = min(request.page_size or self._limits.default_page_size, self._limits.max_page_size)
        request_id = fingerprint((symbol, interval, start, end))
        if request.page_token:
            if start is None:
                raise InvalidArgument("page_token", "paging needs start_time")
            page = PageToken.decode(request.page_token)
            if page.request != request_id:
                raise InvalidArgument("page_token", "belongs to a request with other fields")
            start = page.next_start
        found = await self._store.get_candles(
            SeriesKey(symbol, interval),
            start=start,
            end=end,
            limit=size + 1 if start is not None else size,
        )
        frames = found.frames
        body = _joined(frames, size)
        following = None
        if len(frames) > size:
            following = found.open_times[size]
            token = PageToken(request_id, following).encode()
            body += field_bytes(2, token.encode())
        if request.include_missing:
            body += await self._missing(SeriesKey(symbol, interval), found, start, end, following)
        return body

    async def _missing(
        self,
        series: SeriesKey,
        found: CandleSlice,
        start: int | None,
        end: int | None,
        following: int | None,
    ) -> bytes:
        """``missing_ranges`` of a GetCandles page (see the proto for its span)."""
        times = found.open_times
        if start is not None:
            first = bucket_start(series.interval, start)
            start = first if first == start else bucket_end(series.interval, first)
        elif len(times):
            start = times[0]
        else:
            return b""
        if following is not None:
            stop = following
        else:
            newest = await self._store.get_candles(series, start=None, end=None, limit=1)
            if not len(newest):
                return b""
            stop = bucket_end(series.interval, newest.open_times[0])
            if end is not None:
                stop = min(stop, end)
        if stop <= start:
            return b""
        holes = await coverage_of(self._store).missing(series, start, stop)
        return b"".join(
            field_bytes(
                30,
                pb.TimeRange(start_time=timestamp(lo), end_time=timestamp(hi)).SerializeToString(),
            )
            for lo, hi in holes
        )

    @translate_errors
    async def ListSymbols(
        self, request: pb.ListSymbolsRequest, context: Context
    ) -> pb.ListSymbolsResponse:
        self._catalog.require_known()
        served = self._catalog.intervals
        intervals = [i.value for i in served]
        instruments = self._catalog.instruments
        state, status = (
            await self._feed_state()
            if self._feed_state is not None
            else (FeedState.UNSPECIFIED, "")
        )
        try:
            earliest = await coverage_of(self._store).earliest(
                [SeriesKey(symbol, i) for symbol in instruments for i in served]
            )
        except DependencyUnavailable:
            earliest = {}  # coverage unknown while the history tier is away; the rest holds
        return pb.ListSymbolsResponse(
            symbols=[
                pb.SymbolInfo(
                    symbol=i.symbol,
                    price_precision=i.price_precision,
                    quantity_precision=i.quantity_precision,
                    intervals=intervals,  # type: ignore[arg-type]
                    source=i.source.value,  # type: ignore[arg-type]
                    base_asset=i.base_asset,
                    quote_asset=i.quote_asset,
                    feed_state=state.value,  # type: ignore[arg-type]
                    feed_status="" if state is FeedState.OK else status,
                    coverage=[
                        pb.SeriesCoverage(
                            interval=interval.value,  # type: ignore[arg-type]
                            earliest_open_time=timestamp(earliest[key]),
                        )
                        for interval in served
                        if (key := SeriesKey(i.symbol, interval)) in earliest
                    ],
                    rejections=[
                        pb.RejectionCount(
                            reason=reason.value,  # type: ignore[arg-type]
                            count=count,
                            last_time=timestamp(last),
                        )
                        for reason, count, last in self._rejections.of(i.symbol)
                    ],
                )
                for i in instruments.values()
            ]
        )

    @translate_errors
    async def GetRecentTicks(
        self, request: pb.GetRecentTicksRequest, context: Context
    ) -> pb.GetRecentTicksResponse:
        symbol = self._catalog.symbol(request.symbol, "symbol")
        if request.limit < 0:
            raise InvalidArgument("limit", "must not be negative")
        kept = self._limits.recent_ticks
        ticks = await self._store.recent_ticks(symbol, min(request.limit or kept, kept))
        now = time.time_ns()
        stale_ns = self._stale_ns
        return pb.GetRecentTicksResponse(
            ticks=[
                quote_to_price(quote, stale=now - quote.receive_time > stale_ns) for quote in ticks
            ]
        )

    def _series(self, request: pb.SubscribeCandlesRequest) -> list[SeriesKey]:
        if not request.series:
            raise InvalidArgument("series", "at least one series is required")
        if len(request.series) > self._limits.max_series:
            raise InvalidArgument("series", f"at most {self._limits.max_series} series per stream")
        keys: list[SeriesKey] = []
        for i, item in enumerate(request.series):
            key = SeriesKey(
                self._catalog.symbol(item.symbol, f"series[{i}].symbol"),
                self._catalog.interval(item.interval, f"series[{i}].interval"),
            )
            if key in keys:
                raise InvalidArgument(f"series[{i}]", f"{key} is repeated")
            keys.append(key)
        return keys

    def _stream_request(self, request: pb.SubscribeCandlesRequest) -> _Stream:
        """Every field checked, then the resume token matched to the store's epoch."""
        series = self._series(request)
        if request.history > self._limits.max_history:
            raise InvalidArgument("history", f"at most {self._limits.max_history}")
        start = _time(request.start_time, "start_time") if request.HasField("start_time") else None
        if start is not None and request.history:
            raise InvalidArgument("start_time", "set either history or start_time, not both")
        request_id = fingerprint((*series, request.history, start, request.closed_only))
        resume = ResumeToken.decode(request.resume_token) if request.resume_token else None
        if resume is not None and resume.request != request_id:
            raise InvalidArgument("resume_token", "belongs to a request with other fields")
        # A position is a sequence number per distinct symbol, in request order.
        symbols = list(dict.fromkeys(key.symbol for key in series))
        if resume is not None and len(resume.positions) != len(symbols):
            raise InvalidArgument("resume_token", "not a token issued by this service")
        resumed = None if resume is None else dict(zip(symbols, resume.positions, strict=True))
        epoch = self._store.epoch
        if resume is not None and resume.epoch != epoch:
            raise DataExpired("the data this resume_token points to is no longer retained")
        return _Stream(
            series,
            symbols,
            request.history,
            start,
            request.closed_only,
            request_id,
            epoch,
            resume,
            resumed,
        )

    async def SubscribeCandles(
        self, request: pb.SubscribeCandlesRequest, context: Context
    ) -> AsyncIterator[bytes]:
        """History (the snapshot at one position), ``snapshot_end``, then live
        updates from that position: the ones missed since, then the hub's."""
        # Errors become their status here rather than through
        # translate_stream_errors, and the live loop stays in this generator:
        # a wrapper or a nested async generator is one more frame every live
        # update would pass through. The phases' bookkeeping is in _Stream
        # and _LivePhase.
        try:
            store = self._store
            stream = self._stream_request(request)
            subscription = self._hub.subscribe(stream.series, closed_only=stream.closed_only)
            try:
                # History phase.
                position = stream.resumed_position()
                if position is None:
                    snapshot = await store.snapshot(
                        stream.series,
                        history=stream.history,
                        start=stream.start,
                        closed_only=stream.closed_only,
                        at=stream.resumed,
                    )
                    # Held until sent (a client that does not read keeps it):
                    # bounded per connection and in total.
                    size, peer = _snapshot_bytes(snapshot), context.peer()
                    self._history.take(peer, size)
                    try:
                        for message in stream.history_messages(snapshot):
                            yield message
                        position = snapshot.position
                    finally:
                        del snapshot  # not held through the live phase
                        self._history.give(peer, size)
                # Live phase: what was missed since the position, then the hub's updates.
                live = _LivePhase(stream, position, self._messages)
                missed = await store.read_updates(stream.series, after=position)
                for message in live.missed(missed):
                    yield message
                subscription.discard_through(position)
                heartbeat_interval = self._limits.heartbeat_interval
                published = self._hub.published_seq
                message_for = live.message
                sink = live.sink(subscription, outlet_of(context), heartbeat_interval)
                # Heartbeats follow what this stream sent, not what the hub
                # published: updates it does not send (already sent, or
                # filtered) do not keep it silent past the interval. (The
                # sink moves the wait's deadline when it writes.)
                clock = time.monotonic
                quiet_until = clock() + heartbeat_interval
                while True:
                    update = subscription.pop()
                    if update is None:
                        update = await subscription.next(quiet_until - clock(), sink)
                        quiet_until = subscription.deadline
                    if update is not None and (sent := message_for(update)) is not None:
                        yield sent
                        quiet_until = clock() + heartbeat_interval
                    elif update is None or clock() >= quiet_until:
                        yield live.heartbeat(published, self._heartbeat(stream.series))
                        quiet_until = clock() + heartbeat_interval
            finally:
                subscription.close()
        except CandlewireError as error:
            await abort(context, error)

    def _heartbeat(self, series: Sequence[SeriesKey]) -> bytes:
        event_times = self._hub.event_times
        return pb.Heartbeat(
            server_time=timestamp(time.time_ns()),
            watermarks=[
                pb.SeriesWatermark(
                    series=pb.Series(symbol=key.symbol, interval=key.interval.value),  # type: ignore[arg-type]
                    last_event_time=timestamp(event_times[key.symbol]),
                )
                if key.symbol in event_times
                else pb.SeriesWatermark(
                    series=pb.Series(symbol=key.symbol, interval=key.interval.value)  # type: ignore[arg-type]
                )
                for key in series
            ],
        ).SerializeToString()

    # --- trades -------------------------------------------------------------------------

    @translate_errors
    async def GetTrades(self, request: pb.GetTradesRequest, context: Context) -> bytes:
        symbol = self._catalog.symbol(request.symbol, "symbol")
        start = _time(request.start_time, "start_time") if request.HasField("start_time") else None
        end = _time(request.end_time, "end_time") if request.HasField("end_time") else None
        if start is not None and end is not None and end <= start:
            raise InvalidArgument("end_time", "must be after start_time")
        if request.page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        size = min(request.page_size or self._limits.default_page_size, self._limits.max_page_size)
        request_id = fingerprint(("trades", symbol, start, end))
        after: int | None = None
        if request.page_token:
            if start is None:
                raise InvalidArgument("page_token", "paging needs start_time")
            page = PageToken.decode(request.page_token)
            if page.request != request_id:
                raise InvalidArgument("page_token", "belongs to a request with other fields")
            after = page.next_start - 1
        history = self._history_trades
        found: TradeSlice
        if history is None:
            found = await self._store.get_trades(
                symbol,
                start=start,
                end=end,
                after=after or 0,
                limit=size + 1 if start is not None else size,
                latest=start is None,
            )
        elif start is None:
            found = await history.latest_trades(symbol, end=end, limit=size)
        else:
            found = await history.page_trades(
                symbol, start=start, end=end, after=after, upto=None, limit=size + 1
            )
        frames = found.frames
        body = _joined(frames, size)
        if len(frames) > size:
            token = PageToken(request_id, found.seqs[size]).encode()
            body += field_bytes(2, token.encode())
        return body

    def _trade_stream(self, request: pb.SubscribeTradesRequest) -> _Stream:
        if not request.symbols:
            raise InvalidArgument("symbols", "at least one symbol is required")
        if len(request.symbols) > self._limits.max_series:
            raise InvalidArgument(
                "symbols", f"at most {self._limits.max_series} symbols per stream"
            )
        symbols = self._catalog.distinct_symbols(request.symbols, "symbols")
        if request.history > self._limits.max_history:
            raise InvalidArgument("history", f"at most {self._limits.max_history}")
        start = _time(request.start_time, "start_time") if request.HasField("start_time") else None
        if start is not None and request.history:
            raise InvalidArgument("start_time", "set either history or start_time, not both")
        request_id = fingerprint(("trades", *symbols, request.history, start))
        resume = ResumeToken.decode(request.resume_token) if request.resume_token else None
        if resume is not None and resume.request != request_id:
            raise InvalidArgument("resume_token", "belongs to a request with other fields")
        if resume is not None and len(resume.positions) != len(symbols):
            raise InvalidArgument("resume_token", "not a token issued by this service")
        resumed = None if resume is None else dict(zip(symbols, resume.positions, strict=True))
        epoch = self._store.epoch
        if resume is not None and resume.epoch != epoch:
            raise DataExpired("the data this resume_token points to is no longer retained")
        keys: list[Key] = [TradeSymbol(s) for s in symbols]
        return _Stream(
            keys,  # type: ignore[arg-type]
            symbols,
            request.history,
            start,
            False,
            request_id,
            epoch,
            resume,
            resumed,
        )

    async def _trade_history(
        self, stream: _Stream, position: Mapping[str, int], peer: str
    ) -> AsyncGenerator[bytes, None]:
        """The stored trades of every symbol at ``position`` (after the resume
        token's trade, when resuming in history), then ``snapshot_end``. Each
        chunk read is held under the history budget until sent (see
        :class:`_HistoryBudget`)."""
        store, resume, budget = self._store, stream.resume, self._history
        vector = tuple(position[s] for s in stream.symbols)
        epoch, request_id = stream.epoch, stream.request_id
        history, start = stream.history, stream.start
        for index, symbol in enumerate(stream.symbols):
            if resume is not None and index < resume.series_index:
                continue
            upto = position[symbol]
            if resume is not None and index == resume.series_index and resume.cursor is not None:
                after = resume.cursor
            elif start is None:
                after = max(0, upto - history)
            else:
                after = 0
            if start is None and not history:
                continue
            while after < upto:
                found = await store.get_trades(
                    symbol, start=start, after=after, upto=upto, limit=_HISTORY_CHUNK
                )
                if resume is not None and not found.complete:
                    raise DataExpired(f"trades of {symbol} at this position are no longer retained")
                if not len(found):
                    break
                size = _frames_bytes(found.frames)
                budget.take(peer, size)
                try:
                    for seq, frame in zip(found.seqs, found.frames, strict=True):
                        token = ResumeToken(epoch, request_id, Phase.HISTORY, vector, index, seq)
                        yield frame + _token_field(token)
                    after = found.seqs[-1]
                finally:
                    del found  # not held while the next chunk is read
                    budget.give(peer, size)
        yield _SNAPSHOT_END + _token_field(ResumeToken(epoch, request_id, Phase.LIVE, vector))

    async def SubscribeTrades(
        self, request: pb.SubscribeTradesRequest, context: Context
    ) -> AsyncIterator[bytes]:
        """Stored trades at one position, ``snapshot_end``, then the live
        trades after that position: the ones missed since, then the hub's."""
        try:
            store = self._store
            stream = self._trade_stream(request)
            subscription = self._trade_hub.subscribe(stream.series)
            try:
                position = stream.resumed_position()
                if position is None:
                    position = stream.resumed
                    if position is None:
                        position = await store.trade_heads(stream.symbols)
                    # Closed here, not by the garbage collector, when the
                    # stream ends: the budget it holds comes back at once.
                    history = self._trade_history(stream, position, context.peer())
                    async with contextlib.aclosing(history):
                        async for message in history:
                            yield message
                live = _LivePhase(stream, dict(position), self._trade_messages)
                missed = await store.read_trades(stream.symbols, after=position)
                for message in live.missed(missed):
                    yield message
                subscription.discard_through(position)
                heartbeat_interval = self._limits.heartbeat_interval
                published = self._trade_hub.published_seq
                message_for = live.message
                sink = live.sink(subscription, outlet_of(context), heartbeat_interval)
                while True:
                    update = subscription.pop()
                    if update is None:
                        update = await subscription.next(heartbeat_interval, sink)
                    if update is None:
                        beat = pb.TradesHeartbeat(server_time=timestamp(time.time_ns()))
                        yield live.heartbeat(published, beat.SerializeToString())
                    elif (sent := message_for(update)) is not None:
                        yield sent
            finally:
                subscription.close()
        except CandlewireError as error:
            await abort(context, error)

    @translate_errors
    async def GetVolumeProfile(
        self, request: pb.GetVolumeProfileRequest, context: Context
    ) -> pb.GetVolumeProfileResponse:
        symbol = self._catalog.symbol(request.symbol, "symbol")
        if not request.HasField("start_time"):
            raise InvalidArgument("start_time", "required")
        start = _time(request.start_time, "start_time")
        end = _time(request.end_time, "end_time") if request.HasField("end_time") else None
        if end is not None and end <= start:
            raise InvalidArgument("end_time", "must be after start_time")
        step = _price_step(request.price_step)
        interval = (
            self._catalog.interval(request.interval, "interval")
            if request.interval != pb.INTERVAL_UNSPECIFIED
            else None
        )
        upto = (await self._store.trade_heads([symbol]))[symbol]
        if self._history_trades is not None:
            chunks, truncated = await _history_chunks(
                self._history_trades, symbol, start, end, upto
            )
        else:
            chunks, truncated = await _hot_chunks(self._store, symbol, start, end, upto)
        # Decoding and summing a day of trades takes a while: off the event loop.
        response = await asyncio.to_thread(_profile, chunks, start, end, step, interval)
        response.truncated = truncated
        return response


async def _hot_chunks(
    store: Store, symbol: str, start: int, end: int | None, upto: int
) -> tuple[list[bytes], bool]:
    """The trades of a volume profile from the hot log (joined frames), and
    whether some of them were evicted already."""
    chunks: list[bytes] = []
    after = 0
    truncated = False
    while after < upto:
        found = await store.get_trades(
            symbol, start=start, end=end, after=after, upto=upto, limit=_PROFILE_CHUNK
        )
        if after == 0 and not found.complete:
            truncated = True
        if not len(found):
            break
        chunks.append(_joined(found.frames, len(found)))
        after = found.seqs[-1]
    return chunks, truncated


async def _history_chunks(
    store: TradeHistory, symbol: str, start: int, end: int | None, upto: int
) -> tuple[list[bytes], bool]:
    """:func:`_hot_chunks` through a history tier: older trades from PostgreSQL."""
    chunks: list[bytes] = []
    cursor: int | None = None
    truncated = False
    while True:
        found = await store.page_trades(
            symbol, start=start, end=end, after=cursor, upto=upto, limit=_PROFILE_CHUNK
        )
        if cursor is None and not found.complete:
            truncated = True
        if len(found):
            chunks.append(_joined(found.frames, len(found)))
            cursor = found.seqs[-1]
        if len(found) < _PROFILE_CHUNK:
            return chunks, truncated


def _profile(
    chunks: Sequence[bytes], start: int, end: int | None, step: Decimal, interval: Interval | None
) -> pb.GetVolumeProfileResponse:
    """The response of GetVolumeProfile over the trades of ``chunks`` (joined frames)."""
    trades: list[TapeTrade] = []
    for chunk in chunks:
        trades.extend(_tape((chunk,), start, end))
    response = pb.GetVolumeProfileResponse(
        levels=[_level(level) for level in profile(trades, step)], trade_count=len(trades)
    )
    if interval is not None:
        response.footprint.extend(
            pb.FootprintCandle(
                open_time=timestamp(candle.open_time),
                close_time=timestamp(candle.close_time),
                levels=[_level(level) for level in candle.levels],
            )
            for candle in footprint(trades, step, interval)
        )
    return response


_HISTORY_CHUNK = 1000  # trades read per store call while sending history
_PROFILE_CHUNK = 20_000  # trades read per store call for a volume profile
_MAX_STEP_DIGITS = 30


def _price_step(text: str) -> Decimal:
    if not text:
        raise InvalidArgument("price_step", 'required, for example "0.5"')
    try:
        step = Decimal(text)
    except InvalidOperation:
        raise InvalidArgument("price_step", f"{text[:40]!r} is not a decimal number") from None
    if not step.is_finite() or step <= 0 or len(step.as_tuple().digits) > _MAX_STEP_DIGITS:
        raise InvalidArgument("price_step", "must be a positive decimal number")
    return step


_SIDES = {pb.AGGRESSOR_SIDE_BUY: Side.BUY, pb.AGGRESSOR_SIDE_SELL: Side.SELL}


def _tape(frames: Sequence[bytes], start: int, end: int | None) -> Iterator[TapeTrade]:
    """The trades of ``frames`` whose own event time is in ``[start, end)``,
    with their exact decimals (the shortest repr of the doubles on the wire)."""
    joined = frames.data if isinstance(frames, FrameRun) else b"".join(frames)
    exact: dict[float, Decimal] = {}  # prices and sizes repeat: convert each once
    for trade in pb.GetTradesResponse.FromString(joined).trades:
        t = timestamp_ns(trade.event_time)
        if t < start or (end is not None and t >= end):
            continue
        price, quantity = trade.price, trade.quantity
        p = exact.get(price)
        if p is None:
            p = exact[price] = Decimal(repr(price))
        q = exact.get(quantity)
        if q is None:
            q = exact[quantity] = Decimal(repr(quantity))
        yield (t, p, q, _SIDES.get(trade.side, Side.UNKNOWN))


def _level(level: Level) -> pb.PriceLevel:
    return pb.PriceLevel(
        price=float(level.price),
        buy_volume=float(level.buy),
        sell_volume=float(level.sell),
        unknown_volume=float(level.unknown),
        trade_count=level.count,
    )


class _Framed(Protocol):
    """What a stream message is made of: a candle update or a trade."""

    @property
    def seq(self) -> int: ...

    @property
    def series(self) -> Key: ...

    @property
    def closed(self) -> bool: ...

    @property
    def frame(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class _Stream:
    """A checked SubscribeCandles request, and its history phase."""

    series: list[SeriesKey]
    symbols: list[str]
    """The distinct symbols, in request order: the order of a position's numbers."""
    history: int
    start: int | None
    closed_only: bool
    request_id: int
    epoch: bytes
    resume: ResumeToken | None
    resumed: dict[str, int] | None
    """The resume token's position, by symbol."""

    def resumed_position(self) -> dict[str, int] | None:
        """Where a token of the live phase resumes (None: the history phase comes first)."""
        if self.resume is None or self.resume.phase is Phase.HISTORY:
            return None
        return self.resumed

    def history_messages(self, snapshot: Snapshot) -> Iterator[bytes]:
        """The snapshot's candles series by series (after the resume token's
        candle, when resuming in history), then ``snapshot_end``."""
        epoch, request_id, resume = self.epoch, self.request_id, self.resume
        position = snapshot.position
        vector = tuple(position[s] for s in self.symbols)
        for index, candles in enumerate(snapshot.slices):
            if resume is not None and index < resume.series_index:
                continue
            skip = resume.cursor if resume is not None and index == resume.series_index else None
            for open_time, frame in zip(candles.open_times, candles.frames, strict=True):
                if skip is not None and open_time <= skip:
                    continue
                token = ResumeToken(epoch, request_id, Phase.HISTORY, vector, index, open_time)
                yield frame + _token_field(token)
        yield _SNAPSHOT_END + _token_field(ResumeToken(epoch, request_id, Phase.LIVE, vector))


class _LivePhase:
    """The live phase of one stream: its position (the newest sequence number
    sent per symbol) and the message for each update past it.

    Messages go through ``messages``, shared by every stream of the servicer
    (see :data:`_MESSAGES_MAX`): a position is one number for a one-symbol
    request, else a tuple in the request's symbol order."""

    __slots__ = (
        "_at",
        "_closed_only",
        "_epoch",
        "_messages",
        "_request_id",
        "_single",
        "_symbols",
        "position",
    )

    def __init__(
        self, stream: _Stream, position: dict[str, int], messages: dict[_MessageKey, bytes]
    ) -> None:
        self.position = position
        # The stream's fields, copied: message() runs for every live update.
        self._at = position.__getitem__
        self._symbols = stream.symbols
        self._single = len(stream.symbols) == 1
        self._epoch = stream.epoch
        self._request_id = stream.request_id
        self._closed_only = stream.closed_only
        self._messages = messages

    def message(self, update: _Framed) -> bytes | None:
        """The response carrying ``update`` (the position moves past it), or
        None when the stream already sent it."""
        position = self.position
        seq = update.seq
        if seq <= position[symbol := update.series.symbol]:
            return None
        position[symbol] = seq
        at: int | tuple[int, ...] = seq if self._single else tuple(map(self._at, self._symbols))
        key = (self._epoch, self._request_id, at, symbol)
        messages = self._messages
        message = messages.get(key)
        if message is None:
            vector = (at,) if isinstance(at, int) else at
            token = live_token(self._epoch, self._request_id, vector).encode()
            message = update.frame + field_bytes(15, token)
            if len(messages) >= _MESSAGES_MAX:
                messages.clear()
            messages[key] = message
        return message

    def missed(self, updates: Sequence[_Framed]) -> Iterator[bytes]:
        """The messages of updates read from the store's log after the position."""
        closed_only = self._closed_only
        for update in updates:
            if closed_only and not update.closed:
                continue
            message = self.message(update)
            if message is not None:
                yield message

    def sink(
        self, subscription: Subscription[Any], outlet: Outlet | None, interval: float
    ) -> Sink[Any] | None:
        """For a face with an outlet, the sink of the live phase's waits: an
        update published while the stream waits becomes the same message
        (:meth:`message`) and is written by the publisher, without waking the
        stream's task; the wait then ends ``interval`` seconds later (the
        heartbeat follows what was sent)."""
        if outlet is None:
            return None
        message_for, write = self.message, outlet.write
        clock = time.monotonic

        def deliver(update: _Framed) -> bool:
            if not outlet.ready:
                return False  # queued: the stream's task sends it
            sent = message_for(update)
            if sent is not None:
                write(sent)
                subscription.deadline = clock() + interval
            return True

        return deliver

    def heartbeat(self, published: Mapping[str, int], watermarks: bytes) -> bytes:
        """A heartbeat; its token stands at what the hub published (nothing
        the stream was sent is newer, and nothing of its series is in between)."""
        position, symbols = self.position, self._symbols
        for symbol in symbols:
            position[symbol] = max(position[symbol], published.get(symbol, 0))
        vector = tuple(map(self._at, symbols))
        live = ResumeToken(self._epoch, self._request_id, Phase.LIVE, vector)
        return field_bytes(3, watermarks) + _token_field(live)
