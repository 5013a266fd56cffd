"""The asyncio client: :class:`CandlewireClient` and its resumable :class:`CandleStream`
and :class:`TradeStream`.

::

    async with CandlewireClient("localhost:50051", decimals=True) as client:
        history = await client.fetch_candles("BTCUSDT", "1m", start="2026-01-01")
        async for event in client.subscribe_candles(["BTCUSDT@1m"], history=100):
            ...

One client holds one HTTP/2 channel; use it from one event loop. Unary calls
get a deadline (``timeout``) and are retried a few times on UNAVAILABLE;
subscriptions reconnect by themselves and resume exactly after the last event
they yielded.
"""

# The `timeout` parameters are gRPC deadlines, sent to the server with the call,
# which asyncio.timeout (what ASYNC109 suggests) cannot do.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import inspect
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar, Unpack, cast, overload

import grpc
from grpc_health.v1 import health_pb2

from candlewire_client._convert import (
    candle_from_pb,
    decimal_of,
    event_from_pb,
    from_timestamp,
    price_from_pb,
    profile_from_pb,
    symbol_from_pb,
    to_timestamp,
    trade_event_from_pb,
    trade_from_pb,
)
from candlewire_client.errors import (
    CandlewireError,
    DeadlineExceededError,
    InvalidArgumentError,
    UnavailableError,
    from_rpc_error,
)
from candlewire_client.models import (
    Candle,
    CandleEvent,
    CandleList,
    ContinuityLost,
    Event,
    Health,
    Interval,
    IntervalLike,
    N,
    Price,
    Series,
    SeriesLike,
    SnapshotEnd,
    SymbolInfo,
    TimeLike,
    Trade,
    TradeEvent,
    TradeList,
    TradesContinuityLost,
    TradeStreamEvent,
    VolumeProfile,
    parse_time,
)
from candlewire_client.options import (
    DEFAULT_TARGET,
    ENV_API_KEY,
    ENV_BEARER_TOKEN,
    ClientOptions,
    check_options,
    credential,
    target_from,
)
from candlewire_client.retry import RetryPolicy, is_retryable
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc

__all__ = [
    "DEFAULT_TARGET",
    "SERVICE_NAME",
    "CandleStream",
    "CandlewireClient",
    "ReconnectCallback",
    "StreamState",
    "TradeStream",
    "channel_options",
]

SERVICE_NAME = "marketdata.v1.MarketDataService"
"""The gRPC service name, also the health-check name of the service's readiness."""

_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_HEALTH_WATCH = "/grpc.health.v1.Health/Watch"
MAX_PAGE_SIZE = 1000  # the service's cap on candles per GetCandles response
MIN_KEEPALIVE = 10.0  # the server refuses pings more often than every 10 s
_VERSION = "0.1.0"

T = TypeVar("T")

ReconnectCallback = Callable[[int, float, CandlewireError], object]
"""``on_reconnect(attempt, delay, error)``: called before each reconnect of a stream.

``attempt`` counts consecutive failures (1 after a healthy stream), ``delay``
is the wait in seconds before reconnecting and ``error`` what ended the last
attempt. The callback may be a coroutine function; it is awaited.
"""

StreamState = Literal["connecting", "history", "live", "reconnecting", "closed", "failed"]
"""Where a :class:`CandleStream` is: ``history`` until snapshot_end, then ``live``."""


def channel_options(
    *, keepalive: float, retry: RetryPolicy, extra: Iterable[tuple[str, Any]] = ()
) -> list[tuple[str, Any]]:
    """The gRPC channel arguments of a client.

    Keepalive pings every ``keepalive`` seconds (the server allows one per 10 s
    and ends connections that ping faster), also while a stream is idle, so a
    dead connection is noticed within ``keepalive + 10`` seconds. The
    channel's own reconnect backoff follows ``retry`` so that a reconnecting
    stream is not held back by gRPC's default of up to 120 s.
    """
    if keepalive < MIN_KEEPALIVE:
        raise InvalidArgumentError.local(
            "keepalive", f"must be at least {MIN_KEEPALIVE:g} seconds (the server's ping limit)"
        )
    options: dict[str, Any] = {
        "grpc.keepalive_time_ms": int(keepalive * 1000),
        "grpc.keepalive_timeout_ms": 10_000,
        "grpc.keepalive_permit_without_calls": 0,
        "grpc.http2.max_pings_without_data": 0,
        "grpc.initial_reconnect_backoff_ms": max(1, int(retry.initial * 1000)),
        "grpc.max_reconnect_backoff_ms": max(1, int(retry.maximum * 1000)),
        "grpc.primary_user_agent": f"candlewire-client-python/{_VERSION}",
    }
    options.update(dict(extra))
    return list(options.items())


def _series_list(series: SeriesLike | Iterable[SeriesLike]) -> list[Series]:
    if isinstance(series, Series | str):
        return [Series.of(series)]
    if (
        isinstance(series, tuple)
        and len(series) == 2
        and isinstance(series[0], str)
        and "@" not in series[0]
    ):
        return [Series.of(cast(tuple[str, IntervalLike], series))]
    items = [Series.of(item) for item in series]
    if not items:
        raise InvalidArgumentError.local("series", "at least one series is required")
    return items


class CandlewireClient(Generic[N]):
    """Async client of ``marketdata.v1.MarketDataService``.

    Use it as ``async with CandlewireClient(target) as client:`` (or call
    :meth:`close`). ``target`` is ``host:port`` (any gRPC target string;
    default ``CANDLEWIRE_TARGET``, else ``localhost:50051``); ``decimals``
    gives prices and volumes as exact ``Decimal`` (``True``, typed
    ``CandlewireClient[Decimal]``) or ``float``. The other keyword options
    (TLS, credentials, deadlines, keepalive, retry policy, channel arguments)
    are those of :class:`~candlewire_client.options.ClientOptions`;
    ``api_key`` and ``bearer_token`` default to ``CANDLEWIRE_API_KEY`` and
    ``CANDLEWIRE_BEARER_TOKEN``.
    """

    @overload
    def __init__(
        self: CandlewireClient[float],
        target: str | None = None,
        *,
        decimals: Literal[False] = False,
        **options: Unpack[ClientOptions],
    ) -> None: ...
    @overload
    def __init__(
        self: CandlewireClient[Decimal],
        target: str | None = None,
        *,
        decimals: Literal[True],
        **options: Unpack[ClientOptions],
    ) -> None: ...
    def __init__(
        self,
        target: str | None = None,
        *,
        decimals: bool = False,
        **options: Unpack[ClientOptions],
    ) -> None:
        check_options(options, type(self).__name__)
        target = target_from(target)
        retry = options.get("retry")
        timeout = options.get("timeout", 10.0)
        keepalive = options.get("keepalive", 20.0)
        root_certificates = options.get("root_certificates")
        private_key = options.get("private_key")
        certificate_chain = options.get("certificate_chain")
        tls = options.get("tls", False)
        api_key = credential(options.get("api_key"), ENV_API_KEY)
        bearer_token = credential(options.get("bearer_token"), ENV_BEARER_TOKEN)
        self.target = target
        """The gRPC target this client connects to."""
        self.decimals = decimals
        """Whether numbers are ``Decimal`` (else ``float``)."""
        self.timeout = timeout
        """Default deadline of unary calls, in seconds."""
        self.retry = retry or RetryPolicy()
        """Retry policy of unary calls, and the default of subscriptions."""
        self._number: Callable[[float], N] = cast(
            Callable[[float], N], decimal_of if decimals else float
        )
        self._options = channel_options(
            keepalive=keepalive, retry=self.retry, extra=options.get("options", ())
        )
        self._credentials: grpc.ChannelCredentials | None = None
        if tls or root_certificates or private_key or certificate_chain:
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=root_certificates,
                private_key=private_key,
                certificate_chain=certificate_chain,
            )
        pairs: list[tuple[str, str]] = []
        if api_key is not None:
            pairs.append(("x-api-key", api_key))
        if bearer_token is not None:
            pairs.append(("authorization", f"Bearer {bearer_token}"))
        pairs.extend(options.get("metadata", ()))
        for key, _ in pairs:
            if key != key.lower() or not key or key.endswith("-bin"):
                raise InvalidArgumentError.local(
                    "metadata", f"key {key!r} must be lower case and not end in -bin"
                )
        self._metadata: tuple[tuple[str, str], ...] = tuple(pairs)
        self._channel: grpc.aio.Channel | None = None
        self._stub: marketdata_pb2_grpc.MarketDataServiceAsyncStub | None = None
        self._health_check: (
            grpc.aio.UnaryUnaryMultiCallable[
                health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
            ]
            | None
        ) = None
        self._health_watch: (
            grpc.aio.UnaryStreamMultiCallable[
                health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse
            ]
            | None
        ) = None
        self._streams: weakref.WeakSet[_ResumingStream[N, Any]] = weakref.WeakSet()
        self._closed = False

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> CandlewireClient[N]:
        self._connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    async def close(self) -> None:
        """Close the channel; open subscriptions end (their iteration stops)."""
        self._closed = True
        for stream in list(self._streams):
            stream._client_closed()
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def _connect(self) -> marketdata_pb2_grpc.MarketDataServiceAsyncStub:
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._stub is None:
            if self._credentials is not None:
                channel = grpc.aio.secure_channel(
                    self.target, self._credentials, options=self._options
                )
            else:
                channel = grpc.aio.insecure_channel(self.target, options=self._options)
            self._channel = channel
            self._stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
            self._health_check = channel.unary_unary(
                _HEALTH_CHECK,
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            self._health_watch = channel.unary_stream(
                _HEALTH_WATCH,
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
        return self._stub

    # -- unary calls -------------------------------------------------------

    async def _unary(
        self,
        method: Callable[..., Awaitable[T]],
        request: object,
        timeout: float | None,
    ) -> T:
        timeout = self.timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                if remaining is not None and remaining <= 0:
                    raise DeadlineExceededError(
                        grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded while retrying"
                    )
                return await method(request, timeout=remaining, metadata=self._metadata)
            except grpc.aio.AioRpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                delay = self.retry.delay(attempt, error.retry_delay)
                if (
                    attempt >= self.retry.unary_attempts
                    or not is_retryable(error)
                    or (deadline is not None and time.monotonic() + delay >= deadline)
                ):
                    raise error from rpc_error
            await asyncio.sleep(delay)

    async def get_price(self, symbol: str, *, timeout: float | None = None) -> Price[N]:
        """The latest quote of ``symbol``.

        Raises NotFoundError for a symbol not served here and UnavailableError
        when no quote was received for it yet.
        """
        stub = self._connect()
        response = await self._unary(stub.GetPrice, pb.GetPriceRequest(symbol=symbol), timeout)
        price = price_from_pb(response.price, self._number)
        if price is None:
            raise UnavailableError(grpc.StatusCode.UNAVAILABLE, f"no quote for {symbol} yet")
        return price

    async def get_prices(
        self, symbols: Iterable[str], *, timeout: float | None = None
    ) -> dict[str, Price[N] | None]:
        """The latest quotes of several symbols in one call.

        The dict is in request order, keyed by the symbol as the service names
        it (upper case); the value is ``None`` for a symbol without a quote yet.
        """
        stub = self._connect()
        request = pb.BatchGetPricesRequest(symbols=list(symbols))
        response = await self._unary(stub.BatchGetPrices, request, timeout)
        return {p.symbol: price_from_pb(p, self._number) for p in response.prices}

    async def list_symbols(self, *, timeout: float | None = None) -> list[SymbolInfo]:
        """The symbols this deployment serves, with their intervals and precision."""
        stub = self._connect()
        response = await self._unary(stub.ListSymbols, pb.ListSymbolsRequest(), timeout)
        return [symbol_from_pb(s) for s in response.symbols]

    async def get_candles(
        self,
        symbol: str,
        interval: IntervalLike,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        limit: int | None = None,
        *,
        page_size: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Candle[N]]:
        """Stored candles with ``start <= open_time < end``, ascending, paged transparently.

        ``start`` defaults to the oldest candle retained and ``end`` to now.
        With ``limit``, at most that many: the first ``limit`` from ``start``
        when it is given, otherwise the *latest* ``limit`` before ``end``.
        Candles are fetched ``page_size`` (at most 1000) per call; with a
        ``start`` they are yielded page by page as they arrive, without one
        the pages are fetched backwards from ``end`` and yielded once all are
        in. ``timeout`` applies to each page.
        """
        interval = Interval.parse(interval)
        if limit is not None and limit < 0:
            raise InvalidArgumentError.local("limit", "must not be negative")
        if page_size is not None and not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgumentError.local("page_size", f"must be 1 to {MAX_PAGE_SIZE}")
        page = page_size or MAX_PAGE_SIZE
        start_at = None if start is None else parse_time(start, "start")
        end_at = None if end is None else parse_time(end, "end")
        stub = self._connect()
        request = pb.GetCandlesRequest(symbol=symbol, interval=interval.number)  # type: ignore[arg-type]
        if end_at is not None:
            request.end_time.CopyFrom(to_timestamp(end_at))
        if limit == 0:
            return
        if start_at is not None:
            request.start_time.CopyFrom(to_timestamp(start_at))
            remaining = limit
            while True:
                request.page_size = page if remaining is None else min(page, remaining)
                response = await self._unary(stub.GetCandles, request, timeout)
                for candle in response.candles:
                    yield candle_from_pb(candle, self._number)
                if remaining is not None:
                    remaining -= len(response.candles)
                    if remaining <= 0:
                        return
                if not response.next_page_token:
                    return
                request.page_token = response.next_page_token
        # Without start the service returns the latest page before end_time:
        # walk backwards, each page ending where the previous one began.
        pages: list[list[pb.Candle]] = []
        remaining = limit
        while remaining is None or remaining > 0:
            size = page if remaining is None else min(page, remaining)
            request.page_size = size
            response = await self._unary(stub.GetCandles, request, timeout)
            candles = list(response.candles)
            pages.append(candles)
            if remaining is not None:
                remaining -= len(candles)
            if len(candles) < size:
                break
            request.end_time.CopyFrom(candles[0].open_time)
        for candles in reversed(pages):
            for candle in candles:
                yield candle_from_pb(candle, self._number)

    async def fetch_candles(
        self,
        symbol: str,
        interval: IntervalLike,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        limit: int | None = None,
        *,
        page_size: int | None = None,
        timeout: float | None = None,
    ) -> CandleList[N]:
        """:meth:`get_candles` collected into a :class:`~candlewire_client.models.CandleList`."""
        candles = [
            candle
            async for candle in self.get_candles(
                symbol, interval, start, end, limit, page_size=page_size, timeout=timeout
            )
        ]
        return CandleList(tuple(candles))

    # -- streaming ---------------------------------------------------------

    def subscribe_candles(
        self,
        series: SeriesLike | Iterable[SeriesLike],
        *,
        history: int = 0,
        start: TimeLike | None = None,
        closed_only: bool = False,
        resume_token: str | None = None,
        on_reconnect: ReconnectCallback | None = None,
        retry: RetryPolicy | None = None,
        idle_timeout: float | None = None,
    ) -> CandleStream[N]:
        """A live, resumable stream of candle events of one or more series.

        ``series`` is one or a list of ``"BTCUSDT@1m"``, ``("BTCUSDT", "1m")``
        or :class:`~candlewire_client.models.Series`. The stream yields the
        ``history`` most recent candles of each series (or those opened at or
        after ``start``), then one
        :class:`~candlewire_client.models.SnapshotEnd`, then every change of
        a candle as a :class:`~candlewire_client.models.CandleEvent` (a new
        revision replaces the old) and a
        :class:`~candlewire_client.models.Heartbeat` when the server has
        nothing else to send. ``closed_only`` keeps closed candles only.

        The stream reconnects by itself after UNAVAILABLE, a lost connection or
        RESOURCE_EXHAUSTED (it fell behind), waiting per ``retry`` (default: the
        client's policy) and telling ``on_reconnect``; it resumes exactly
        after the last event it yielded, so nothing is missed or repeated.
        When the server refuses to resume (OUT_OF_RANGE: it restarted with an
        empty store, or the position is past retention), the stream yields a
        :class:`~candlewire_client.models.ContinuityLost` and starts again from
        the newest candle it delivered, without repeating versions the caller
        already has. Errors a retry cannot fix (INVALID_ARGUMENT, NOT_FOUND,
        UNAUTHENTICATED, an OUT_OF_RANGE ``resume_token`` passed in here or a
        ``start`` before the retained data ...) are raised at once.

        ``resume_token`` continues an earlier stream with the same arguments
        (see :attr:`CandleStream.resume_token`). ``idle_timeout`` treats that
        many seconds without any message (heartbeats included) as a lost
        connection. Iterate with ``async for``; ``aclose()`` (or ``async
        with``) ends the stream.
        """
        if self._closed:
            raise RuntimeError("the client is closed")
        items = _series_list(series)
        if not 0 <= history <= MAX_PAGE_SIZE:
            raise InvalidArgumentError.local("history", f"must be 0 to {MAX_PAGE_SIZE}")
        if start is not None and history:
            raise InvalidArgumentError.local("start", "set either history or start, not both")
        if idle_timeout is not None and idle_timeout <= 0:
            raise InvalidArgumentError.local("idle_timeout", "must be positive")
        request = pb.SubscribeCandlesRequest(
            series=[
                pb.Series(symbol=s.symbol, interval=s.interval.number)  # type: ignore[arg-type]
                for s in items
            ],
            history=history,
            closed_only=closed_only,
        )
        if start is not None:
            request.start_time.CopyFrom(to_timestamp(parse_time(start, "start")))
        stream = CandleStream(
            self,
            request,
            series=tuple(items),
            resume_token=resume_token,
            on_reconnect=on_reconnect,
            retry=retry or self.retry,
            idle_timeout=idle_timeout,
        )
        self._streams.add(stream)
        return stream

    # -- trades and order flow ----------------------------------------------

    async def get_trades(
        self,
        symbol: str,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        limit: int | None = None,
        *,
        page_size: int | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Trade[N]]:
        """Stored trades of ``symbol`` in the order received, paged transparently.

        With ``start``, the trades from ``start`` to ``end`` (default: now),
        yielded page by page (the first ``limit`` when given); without it, the
        latest ``limit`` (default: one page) before ``end``. ``timeout``
        applies to each page.
        """
        if limit is not None and limit < 0:
            raise InvalidArgumentError.local("limit", "must not be negative")
        if page_size is not None and not 1 <= page_size <= MAX_PAGE_SIZE:
            raise InvalidArgumentError.local("page_size", f"must be 1 to {MAX_PAGE_SIZE}")
        page = page_size or MAX_PAGE_SIZE
        stub = self._connect()
        request = pb.GetTradesRequest(symbol=symbol)
        if end is not None:
            request.end_time.CopyFrom(to_timestamp(parse_time(end, "end")))
        if limit == 0:
            return
        if start is None:
            # The service answers the latest page before end_time; the
            # order of arrival is kept, so a second page back is not asked for.
            request.page_size = min(limit or page, MAX_PAGE_SIZE)
            response = await self._unary(stub.GetTrades, request, timeout)
            for trade in response.trades:
                yield trade_from_pb(trade, self._number)
            return
        request.start_time.CopyFrom(to_timestamp(parse_time(start, "start")))
        remaining = limit
        while True:
            request.page_size = page if remaining is None else min(page, remaining)
            response = await self._unary(stub.GetTrades, request, timeout)
            for trade in response.trades:
                yield trade_from_pb(trade, self._number)
            if remaining is not None:
                remaining -= len(response.trades)
                if remaining <= 0:
                    return
            if not response.next_page_token:
                return
            request.page_token = response.next_page_token

    async def fetch_trades(
        self,
        symbol: str,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        limit: int | None = None,
        *,
        page_size: int | None = None,
        timeout: float | None = None,
    ) -> TradeList[N]:
        """:meth:`get_trades` collected into a :class:`~candlewire_client.models.TradeList`."""
        trades = [
            trade
            async for trade in self.get_trades(
                symbol, start, end, limit, page_size=page_size, timeout=timeout
            )
        ]
        return TradeList(tuple(trades))

    def subscribe_trades(
        self,
        symbols: str | Iterable[str],
        *,
        history: int = 0,
        start: TimeLike | None = None,
        resume_token: str | None = None,
        on_reconnect: ReconnectCallback | None = None,
        retry: RetryPolicy | None = None,
        idle_timeout: float | None = None,
    ) -> TradeStream[N]:
        """A live, resumable stream of the trades of one or more symbols.

        It yields the ``history`` most recent stored trades of each symbol (or
        those from ``start``), one :class:`~candlewire_client.models.SnapshotEnd`,
        then every trade as a :class:`~candlewire_client.models.TradeEvent`,
        and heartbeats when there is nothing else. Reconnection, resumption
        and continuity losses work as for :meth:`subscribe_candles` (the event
        is a :class:`~candlewire_client.models.TradesContinuityLost`).
        """
        if self._closed:
            raise RuntimeError("the client is closed")
        names = [symbols] if isinstance(symbols, str) else list(symbols)
        names = [n for part in names for n in part.split(",") if n]
        if not names:
            raise InvalidArgumentError.local("symbols", "at least one symbol is required")
        if not 0 <= history <= MAX_PAGE_SIZE:
            raise InvalidArgumentError.local("history", f"must be 0 to {MAX_PAGE_SIZE}")
        if start is not None and history:
            raise InvalidArgumentError.local("start", "set either history or start, not both")
        if idle_timeout is not None and idle_timeout <= 0:
            raise InvalidArgumentError.local("idle_timeout", "must be positive")
        request = pb.SubscribeTradesRequest(symbols=names, history=history)
        if start is not None:
            request.start_time.CopyFrom(to_timestamp(parse_time(start, "start")))
        stream = TradeStream(
            self,
            request,
            symbols=tuple(names),
            resume_token=resume_token,
            on_reconnect=on_reconnect,
            retry=retry or self.retry,
            idle_timeout=idle_timeout,
        )
        self._streams.add(stream)
        return stream

    async def get_volume_profile(
        self,
        symbol: str,
        start: TimeLike,
        end: TimeLike | None = None,
        *,
        price_step: str | Decimal | float,
        interval: IntervalLike | None = None,
        timeout: float | None = None,
    ) -> VolumeProfile[N]:
        """Volume at price of ``symbol`` from ``start`` to ``end`` (default: now),
        in levels ``price_step`` wide, split by aggressor side; with
        ``interval``, also per candle of that interval (the footprint)."""
        step = repr(price_step) if isinstance(price_step, float) else str(price_step)
        request = pb.GetVolumeProfileRequest(symbol=symbol, price_step=step)
        request.start_time.CopyFrom(to_timestamp(parse_time(start, "start")))
        if end is not None:
            request.end_time.CopyFrom(to_timestamp(parse_time(end, "end")))
        if interval is not None:
            request.interval = Interval.parse(interval).number  # type: ignore[assignment]
        stub = self._connect()
        response = await self._unary(stub.GetVolumeProfile, request, timeout)
        return profile_from_pb(response, self._number)

    # -- health ------------------------------------------------------------

    async def _check(self, service: str, timeout: float | None) -> str:
        self._connect()
        assert self._health_check is not None
        request = health_pb2.HealthCheckRequest(service=service)
        try:
            response = await self._health_check(
                request,
                timeout=self.timeout if timeout is None else timeout,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as rpc_error:
            if rpc_error.code() == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            raise from_rpc_error(rpc_error) from rpc_error
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    async def health(self, *, timeout: float | None = None) -> Health:
        """Liveness (service ``""``) and readiness (the market-data service) via grpc.health.v1.

        Not retried: an unreachable server raises UnavailableError at once.
        """
        liveness = await self._check("", timeout)
        readiness = await self._check(SERVICE_NAME, timeout)
        return Health(liveness, readiness)

    async def wait_until_ready(self, timeout: float | None = None) -> Health:
        """Wait (health Watch) until the service is ready; DeadlineExceededError after ``timeout``.

        Waits for the server to come up too, so it suits start-up scripts.
        """
        self._connect()
        assert self._health_watch is not None
        call = self._health_watch(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME),
            timeout=timeout,
            metadata=self._metadata,
            wait_for_ready=True,
        )
        try:
            async for response in call:
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return await self.health(timeout=timeout)
        except grpc.aio.AioRpcError as rpc_error:
            raise from_rpc_error(rpc_error) from rpc_error
        finally:
            call.cancel()
        raise UnavailableError(grpc.StatusCode.UNAVAILABLE, "health watch ended")


E = TypeVar("E")


class _ResumingStream(AsyncIterator[E], Generic[N, E]):
    """What candle and trade streams share: the connection loop, which
    reconnects with backoff and resumes after the last event yielded, and
    starts afresh (with an event saying so) when the server refuses to
    resume. Subclasses open the call, convert responses and start again."""

    def __init__(
        self,
        client: Any,
        request: Any,
        *,
        resume_token: str | None,
        on_reconnect: ReconnectCallback | None,
        retry: RetryPolicy,
        idle_timeout: float | None,
    ) -> None:
        self._client: CandlewireClient[N] = client
        self._request = request
        self.resume_token: str | None = resume_token
        """Token of the last event yielded: pass it as ``resume_token`` to continue later."""
        self.state: StreamState = "connecting"
        """``connecting``, ``history``, ``live``, ``reconnecting``, ``closed`` or ``failed``."""
        self.reconnects = 0
        """How many times the stream reconnected."""
        self.last_error: CandlewireError | None = None
        """What ended the last connection (or the stream), if anything did."""
        self._on_reconnect = on_reconnect
        self._retry = retry
        self._idle_timeout = idle_timeout
        # A stream started from a saved token cannot tell whether the token was
        # issued before snapshot_end (tokens are opaque): it reports "live".
        self._snapshot_done = resume_token is not None
        self.continuity_losses = 0
        """How many times the stream started again after a refused resume token."""
        self._original = request
        # Whether self.resume_token was issued to this stream (not passed in):
        # only then is a refusal of it survived rather than raised.
        self._token_issued = False
        self._call: grpc.aio.UnaryStreamCall[Any, Any] | None = None
        self._stopping = False
        self._busy = False
        self._events: AsyncGenerator[E, None] = self._run()

    def __aiter__(self) -> Self:
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def __anext__(self) -> E:
        self._busy = True
        try:
            return await self._events.__anext__()
        finally:
            self._busy = False

    async def aclose(self) -> None:
        """End the stream and cancel its call; iteration stops."""
        self._client_closed()
        if not self._busy:  # else the task iterating sees its call cancelled and ends
            await self._events.aclose()
        self.state = "closed"

    def _client_closed(self) -> None:
        self._stopping = True
        if self._call is not None:
            self._call.cancel()

    def _ended(self) -> bool:
        task = asyncio.current_task()
        return self._stopping and (task is None or task.cancelling() == 0)

    # -- what a kind of stream defines -------------------------------------

    def _open(
        self, stub: marketdata_pb2_grpc.MarketDataServiceAsyncStub, request: Any
    ) -> grpc.aio.UnaryStreamCall[Any, Any]:
        raise NotImplementedError

    def _convert(self, response: Any) -> E | None:
        """The event of ``response`` to yield, or None (unknown, or already delivered)."""
        raise NotImplementedError

    def _start_again(self, error: CandlewireError) -> E:
        """Replace the refused request by a fresh one; the event announcing it."""
        raise NotImplementedError

    def _start_from(self, newest: Mapping[Any, datetime], wanted: int) -> datetime | None:
        """Replace the refused request by a fresh one (the original without its
        resume token) that starts at the oldest of the ``newest`` times
        delivered per key, or at the original start where fewer than
        ``wanted`` keys delivered anything and that start is older; return
        where the fresh request starts (None: where the original did)."""
        original = self._original
        request = type(original)()
        request.CopyFrom(original)
        request.ClearField("resume_token")
        since: datetime | None = None
        if newest:
            times = list(newest.values())
            if original.HasField("start_time") and len(newest) < wanted:
                times.append(from_timestamp(original.start_time))
            since = min(times)
            request.history = 0
            request.start_time.CopyFrom(to_timestamp(since))
        elif original.HasField("start_time"):
            since = from_timestamp(original.start_time)
        self._request = request
        self.resume_token = None
        self._token_issued = False
        self._snapshot_done = False
        self.state = "connecting"
        self.continuity_losses += 1
        return since

    async def _run(self) -> AsyncGenerator[E, None]:
        client = self._client
        attempt = 0
        while not self._stopping:
            stub = client._connect()
            request = type(self._request)()
            request.CopyFrom(self._request)
            request.resume_token = self.resume_token or ""
            resuming = bool(request.resume_token) and self._token_issued
            self.state = "connecting"
            call = self._open(stub, request)
            self._call = call
            connected_at: float | None = None
            lost: CandlewireError | None = None
            try:
                while True:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose
                    # a cancellation that arrives as the read completes.
                    async with asyncio.timeout(self._idle_timeout):
                        received = await call.read()
                    if self._stopping:
                        break
                    if received is grpc.aio.EOF:
                        error: CandlewireError = UnavailableError(
                            grpc.StatusCode.UNAVAILABLE, "the server ended the stream"
                        )
                        break
                    received = cast(Any, received)  # a response of the stream's kind
                    if connected_at is None:
                        connected_at = time.monotonic()
                    if received.resume_token:
                        self.resume_token = received.resume_token
                        self._token_issued = resuming = True
                    if received.WhichOneof("event") == "snapshot_end":
                        self._snapshot_done = True
                    self.state = "live" if self._snapshot_done else "history"
                    event = self._convert(received)
                    if event is not None:
                        yield event
            except grpc.aio.AioRpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                if error.code is grpc.StatusCode.OUT_OF_RANGE and resuming:
                    lost = error
                elif not is_retryable(error):
                    self.state, self.last_error = "failed", error
                    raise error from rpc_error
            except TimeoutError:
                error = UnavailableError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"no message for {self._idle_timeout:g} s (idle_timeout)",
                )
            except asyncio.CancelledError:
                if self._ended():
                    break
                raise
            finally:
                call.cancel()
                self._call = None
            if self._stopping:
                break
            if lost is not None:
                # The server is there but no longer has our position: start
                # again at once, after telling the caller.
                self.last_error = lost
                yield self._start_again(lost)
                continue
            healthy = (
                connected_at is not None
                and time.monotonic() - connected_at >= self._retry.reset_after
            )
            attempt = 1 if healthy else attempt + 1
            self.last_error = error
            if self._retry.max_attempts is not None and attempt > self._retry.max_attempts:
                self.state = "failed"
                raise error
            delay = self._retry.delay(attempt, error.retry_delay)
            self.state = "reconnecting"
            self.reconnects += 1
            if self._on_reconnect is not None:
                result = self._on_reconnect(attempt, delay, error)
                if inspect.isawaitable(result):
                    await result
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                if self._ended():
                    break
                raise
        self.state = "closed"


class CandleStream(_ResumingStream[N, Event[N]]):
    """A resumable candle subscription; see :meth:`CandlewireClient.subscribe_candles`.

    Iterate it once, from one task. :attr:`state`, :attr:`reconnects`,
    :attr:`continuity_losses` and :attr:`last_error` describe the connection
    (for display); the stream ends when :meth:`aclose` is called or the client
    is closed.
    """

    def __init__(
        self,
        client: CandlewireClient[N],
        request: pb.SubscribeCandlesRequest,
        *,
        series: tuple[Series, ...],
        resume_token: str | None,
        on_reconnect: ReconnectCallback | None,
        retry: RetryPolicy,
        idle_timeout: float | None,
    ) -> None:
        self.series = series
        """The subscribed series, in request order."""
        # Per series, as (symbol, wire interval): the fingerprints of the
        # versions delivered by open time, and the newest open time delivered.
        self._delivered: dict[tuple[str, int], dict[datetime, int]] = {}
        self._newest: dict[tuple[str, int], datetime] = {}
        self._lost = False
        self._floor: dict[tuple[str, int], datetime] | None = None
        super().__init__(
            client,
            request,
            resume_token=resume_token,
            on_reconnect=on_reconnect,
            retry=retry,
            idle_timeout=idle_timeout,
        )

    def _open(
        self, stub: marketdata_pb2_grpc.MarketDataServiceAsyncStub, request: Any
    ) -> grpc.aio.UnaryStreamCall[Any, Any]:
        return stub.SubscribeCandles(request, metadata=self._client._metadata)

    def _convert(self, response: Any) -> Event[N] | None:
        response = cast(pb.SubscribeCandlesResponse, response)
        event = event_from_pb(response, self._client._number)
        if isinstance(event, SnapshotEnd):
            self._floor = None
        if isinstance(event, CandleEvent) and not self._deliver(event.candle, response.candle):
            return None
        return event

    def _deliver(self, candle: Candle[N], wire: pb.Candle) -> bool:
        """Whether to yield ``candle``, noting what was delivered; see :class:`ContinuityLost`."""
        series = (wire.symbol, wire.interval)
        content = _content(wire)
        delivered = self._delivered.get(series)
        if delivered is None:
            delivered = self._delivered[series] = {}
        open_time = candle.open_time
        if self._lost:
            floor = None if self._floor is None else self._floor.get(series)
            if floor is not None and open_time < floor:
                return False  # replayed history the caller already has
            if delivered.get(open_time) == content:
                return False  # the same market data, renumbered or sent again
        delivered.pop(open_time, None)
        delivered[open_time] = content
        if len(delivered) > _REMEMBERED:
            del delivered[next(iter(delivered))]
        newest = self._newest.get(series)
        if newest is None or open_time > newest:
            self._newest[series] = open_time
        return True

    def _start_again(self, error: CandlewireError) -> ContinuityLost:
        """Replace the refused request by a fresh one; the event announcing it."""
        since = self._start_from(self._newest, len(self.series))
        self._lost = True
        self._floor = dict(self._newest)
        return ContinuityLost(self.series, since, error.details)


class TradeStream(_ResumingStream[N, TradeStreamEvent[N]]):
    """A resumable trade subscription; see :meth:`CandlewireClient.subscribe_trades`.

    The same connection handling as :class:`CandleStream`: it reconnects and
    resumes exactly after the last event yielded, and after a refused resume
    token yields a :class:`~candlewire_client.models.TradesContinuityLost`
    and starts again without repeating trades already delivered.
    """

    def __init__(
        self,
        client: CandlewireClient[N],
        request: pb.SubscribeTradesRequest,
        *,
        symbols: tuple[str, ...],
        resume_token: str | None,
        on_reconnect: ReconnectCallback | None,
        retry: RetryPolicy,
        idle_timeout: float | None,
    ) -> None:
        self.symbols = symbols
        """The subscribed symbols, in request order."""
        # Per symbol: fingerprints of the last trades delivered, and the
        # event time of the newest one.
        self._delivered: dict[str, dict[int, None]] = {}
        self._newest: dict[str, datetime] = {}
        self._lost = False
        self._floor: dict[str, datetime] | None = None
        super().__init__(
            client,
            request,
            resume_token=resume_token,
            on_reconnect=on_reconnect,
            retry=retry,
            idle_timeout=idle_timeout,
        )

    def _open(
        self, stub: marketdata_pb2_grpc.MarketDataServiceAsyncStub, request: Any
    ) -> grpc.aio.UnaryStreamCall[Any, Any]:
        return stub.SubscribeTrades(request, metadata=self._client._metadata)

    def _convert(self, response: Any) -> TradeStreamEvent[N] | None:
        response = cast(pb.SubscribeTradesResponse, response)
        event = trade_event_from_pb(response, self._client._number)
        if isinstance(event, SnapshotEnd):
            self._floor = None
        if isinstance(event, TradeEvent):
            wire = response.trade
            symbol, moment = wire.symbol, event.trade.event_time
            content = hash(
                (wire.trade_id, wire.event_time.seconds, wire.event_time.nanos, wire.price,
                 wire.quantity, wire.side)
            )  # fmt: skip
            delivered = self._delivered.setdefault(symbol, {})
            if self._lost:
                floor = None if self._floor is None else self._floor.get(symbol)
                if floor is not None and moment < floor:
                    return None  # before the newest trade the caller has
                if content in delivered:
                    return None  # delivered before the loss
            delivered[content] = None
            if len(delivered) > _REMEMBERED:
                del delivered[next(iter(delivered))]
            newest = self._newest.get(symbol)
            if newest is None or moment > newest:
                self._newest[symbol] = moment
        return event

    def _start_again(self, error: CandlewireError) -> TradesContinuityLost:
        since = self._start_from(self._newest, len(self.symbols))
        self._lost = True
        self._floor = dict(self._newest)
        return TradesContinuityLost(self.symbols, since, error.details)


_REMEMBERED = 512
"""Candle versions remembered per series to recognise them after a continuity loss."""


def _content(wire: pb.Candle) -> int:
    """A fingerprint of a candle's market data: every field but revision and source.

    Taken from the wire message, whose doubles hash faster than decimals.
    """
    return hash(
        (
            wire.open_time.seconds,
            wire.open_time.nanos,
            wire.close_time.seconds,
            wire.close_time.nanos,
            wire.open,
            wire.high,
            wire.low,
            wire.close,
            wire.volume,
            wire.quote_volume,
            wire.trade_count,
            wire.closed,
        )
    )
