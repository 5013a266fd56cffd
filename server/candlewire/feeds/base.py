"""What a feed is and what it feeds.

A feed knows one venue's wire protocol and nothing about stores or gRPC: it
turns the venue's messages into domain events and hands them to a
:class:`FeedSink`. Tick feeds emit trades, quotes and watermarks (the
venue's clock, so a quiet market still closes candles); kline feeds emit the
venue's own candles and quotes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from candlewire.domain import Candle, Instrument, Quote, Trade

__all__ = ["Feed", "FeedSink", "ReportsStatus"]


class FeedSink(Protocol):
    async def trades(self, trades: Sequence[Trade]) -> None:
        """Trades of any symbols, in arrival order."""
        ...

    async def record_trades(self, trades: Sequence[Trade]) -> None:
        """Trades of a kline feed: validated, stored and streamed, but not
        aggregated (the venue's candles already count them)."""
        ...

    async def quotes(self, quotes: Sequence[Quote]) -> None:
        """Latest quotes."""
        ...

    async def watermark(self, symbol: str, time: int) -> None:
        """The upstream's clock for ``symbol`` reached ``time`` (ns)."""
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
