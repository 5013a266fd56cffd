"""The blocking client, for scripts and notebooks: :class:`Client`.

::

    with Client("localhost:50051") as client:
        df = client.fetch_candles("BTCUSDT", "1h", start="2026-01-01").to_pandas()
        for event in client.subscribe_candles("BTCUSDT@1m"):
            ...

It is a thin layer over :class:`~candlewire_client.aio.CandlewireClient`
running on a private event loop in a daemon thread, so both clients share one
implementation of paging, retries and stream resumption. Every method blocks
the calling thread only; Ctrl-C (KeyboardInterrupt) cancels the call in
progress. It also works inside Jupyter, whose own event loop it leaves alone.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from decimal import Decimal
from types import TracebackType
from typing import Any, Generic, Literal, Self, TypeVar, Unpack, cast, overload

from candlewire_client.aio import (
    CandleStream,
    CandlewireClient,
    ReconnectCallback,
    TradeStream,
    _ResumingStream,
)
from candlewire_client.errors import CandlewireError
from candlewire_client.models import (
    Candle,
    CandleList,
    Event,
    Health,
    IntervalLike,
    N,
    Price,
    Series,
    SeriesLike,
    SymbolInfo,
    TimeLike,
    Trade,
    TradeList,
    TradeStreamEvent,
    VolumeProfile,
)
from candlewire_client.options import ClientOptions, check_options
from candlewire_client.retry import RetryPolicy

__all__ = ["BlockingCandleStream", "BlockingTradeStream", "Client"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._main, name="candlewire-client-loop", daemon=True
        )
        self._started = threading.Event()
        self._stopping = False
        self._thread.start()
        self._started.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._started.set)
        self.loop.run_forever()

    def stopping(self) -> bool:
        """Whether :meth:`stop` was called (from any thread)."""
        return self._stopping

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def in_loop_thread(self) -> bool:
        """Whether the caller runs on the loop's own thread (where it must not block)."""
        return threading.current_thread() is self._thread

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result here."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError("a blocking Client cannot be used from its own callbacks")
        if not self.alive:
            coro.close()
            raise RuntimeError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()  # KeyboardInterrupt or timeout: cancel the call in progress
            raise

    def stop(self) -> None:
        """Cancel what still runs, then stop and close the loop."""
        self._stopping = True
        if not self.alive:
            return
        if self.in_loop_thread():
            self.loop.stop()
            return

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(drain(), self.loop).result(5.0)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5.0)
            if not self._thread.is_alive():
                self.loop.close()


async def _anext(iterator: AsyncIterator[T]) -> tuple[bool, T | None]:
    try:
        return True, await iterator.__anext__()
    except StopAsyncIteration:
        return False, None


def _next(runner: _LoopThread, iterator: AsyncIterator[T]) -> tuple[bool, T | None]:
    """The next item from the runner's loop; (False, None) at the end or once closed."""
    if runner.stopping() or not runner.alive:
        return False, None
    try:
        return runner.run(_anext(iterator))
    except concurrent.futures.CancelledError:
        if runner.stopping():  # the client was closed from another thread
            return False, None
        raise


async def _aclose(iterator: AsyncIterator[Any]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None and not getattr(iterator, "ag_running", False):
        await close()


def _shutdown(runner: _LoopThread, client: CandlewireClient[Any]) -> None:
    if runner.in_loop_thread():  # collected by a callback on the loop: cannot block here
        runner.loop.create_task(client.close()).add_done_callback(lambda _: runner.stop())
        return
    if runner.alive:
        try:
            runner.run(client.close(), timeout=5.0)
        finally:
            runner.stop()


class Client(Generic[N]):
    """Blocking client of ``marketdata.v1.MarketDataService``.

    Takes the arguments of :class:`~candlewire_client.aio.CandlewireClient`
    (``target``, ``decimals`` and the
    :class:`~candlewire_client.options.ClientOptions`, with the same defaults
    from the environment) and has the same methods, returning values instead of awaitables and
    plain iterators instead of async ones. Use it as ``with Client(...) as
    client:`` or call :meth:`close`; a client that is garbage collected or
    still open at exit is closed then. Methods may be called from several
    threads; each subscription should be iterated by one thread.
    """

    @overload
    def __init__(
        self: Client[float],
        target: str | None = None,
        *,
        decimals: Literal[False] = False,
        **options: Unpack[ClientOptions],
    ) -> None: ...
    @overload
    def __init__(
        self: Client[Decimal],
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
        factory = cast(Any, CandlewireClient)
        client: CandlewireClient[N] = factory(target, decimals=decimals, **options)
        self._runner = _LoopThread()
        self._async: CandlewireClient[N] = client
        self._finalizer: weakref.finalize[[_LoopThread, CandlewireClient[Any]], Client[Any]] = (
            weakref.finalize(self, _shutdown, self._runner, client)
        )

    @property
    def aio(self) -> CandlewireClient[N]:
        """The underlying async client (its coroutines run on this client's loop only)."""
        return self._async

    @property
    def target(self) -> str:
        """The gRPC target this client connects to."""
        return self._async.target

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return not self._finalizer.alive

    def close(self) -> None:
        """Close the channel and stop the client's thread; open subscriptions end."""
        self._finalizer()

    def __enter__(self) -> Client[N]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        runner = self._runner
        try:
            while True:
                ok, item = _next(runner, iterator)
                if not ok:
                    return
                yield cast(T, item)
        finally:
            if runner.in_loop_thread():  # collected on the loop: close without waiting
                runner.loop.create_task(_aclose(iterator))
            elif runner.alive:
                runner.run(_aclose(iterator), timeout=5.0)

    def get_price(self, symbol: str, *, timeout: float | None = None) -> Price[N]:
        """The latest quote of ``symbol``; see :meth:`CandlewireClient.get_price`."""
        return self._runner.run(self._async.get_price(symbol, timeout=timeout))

    def get_prices(
        self, symbols: Iterable[str], *, timeout: float | None = None
    ) -> dict[str, Price[N] | None]:
        """Latest quotes of several symbols; see :meth:`CandlewireClient.get_prices`."""
        return self._runner.run(self._async.get_prices(list(symbols), timeout=timeout))

    def list_symbols(self, *, timeout: float | None = None) -> list[SymbolInfo]:
        """The symbols this deployment serves."""
        return self._runner.run(self._async.list_symbols(timeout=timeout))

    def get_candles(
        self,
        symbol: str,
        interval: IntervalLike,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        limit: int | None = None,
        *,
        page_size: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[Candle[N]]:
        """Stored candles, paged transparently; see :meth:`CandlewireClient.get_candles`."""
        return self._iterate(
            self._async.get_candles(
                symbol, interval, start, end, limit, page_size=page_size, timeout=timeout
            )
        )

    def fetch_candles(
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
        """Stored candles as a :class:`~candlewire_client.models.CandleList`."""
        return self._runner.run(
            self._async.fetch_candles(
                symbol, interval, start, end, limit, page_size=page_size, timeout=timeout
            )
        )

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
    ) -> BlockingCandleStream[N]:
        """A resumable live stream; see :meth:`CandlewireClient.subscribe_candles`.

        ``on_reconnect`` is called on the client's thread; keep it short.
        """
        stream = self._async.subscribe_candles(
            series,
            history=history,
            start=start,
            closed_only=closed_only,
            resume_token=resume_token,
            on_reconnect=on_reconnect,
            retry=retry,
            idle_timeout=idle_timeout,
        )
        return BlockingCandleStream(self._runner, stream)

    def get_trades(
        self,
        symbol: str,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        limit: int | None = None,
        *,
        page_size: int | None = None,
        timeout: float | None = None,
    ) -> Iterator[Trade[N]]:
        """Stored trades, paged transparently; see :meth:`CandlewireClient.get_trades`."""
        return self._iterate(
            self._async.get_trades(symbol, start, end, limit, page_size=page_size, timeout=timeout)
        )

    def fetch_trades(
        self,
        symbol: str,
        start: TimeLike | None = None,
        end: TimeLike | None = None,
        limit: int | None = None,
        *,
        page_size: int | None = None,
        timeout: float | None = None,
    ) -> TradeList[N]:
        """Stored trades as a :class:`~candlewire_client.models.TradeList`."""
        return self._runner.run(
            self._async.fetch_trades(
                symbol, start, end, limit, page_size=page_size, timeout=timeout
            )
        )

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
    ) -> BlockingTradeStream[N]:
        """A resumable live trade stream; see :meth:`CandlewireClient.subscribe_trades`."""
        stream = self._async.subscribe_trades(
            symbols,
            history=history,
            start=start,
            resume_token=resume_token,
            on_reconnect=on_reconnect,
            retry=retry,
            idle_timeout=idle_timeout,
        )
        return BlockingTradeStream(self._runner, stream)

    def get_volume_profile(
        self,
        symbol: str,
        start: TimeLike,
        end: TimeLike | None = None,
        *,
        price_step: str | Decimal | float,
        interval: IntervalLike | None = None,
        timeout: float | None = None,
    ) -> VolumeProfile[N]:
        """Volume at price (and footprint); see :meth:`CandlewireClient.get_volume_profile`."""
        return self._runner.run(
            self._async.get_volume_profile(
                symbol, start, end, price_step=price_step, interval=interval, timeout=timeout
            )
        )

    def health(self, *, timeout: float | None = None) -> Health:
        """Liveness and readiness; see :meth:`CandlewireClient.health`."""
        return self._runner.run(self._async.health(timeout=timeout))

    def wait_until_ready(self, timeout: float | None = None) -> Health:
        """Block until the service is ready; see :meth:`CandlewireClient.wait_until_ready`."""
        return self._runner.run(self._async.wait_until_ready(timeout))


E = TypeVar("E")
S = TypeVar("S", bound="_ResumingStream[Any, Any]")


class _BlockingStream(Iterator[E], Generic[E, S]):
    """What the blocking candle and trade streams share: iteration on the
    client's loop thread, ``with``, :meth:`close` and the stream's state."""

    def __init__(self, runner: _LoopThread, stream: S) -> None:
        self._runner = runner
        self._stream: S = stream

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> E:
        ok, event = _next(self._runner, self._stream)
        if not ok:
            raise StopIteration
        return cast(E, event)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """End the stream and cancel its call."""
        if self._runner.alive:
            self._runner.run(self._stream.aclose(), timeout=5.0)

    @property
    def state(self) -> str:
        """See :attr:`CandleStream.state`."""
        return self._stream.state

    @property
    def reconnects(self) -> int:
        """How many times the stream reconnected."""
        return self._stream.reconnects

    @property
    def continuity_losses(self) -> int:
        """How many times the stream started again after a refused resume token."""
        return self._stream.continuity_losses

    @property
    def last_error(self) -> CandlewireError | None:
        """What ended the last connection, if anything did."""
        return self._stream.last_error

    @property
    def resume_token(self) -> str | None:
        """Token of the last event yielded (pass it as ``resume_token`` to continue later)."""
        return self._stream.resume_token


class BlockingCandleStream(_BlockingStream[Event[N], CandleStream[N]], Generic[N]):
    """A resumable candle subscription for plain ``for`` loops.

    ``with client.subscribe_candles(...) as stream: for event in stream: ...``.
    Ctrl-C while waiting for an event ends the stream (and raises
    KeyboardInterrupt); :meth:`close` ends it from the iterating thread.
    """

    @property
    def series(self) -> tuple[Series, ...]:
        """The subscribed series, in request order."""
        return self._stream.series


class BlockingTradeStream(_BlockingStream[TradeStreamEvent[N], TradeStream[N]], Generic[N]):
    """A resumable trade subscription for plain ``for`` loops (as
    :class:`BlockingCandleStream`)."""

    @property
    def symbols(self) -> tuple[str, ...]:
        """The subscribed symbols, in request order."""
        return self._stream.symbols
