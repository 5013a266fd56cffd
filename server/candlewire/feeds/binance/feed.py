"""BinanceFeed: Binance spot klines and quotes as a :class:`~candlewire.feeds.base.Feed`.

Start-up (:meth:`BinanceFeed.instruments`): ``GET /api/v3/exchangeInfo``
validates the configured symbols (unknown or not ``TRADING`` is a
:class:`~candlewire.errors.ConfigError`), gives each symbol's precision
(``tickSize``, ``stepSize``) and the request-weight limit.

Bootstrap (:meth:`BinanceFeed.backfill`): the last ``history`` klines of every
(symbol, interval) over REST, paged and paced by the rate limiter.

Live (:meth:`BinanceFeed.run`): combined-stream connections (1024 streams
each at most) carry ``<symbol>@kline_<interval>`` (venue candles, forming then
closed), ``<symbol>@bookTicker`` (quotes) and ``<symbol>@trade`` (the last
price of the quotes, and the trades themselves, recorded for trade streams:
``m``, the buyer is the maker, means the aggressor sold); every event time
``E`` becomes a watermark.

Continuity. Per series the feed remembers ``next_open``: every candle before
it was handed to the sink in its closed state. A series is *synced* from REST
(every kline from ``next_open`` on) whenever

* a connection carrying it was (re)subscribed: the REST request is sent after
  the subscription, so REST covers everything up to the moment the stream
  took over, and the overlap is de-duplicated; and
* a live kline opens after ``next_open``: klines were withheld or lost.

While a series is being synced its live klines wait (conflated: the newest
version per candle, so memory stays bounded) and are handed over afterwards,
so the backfilled candles always precede the live candle. A REST failure
leaves the series waiting and is retried with backoff; a failure is never a
gap. Versions older than what was already handed over (duplicated or
reordered messages, overlapping connections) are dropped here, and the sink
drops what is left.

A REST kline counts as closed when a later kline exists or its end is not
after the newest venue event time seen before the request; otherwise it is
forming and its closed version comes from the stream or the next sync.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import httpx

from candlewire.domain import (
    NANOS_PER_MILLI,
    Candle,
    Instrument,
    Interval,
    SeriesKey,
    Source,
    Trade,
)
from candlewire.errors import ConfigError
from candlewire.feeds.base import FeedSink
from candlewire.feeds.binance.errors import BinanceError, BinanceUnavailable
from candlewire.feeds.binance.http import KLINES_LIMIT, BinanceHttp, RateLimiter
from candlewire.feeds.binance.schemas import (
    BookTicker,
    ExchangeInfo,
    KlineEvent,
    StreamEvent,
    TradeEvent,
    instrument,
    kline_candle,
    quote,
    row_candle,
    trade,
    weight_limit,
)
from candlewire.feeds.binance.websocket import (
    MAX_STREAMS_PER_CONNECTION,
    CombinedStream,
    StreamOptions,
    stream_names,
)
from candlewire.intervals import fixed_length
from candlewire.retry import Backoff, Retry
from candlewire.tasks import cancel_and_wait, checkpoint

__all__ = ["BinanceConfig", "BinanceFeed"]

log = logging.getLogger(__name__)

_MS = NANOS_PER_MILLI
_RECENT = 64  # candles remembered per series to drop stale versions
_TAPE_LIMIT = 100_000  # trades waiting to be handed over


@dataclass(frozen=True, slots=True)
class BinanceConfig:
    """Endpoints, depths and timings of a :class:`BinanceFeed`."""

    rest_url: str = "https://api.binance.com"
    ws_url: str = "wss://stream.binance.com:9443"
    history: int = 1000
    """Klines per (symbol, interval) loaded at start-up."""
    silence_timeout: float = 30.0
    """A connection without any message for this long is dead."""
    weight_share: float = 0.5
    """Share of the REQUEST_WEIGHT limit this process allows itself."""
    connection_lifetime: float = 23.5 * 3600
    """Age at which a connection is replaced (Binance ends them at 24 h)."""
    streams_per_connection: int = MAX_STREAMS_PER_CONNECTION
    url_streams: int = 200
    """Streams named in the connection URL; the rest are sent as SUBSCRIBE requests."""
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    backoff_reset: float = 60.0
    """Seconds a connection must stay up before the backoff starts from the beginning again."""
    rest_timeout: float = 10.0
    open_timeout: float = 10.0
    sync_workers: int = 4
    """REST syncs run at once (they share the rate limiter)."""
    startup_attempts: int = 5
    """exchangeInfo attempts at start-up before giving up."""
    pending_limit: int = 2000
    """Candles kept per series while it waits for a sync (the oldest are dropped and re-synced)."""
    klines_limit: int = KLINES_LIMIT

    def __post_init__(self) -> None:
        if self.history < 1:
            raise ValueError("history must be at least 1")
        if not 0 < self.streams_per_connection <= MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"streams_per_connection must be 1..{MAX_STREAMS_PER_CONNECTION}")


@dataclass(slots=True)
class _Series:
    key: SeriesKey
    next_open: int | None = None
    """Every candle before this open time was handed over closed."""
    synced_at: int = -1
    """Newest venue event time seen before the last REST snapshot was requested."""
    recent: dict[int, Candle] = field(default_factory=dict)
    """The last version handed over, per open time (the newest candles only)."""


class BinanceFeed:
    """Implements :class:`~candlewire.feeds.base.Feed` for Binance spot.

    ``transport`` is an httpx transport for tests; the endpoints are in ``config``.
    """

    def __init__(
        self,
        symbols: Sequence[str],
        intervals: Sequence[Interval],
        config: BinanceConfig | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not symbols or not intervals:
            raise ValueError("at least one symbol and one interval")
        self.config = config or BinanceConfig()
        self._symbols = tuple(symbols)
        self._intervals = tuple(intervals)
        self._transport = transport
        self.limiter = RateLimiter(share=self.config.weight_share)
        self._series = {
            SeriesKey(s, i): _Series(SeriesKey(s, i))
            for s in self._symbols
            for i in self._intervals
        }
        self._streams: list[CombinedStream] = []
        # sync bookkeeping: a series is "held" (its live klines wait) while in any of these
        self._wanted: set[SeriesKey] = set()  # queued, not started
        self._syncing: set[SeriesKey] = set()  # started
        self._again: set[SeriesKey] = set()  # asked for again while syncing
        self._queue: asyncio.Queue[SeriesKey] = asyncio.Queue()
        self._synced = asyncio.Event()
        self._rest_problem: str | None = None
        # received, not yet handed over (conflated)
        self._pending: dict[SeriesKey, dict[int, tuple[Candle, int]]] = {}
        self._quotes_due: set[str] = set()
        self._marks: dict[str, int] = {}
        self._wake = asyncio.Event()
        # venue state
        self._venue_now = 0  # newest event time seen (ns)
        self._symbol_time: dict[str, int] = {}
        self._books: dict[str, tuple[BookTicker, int]] = {}
        self._last_trade: dict[str, tuple[int, Decimal]] = {}
        # @trade events not yet handed over (recorded, not aggregated: the
        # klines count them), each trade id once
        self._tape: list[Trade] = []

    # --- Feed --------------------------------------------------------------------------

    async def instruments(self) -> Mapping[str, Instrument]:
        """Validate the symbols against exchangeInfo; their precision from its filters."""
        retry = self._retry("Binance exchangeInfo", attempts=self.config.startup_attempts)
        async with self._http() as http:
            while True:
                try:
                    info = await self._exchange_info(http)
                    break
                except BinanceUnavailable as error:
                    await retry.wait(error)  # raises after startup_attempts
        found = {s.symbol: s for s in info.symbols}
        problems = [f"{s} is not a Binance spot symbol" for s in self._symbols if s not in found]
        problems += [
            f"{s} is not trading (status {found[s].status})"
            for s in self._symbols
            if s in found and found[s].status != "TRADING"
        ]
        if problems:
            raise ConfigError(f"symbols (CANDLEWIRE_SYMBOLS): {'; '.join(problems)}")
        limit = weight_limit(info)
        if limit is not None:
            self.limiter.set_limit(limit)
        return {s: instrument(found[s]) for s in self._symbols}

    async def backfill(self, sink: FeedSink) -> None:
        """Load the last ``history`` klines of every series."""
        async with self._http() as http:
            self._sync_all(self._series)
            try:
                async with asyncio.TaskGroup() as tasks:
                    workers = [
                        tasks.create_task(self._sync_worker(http, sink), name=f"binance-sync-{n}")
                        for n in range(self.config.sync_workers)
                    ]
                    await self._synced.wait()
                    await cancel_and_wait(*workers)
            except BaseExceptionGroup as group:
                _raise_first(group)
        log.info("Binance history loaded for %d series", len(self._series))

    async def run(self, sink: FeedSink) -> None:
        """Stream until cancelled: connections, REST syncs, and the hand-over to ``sink``."""
        self._streams = self._make_streams()
        async with self._http() as http:
            try:
                async with asyncio.TaskGroup() as tasks:
                    for stream in self._streams:
                        tasks.create_task(stream.run(), name=stream.name)
                    for n in range(self.config.sync_workers):
                        tasks.create_task(self._sync_worker(http, sink), name=f"binance-sync-{n}")
                    tasks.create_task(self._hand_over(sink), name="binance-hand-over")
            except BaseExceptionGroup as group:
                _raise_first(group)

    def status(self) -> tuple[bool, str]:
        """(healthy, why not): false while banned, while a connection is down, or
        while series wait for a REST sync that keeps failing."""
        banned = self.limiter.banned_for
        if banned > 0:
            return False, f"Binance banned this IP (HTTP 418): no REST request for {banned:.0f}s"
        for stream in self._streams:
            if not stream.up:
                return False, f"Binance {stream.name} down: {stream.problem}"
        if self._rest_problem is not None and (self._wanted or self._syncing):
            return False, f"Binance REST unavailable: {self._rest_problem}"
        return True, "ok"

    @property
    def connections(self) -> int:
        """Websocket connections opened so far."""
        return sum(stream.connections for stream in self._streams)

    @property
    def failures(self) -> int:
        """Websocket connections lost so far (planned rotations not counted)."""
        return sum(stream.failures for stream in self._streams)

    # --- plumbing ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _http(self) -> AsyncIterator[BinanceHttp]:
        http = BinanceHttp(
            self.config.rest_url,
            timeout=self.config.rest_timeout,
            transport=self._transport,
            limiter=self.limiter,
            klines_limit=self.config.klines_limit,
        )
        try:
            yield http
        finally:
            await http.aclose()

    def _retry(self, name: str, *, attempts: int | None = None) -> Retry:
        """The backoff of a REST loop: retries BinanceUnavailable only."""
        return Retry(
            Backoff(initial=self.config.backoff_initial, maximum=self.config.backoff_max),
            name=name,
            retryable=lambda error: isinstance(error, BinanceUnavailable),
            attempts=attempts,
        )

    async def _exchange_info(self, http: BinanceHttp) -> ExchangeInfo:
        try:
            return await http.exchange_info(self._symbols)
        except BinanceError as error:
            if error.code != -1121:  # "Invalid symbol."
                raise
        unknown = []
        for symbol in self._symbols:
            try:
                await http.exchange_info([symbol])
            except BinanceError as error:
                if error.code != -1121:
                    raise
                unknown.append(symbol)
        raise ConfigError(
            f"symbols (CANDLEWIRE_SYMBOLS): not Binance spot symbols: {', '.join(unknown)}"
        )

    def _make_streams(self) -> list[CombinedStream]:
        options = StreamOptions(
            silence_timeout=self.config.silence_timeout,
            lifetime=self.config.connection_lifetime,
            open_timeout=self.config.open_timeout,
            backoff_initial=self.config.backoff_initial,
            backoff_max=self.config.backoff_max,
            backoff_reset=self.config.backoff_reset,
            url_streams=self.config.url_streams,
        )
        names: list[tuple[str, SeriesKey | None]] = []
        for symbol in self._symbols:
            for name in stream_names(symbol, self._intervals):
                key = None
                if "@kline_" in name:
                    key = SeriesKey(symbol, Interval.parse(name.rsplit("_", 1)[1]))
                names.append((name, key))
        size = self.config.streams_per_connection
        streams = []
        for n, start in enumerate(range(0, len(names), size)):
            chunk = names[start : start + size]
            keys = [key for _, key in chunk if key is not None]
            streams.append(
                CombinedStream(
                    self.config.ws_url,
                    [name for name, _ in chunk],
                    options,
                    on_event=self._on_event,
                    on_subscribed=functools.partial(self._sync_all, keys),
                    name=f"stream-{n}",
                )
            )
        return streams

    # --- receiving (synchronous, called by the connections' readers) -------------------

    def _on_event(self, event: StreamEvent, received: int) -> None:
        if isinstance(event, KlineEvent):
            candle = kline_candle(event.k, Source.LIVE)
            if candle.series in self._series:
                self._buffer(candle, event.E * _MS)
            self._note_time(event.s, event.E * _MS)
        elif isinstance(event, TradeEvent):
            last = self._last_trade.get(event.s)
            if last is None or event.t > last[0]:
                self._last_trade[event.s] = (event.t, event.p)
                self._quotes_due.add(event.s)
                self._tape.append(trade(event, receive_time=received, source=Source.LIVE))
                if len(self._tape) > _TAPE_LIMIT:
                    del self._tape[: len(self._tape) - _TAPE_LIMIT]
                    log.warning("trades wait too long to be handed over; the oldest are dropped")
            self._note_time(event.s, event.E * _MS)
        elif isinstance(event, BookTicker):
            book = self._books.get(event.s)
            if book is None or event.u >= book[0].u:
                self._books[event.s] = (event, received)
                self._quotes_due.add(event.s)
        else:
            return
        self._wake.set()

    def _note_time(self, symbol: str, time: int) -> None:
        if time > self._marks.get(symbol, -1):
            self._marks[symbol] = time
        if time > self._symbol_time.get(symbol, -1):
            self._symbol_time[symbol] = time
        if time > self._venue_now:
            self._venue_now = time

    def _buffer(self, candle: Candle, event_time: int) -> None:
        key = candle.series
        slot = self._pending.setdefault(key, {})
        kept = slot.get(candle.open_time)
        if kept is None or _newer(candle, kept[0]):
            slot[candle.open_time] = (candle, max(event_time, kept[1] if kept else -1))
        if len(slot) > self.config.pending_limit:
            del slot[min(slot)]
            log.warning("%s: too many candles waiting; the oldest is left to a new sync", key)
            self._sync_all([key])

    # --- handing over ------------------------------------------------------------------

    async def _hand_over(self, sink: FeedSink) -> None:
        while True:
            checkpoint()
            await self._wake.wait()
            self._wake.clear()
            candles = self._take_candles()
            if candles:
                await sink.candles(candles)
            if self._tape:
                tape, self._tape = self._tape, []
                await sink.record_trades(tape)
            if self._quotes_due:
                due, self._quotes_due = self._quotes_due, set()
                quotes = []
                for symbol in sorted(due):
                    book = self._books.get(symbol)
                    if book is None:
                        continue
                    last = self._last_trade.get(symbol)
                    quotes.append(
                        quote(
                            book[0],
                            time=self._symbol_time.get(symbol, book[1]),
                            receive_time=book[1],
                            last=last[1] if last else None,
                            source=Source.LIVE,
                        )
                    )
                if quotes:
                    await sink.quotes(quotes)
            marks, self._marks = self._marks, {}
            for symbol, time in marks.items():
                await sink.watermark(symbol, time)

    def _held(self, key: SeriesKey) -> bool:
        return key in self._wanted or key in self._syncing

    def _take_candles(self) -> list[Candle]:
        """The buffered klines of series not being synced, in order, stale ones dropped.

        A kline that opens after ``next_open`` and arrived after the last REST
        snapshot means klines are missing: it and its successors go back to
        the buffer and the series is synced first.
        """
        out: list[Candle] = []
        for key in [k for k in self._pending if not self._held(k)]:
            items = sorted(self._pending.pop(key).values(), key=lambda item: item[0].open_time)
            state = self._series[key]
            for index, (candle, event_time) in enumerate(items):
                start = state.next_open
                if start is not None and candle.open_time > start:
                    if event_time > state.synced_at:
                        self._pending[key] = {c.open_time: (c, e) for c, e in items[index:]}
                        log.info(
                            "%s: kline %s arrived while %s was expected; filling the gap",
                            key,
                            _iso(candle.open_time),
                            _iso(start),
                        )
                        self._sync_all([key])
                        break
                    log.warning(
                        "%s: Binance has no klines from %s to %s",
                        key,
                        _iso(start),
                        _iso(candle.open_time),
                    )
                    state.next_open = candle.open_time
                if _accept(state, candle):
                    out.append(candle)
        return out

    # --- REST syncs --------------------------------------------------------------------

    def _sync_all(self, keys: Iterable[SeriesKey]) -> None:
        for key in keys:
            if key in self._syncing:
                self._again.add(key)
            elif key not in self._wanted:
                self._wanted.add(key)
                self._queue.put_nowait(key)
            self._synced.clear()

    async def _sync_worker(self, http: BinanceHttp, sink: FeedSink) -> None:
        while True:
            checkpoint()
            key = await self._queue.get()
            self._wanted.discard(key)
            self._syncing.add(key)
            retry = self._retry(f"{key}: REST sync")
            try:
                while True:
                    checkpoint()
                    try:
                        await self._sync(http, sink, key)
                        self._rest_problem = None
                        break
                    except BinanceUnavailable as error:
                        self._rest_problem = str(error)
                        await retry.wait(error)
            finally:
                self._syncing.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self._sync_all([key])
                if not self._wanted and not self._syncing:
                    self._synced.set()
                self._wake.set()

    async def _sync(self, http: BinanceHttp, sink: FeedSink, key: SeriesKey) -> None:
        """Fetch the series' klines from ``next_open`` on (or the last ``history``)
        and hand over what is new."""
        state = self._series[key]
        venue_now = self._venue_now  # before the request: what REST must already know
        label = key.interval.label
        history = self.config.history
        length = fixed_length(key.interval)
        start = state.next_open
        if start is not None and length and venue_now and (venue_now - start) // length > history:
            log.warning(
                "%s: gap since %s is longer than %d klines; older klines are left out",
                key,
                _iso(start),
                history,
            )
            start = None
        if start is None:
            rows = await http.recent_klines(key.symbol, label, history)
        else:
            rows = await http.klines_since(key.symbol, label, start // _MS)
        last = len(rows) - 1
        candles = [
            row_candle(
                key.symbol,
                key.interval,
                row,
                closed=n < last or (row.closeTime + 1) * _MS <= venue_now,
                source=Source.BACKFILL,
                unit=_MS,
            )
            for n, row in enumerate(rows)
        ]
        state.synced_at = venue_now
        fresh = [candle for candle in candles if _accept(state, candle)]
        if fresh:
            await sink.candles(fresh)


def _newer(candle: Candle, seen: Candle) -> bool:
    """Whether ``candle`` is a later version of the same candle than ``seen``."""
    if seen.closed and not candle.closed:
        return False
    if candle.trade_count != seen.trade_count:
        return candle.trade_count > seen.trade_count
    return candle.closed and not seen.closed


def _accept(state: _Series, candle: Candle) -> bool:
    """Record ``candle`` as handed over unless it is stale; move ``next_open``."""
    seen = state.recent.get(candle.open_time)
    if seen is not None:
        if not _newer(candle, seen):
            return False
    elif (
        state.next_open is not None
        and candle.open_time < state.next_open
        and (not state.recent or candle.open_time < min(state.recent))
    ):
        return False  # older than anything remembered: handed over closed long ago
    recent = state.recent
    recent[candle.open_time] = candle
    if len(recent) > _RECENT:
        del recent[min(recent)]
    if candle.closed:
        end = candle.close_time
        state.next_open = end if state.next_open is None else max(state.next_open, end)
    elif state.next_open is None:
        state.next_open = candle.open_time
    return True


def _raise_first(group: BaseExceptionGroup[BaseException]) -> None:
    """Re-raise the first real error of a task group (not the group itself)."""
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            _raise_first(error)
        elif not isinstance(error, asyncio.CancelledError):
            raise error
    raise group


def _iso(time: int) -> str:
    return datetime.datetime.fromtimestamp(time / 1e9, datetime.UTC).isoformat()
