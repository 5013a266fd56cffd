"""Shared pieces of the Saxo tests: a recording sink and the login steps."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from candlewire.domain import Candle, Quote, Trade
from candlewire.feeds.saxo import (
    FileTokenStore,
    LoginFlow,
    OAuthClient,
    SaxoConfig,
    SaxoEndpoints,
    SaxoFeed,
    TokenKeeper,
    Tokens,
)
from tests.saxo.fake import WAIT, FakeSaxo

REDIRECT = "http://127.0.0.1:8080/auth/saxo/callback"


@dataclass
class Sink:
    """A FeedSink that keeps everything it is given."""

    got_quotes: list[Quote] = field(default_factory=list)
    got_trades: list[Trade] = field(default_factory=list)
    marks: list[tuple[str, int]] = field(default_factory=list)
    beats: int = 0
    closed: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def trades(self, trades: Sequence[Trade]) -> None:
        raise AssertionError("FX quotes are ticks, not trades")

    async def ticks(self, ticks: Sequence[Trade]) -> None:
        self.got_trades.extend(ticks)
        self.changed.set()

    async def quotes(self, quotes: Sequence[Quote]) -> None:
        if not quotes:
            self.beats += 1
        self.got_quotes.extend(quotes)
        self.changed.set()

    async def watermark(self, symbol: str, time: int) -> None:
        self.marks.append((symbol, time))
        self.changed.set()

    async def market_closed(self, symbol: str) -> None:
        self.closed.append(symbol)
        self.changed.set()

    async def candles(self, candles: Sequence[Candle]) -> None:
        raise AssertionError("a tick feed sends no candles")

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        await until(predicate, what, self.changed)


async def until(predicate: Callable[[], bool], what: str, *events: asyncio.Event) -> None:
    """Wait until ``predicate()`` holds, re-checking whenever one of ``events`` is set."""
    try:
        async with asyncio.timeout(WAIT):
            while not predicate():
                for event in events:
                    event.clear()
                waits = [asyncio.ensure_future(event.wait()) for event in events]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for wait in waits:
                        wait.cancel()
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def until_status(feed: SaxoFeed, healthy: bool, text: str = "") -> None:
    await until(
        lambda: feed.status()[0] == healthy and text in feed.status()[1],
        f"status {healthy} {text!r} (now {feed.status()})",
        feed.changed,
    )


def endpoints(fake: FakeSaxo) -> SaxoEndpoints:
    return SaxoEndpoints(fake.auth_url, fake.rest_url, fake.streaming_url)


def parts(
    fake: FakeSaxo, path: Path, *, state_ttl: float = 600.0, refresh_margin: float = 120.0
) -> tuple[LoginFlow, TokenKeeper]:
    store = FileTokenStore(path)
    oauth = OAuthClient(fake.auth_url, fake.app_key)
    flow = LoginFlow(oauth, store, REDIRECT, state_ttl=state_ttl)
    keeper = TokenKeeper(oauth, store, REDIRECT, poll_interval=0.05, refresh_margin=refresh_margin)
    return flow, keeper


async def login(fake: FakeSaxo, flow: LoginFlow) -> Tokens:
    """An operator's login: start, sign in at Saxo, the callback."""
    redirect = fake.sign_in(await flow.start())
    query = {k: v[0] for k, v in parse_qs(urlsplit(redirect).query).items()}
    return await flow.complete(query["state"], query["code"])


@contextlib.asynccontextmanager
async def running(feed: SaxoFeed, sink: Sink) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(feed.run(sink))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make_feed(
    fake: FakeSaxo, keeper: TokenKeeper, symbols: Sequence[str], **config: object
) -> SaxoFeed:
    config.setdefault("backoff_initial", 0.05)
    config.setdefault("backoff_max", 0.2)
    return SaxoFeed(symbols, SaxoConfig(endpoints(fake), **config), keeper)  # type: ignore[arg-type]
