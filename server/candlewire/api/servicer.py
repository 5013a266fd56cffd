"""The MarketDataService servicer: validation, then store and hub calls.

Every request field is checked before anything is read; a bad field is an
InvalidArgument naming it (``series[2].interval``). Responses that carry
candles are assembled from the frames the store encoded once (see
:mod:`candlewire.codec`), so these handlers return bytes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from candlewire.api.status import abort, translate_errors
from candlewire.api.tokens import PageToken, Phase, ResumeToken, fingerprint, live_token
from candlewire.codec import FrameRun, field_bytes, quote_to_price, timestamp, timestamp_ns
from candlewire.domain import FeedState, Instrument, Interval, Quote, SeriesKey
from candlewire.errors import (
    CandlewireError,
    DataExpired,
    InvalidArgument,
    NoData,
    UnknownSymbol,
)
from candlewire.hub import Hub
from candlewire.store.base import Store
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
    _exact: frozenset[str] = dataclass_field(init=False, repr=False, compare=False)
    """Symbols that :meth:`symbol` returns unchanged when given as they are."""

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
            raise UnknownSymbol(value, field)
        return symbol

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


class MarketDataServicer:
    """Implements ``marketdata.v1.MarketDataService``."""

    def __init__(
        self,
        store: Store,
        hub: Hub,
        catalog: Catalog,
        limits: Limits,
        *,
        feed_state: Callable[[], tuple[FeedState, str]] | None = None,
    ) -> None:
        self._feed_state = feed_state
        self._store = store
        self._hub = hub
        self._catalog = catalog
        self._limits = limits
        self._stale_ns = limits.stale_after * 1e9
        self._prices = _PriceCache()
        self._messages: dict[tuple[bytes, int, int | tuple[int, ...]], bytes] = {}

    def _stale(self, receive_time: int) -> bool:
        return time.time_ns() - receive_time > self._stale_ns

    def _live_message(
        self, request_id: int, epoch: bytes, position: int | tuple[int, ...], frame: bytes
    ) -> bytes:
        """``frame`` followed by the live resume token at ``position`` (the
        sequence number of a one-symbol request, else one per symbol), shared
        by streams."""
        key = (epoch, request_id, position)
        message = self._messages.get(key)
        if message is None:
            vector = (position,) if isinstance(position, int) else position
            token = live_token(epoch, request_id, vector).encode()
            message = frame + field_bytes(15, token)
            if len(self._messages) >= _MESSAGES_MAX:
                self._messages.clear()
            self._messages[key] = message
        return message

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
        catalog = self._catalog
        exact = catalog._exact
        symbols: list[str] = []
        seen: set[str] = set()
        for i, value in enumerate(values):
            # A symbol spelled as listed is valid as it is; others take the full check.
            symbol = value if value in exact else catalog.symbol(value, f"symbols[{i}]")
            if symbol in seen:
                raise InvalidArgument(f"symbols[{i}]", f"{symbol} is repeated")
            seen.add(symbol)
            symbols.append(symbol)
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
        if len(frames) > size:
            token = PageToken(request_id, found.open_times[size]).encode()
            body += field_bytes(2, token.encode())
        return body

    @translate_errors
    async def ListSymbols(
        self, request: pb.ListSymbolsRequest, context: Context
    ) -> pb.ListSymbolsResponse:
        intervals = [i.value for i in self._catalog.intervals]
        state, status = (
            self._feed_state() if self._feed_state is not None else (FeedState.UNSPECIFIED, "")
        )
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
                )
                for i in self._catalog.instruments.values()
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

    async def SubscribeCandles(
        self, request: pb.SubscribeCandlesRequest, context: Context
    ) -> AsyncIterator[bytes]:
        # Errors become their status here rather than through
        # translate_stream_errors: that wrapper is one more async generator
        # every live update would pass through.
        try:
            series = self._series(request)
            if request.history > self._limits.max_history:
                raise InvalidArgument("history", f"at most {self._limits.max_history}")
            start = (
                _time(request.start_time, "start_time") if request.HasField("start_time") else None
            )
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
            store = self._store
            epoch = store.epoch
            if resume is not None and resume.epoch != epoch:
                raise DataExpired("the data this resume_token points to is no longer retained")

            subscription = self._hub.subscribe(series, closed_only=request.closed_only)
            try:
                if resume is None or resume.phase is Phase.HISTORY:
                    snapshot = await store.snapshot(
                        series,
                        history=request.history,
                        start=start,
                        closed_only=request.closed_only,
                        at=resumed,
                    )
                    position = snapshot.position
                    vector = tuple(position[s] for s in symbols)
                    for index, candles in enumerate(snapshot.slices):
                        if resume is not None and index < resume.series_index:
                            continue
                        skip = (
                            resume.cursor
                            if resume is not None and index == resume.series_index
                            else None
                        )
                        for open_time, frame in zip(
                            candles.open_times, candles.frames, strict=True
                        ):
                            if skip is not None and open_time <= skip:
                                continue
                            token = ResumeToken(
                                epoch, request_id, Phase.HISTORY, vector, index, open_time
                            )
                            yield frame + _token_field(token)
                    live = ResumeToken(epoch, request_id, Phase.LIVE, vector)
                    yield _SNAPSHOT_END + _token_field(live)
                else:
                    assert resumed is not None
                    position = resumed
                live_message = self._live_message
                single = len(symbols) == 1
                at = position.__getitem__
                for missed in await store.read_updates(series, after=position):
                    if request.closed_only and not missed.closed:
                        continue
                    seq = position[missed.series.symbol] = missed.seq
                    key = seq if single else tuple(map(at, symbols))
                    yield live_message(request_id, epoch, key, missed.frame)
                subscription.discard_through(position)
                heartbeat_interval = self._limits.heartbeat_interval
                published = self._hub.published_seq
                while True:
                    update = subscription.pop()
                    if update is None:
                        update = await subscription.next(heartbeat_interval)
                    if update is None:
                        for symbol in symbols:
                            position[symbol] = max(position[symbol], published.get(symbol, 0))
                        live = ResumeToken(epoch, request_id, Phase.LIVE, tuple(map(at, symbols)))
                        yield field_bytes(3, self._heartbeat(series)) + _token_field(live)
                    elif (seq := update.seq) > position[symbol := update.series.symbol]:
                        position[symbol] = seq
                        key = seq if single else tuple(map(at, symbols))
                        yield live_message(request_id, epoch, key, update.frame)
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
