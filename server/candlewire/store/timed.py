"""A store seen through the metrics: the latency and failures of each operation.

:class:`TimedStore` wraps any :class:`~candlewire.store.base.Store` and
records ``candlewire_store_operation_seconds`` and
``candlewire_store_errors_total`` labelled with the store's kind (``memory``,
``redis``; a history tier adds its own, e.g. ``postgres``) and the operation.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from candlewire.domain import Candle, Quote, SeriesKey, Trade
from candlewire.errors import CandlewireError
from candlewire.obs import Metrics
from candlewire.store.base import (
    CandleSlice,
    Position,
    Snapshot,
    Store,
    TradeSlice,
    TradeUpdate,
    Update,
)

__all__ = ["TimedStore"]

T = TypeVar("T")


class TimedStore:
    """``store``, with each operation timed into ``metrics`` as ``kind``."""

    def __init__(self, store: Store, metrics: Metrics, kind: str) -> None:
        self._store = store
        self._kind = kind
        self._children: dict[str, tuple[Any, Any]] = {}
        self._metrics = metrics

    def _instruments(self, operation: str) -> tuple[Any, Any]:
        found = self._children.get(operation)
        if found is None:
            found = self._children[operation] = (
                self._metrics.store_duration.labels(self._kind, operation),
                self._metrics.store_errors.labels(self._kind, operation),
            )
        return found

    async def _timed(self, operation: str, call: Awaitable[T]) -> T:
        histogram, errors = self._instruments(operation)
        started = time.perf_counter()
        try:
            return await call
        except CandlewireError:
            errors.inc()
            raise
        finally:
            histogram.observe(time.perf_counter() - started)

    @property
    def epoch(self) -> bytes:
        return self._store.epoch

    async def ping(self) -> None:
        await self._timed("ping", self._store.ping())

    async def close(self) -> None:
        await self._store.close()

    async def put_quotes(self, quotes: Sequence[Quote]) -> None:
        await self._timed("put_quotes", self._store.put_quotes(quotes))

    async def get_quotes(self, symbols: Sequence[str]) -> list[Quote | None]:
        return await self._timed("get_quotes", self._store.get_quotes(symbols))

    async def recent_ticks(self, symbol: str, limit: int) -> list[Quote]:
        return await self._timed("recent_ticks", self._store.recent_ticks(symbol, limit))

    async def write_candles(self, candles: Sequence[Candle]) -> list[Update]:
        return await self._timed("write_candles", self._store.write_candles(candles))

    async def get_candles(
        self, series: SeriesKey, *, start: int | None, end: int | None, limit: int
    ) -> CandleSlice:
        return await self._timed(
            "get_candles", self._store.get_candles(series, start=start, end=end, limit=limit)
        )

    async def head(self, symbols: Sequence[str]) -> dict[str, int]:
        return await self._timed("head", self._store.head(symbols))

    async def snapshot(
        self,
        series: Sequence[SeriesKey],
        *,
        history: int,
        start: int | None,
        closed_only: bool,
        at: Position | None = None,
    ) -> Snapshot:
        return await self._timed(
            "snapshot",
            self._store.snapshot(
                series, history=history, start=start, closed_only=closed_only, at=at
            ),
        )

    async def read_updates(self, series: Sequence[SeriesKey], after: Position) -> list[Update]:
        return await self._timed("read_updates", self._store.read_updates(series, after))

    async def write_trades(self, trades: Sequence[Trade]) -> list[TradeUpdate]:
        return await self._timed("write_trades", self._store.write_trades(trades))

    async def trade_heads(self, symbols: Sequence[str]) -> dict[str, int]:
        return await self._timed("trade_heads", self._store.trade_heads(symbols))

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
        return await self._timed(
            "get_trades",
            self._store.get_trades(
                symbol, start=start, end=end, after=after, upto=upto, limit=limit, latest=latest
            ),
        )

    async def read_trades(self, symbols: Sequence[str], after: Position) -> list[TradeUpdate]:
        return await self._timed("read_trades", self._store.read_trades(symbols, after))
