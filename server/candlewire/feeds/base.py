"""What a feed is and what it feeds.

A feed knows one venue's wire protocol and nothing about stores or gRPC: it
turns the venue's messages into domain events and hands them to a
:class:`FeedSink`. Tick feeds emit trades, quotes and watermarks (the
venue's clock, so a quiet market still closes candles); kline feeds emit the
venue's own candles and quotes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any, Protocol, runtime_checkable

from candlewire.domain import Candle, Instrument, Quote, Trade

__all__ = ["Feed", "FeedSink", "HasOperatorRoutes", "NeedsLogin", "OperatorRoute", "ReportsStatus"]


class FeedSink(Protocol):
    async def trades(self, trades: Sequence[Trade]) -> None:
        """Trades of any symbols, in arrival order."""
        ...

    async def record_trades(self, trades: Sequence[Trade]) -> None:
        """Trades of a kline feed: validated, stored and streamed, but not
        aggregated (the venue's candles already count them)."""

    async def ticks(self, ticks: Sequence[Trade]) -> None:
        """Quote ticks of a market without trades (FX): candles are built from
        them as from trades (their price, zero quantity), but they are not
        trades, so they set no last-trade price."""
        ...

    async def quotes(self, quotes: Sequence[Quote]) -> None:
        """Latest quotes."""
        ...

    async def watermark(self, symbol: str, time: int) -> None:
        """The upstream's clock for ``symbol`` reached ``time`` (ns)."""
        ...

    async def market_closed(self, symbol: str) -> None:
        """The market of ``symbol`` closed (a tick feed that knows market hours):
        until its next trade the series has a gap, not zero-volume candles."""
        ...

    async def candles(self, candles: Sequence[Candle]) -> None:
        """Candles computed by the venue (kline feeds), oldest first per series.

        ``revision`` is ignored: the sink numbers versions itself, drops exact
        duplicates and versions older than one it already has.
        """
        ...


class Feed(Protocol):
    async def instruments(self) -> Mapping[str, Instrument]:
        """Validate the configured symbols and describe them."""
        ...

    async def backfill(self, sink: FeedSink) -> None:
        """Load history before live data starts."""
        ...

    async def run(self, sink: FeedSink) -> None:
        """Stream live data until cancelled; reconnects are the feed's own business."""
        ...


@runtime_checkable
class ReportsStatus(Protocol):
    """A feed that can tell it is down (a lost connection, a ban) before its
    data goes stale; readiness consults it."""

    def status(self) -> tuple[bool, str]:
        """(healthy, reason)."""
        ...


@runtime_checkable
class NeedsLogin(Protocol):
    """A feed whose venue needs an operator to log in (Saxo): it tells when it
    waits for one, and closes what it holds (a token store) at shutdown."""

    @property
    def login_required(self) -> bool:
        """This process's feed waits for a login."""
        ...

    async def check_login(self) -> str | None:
        """Why a login is needed, as the shared token store says (for a process
        that does not run the feed itself), or None when there is a usable one."""
        ...

    async def close(self) -> None: ...


OperatorRoute = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]
"""An ASGI application served on the HTTP port (a venue's login)."""


@runtime_checkable
class HasOperatorRoutes(Protocol):
    """A feed with routes for operators on the HTTP port (path -> ASGI handler)."""

    def operator_routes(self) -> Mapping[str, OperatorRoute]: ...
