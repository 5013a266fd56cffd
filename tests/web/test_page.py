"""The page served by the gateway, in a real browser, against the real service.

Everything waits on page conditions (Playwright's ``expect``) or stream
events with deadlines; nothing sleeps.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.async_api import Page, expect

from candlewire.api.server import ApiServer
from candlewire.api.servicer import Catalog, Limits, MarketDataServicer
from candlewire.app import App
from candlewire.domain import NANOS_PER_SECOND
from candlewire.gateway import Gateway
from tests.scripted import ScriptedFeed, running, sec
from tests.web.conftest import STATIC

MINUTE = 60


async def history(feed: ScriptedFeed, minutes: int) -> None:
    """One trade a minute for BTCUSDT and ETHUSDT: candles 0..minutes-1."""
    await feed.trades(
        [
            (symbol, sec(MINUTE * m + 5), str(base + m), "1")
            for m in range(minutes)
            for symbol, base in (("BTCUSDT", 100), ("ETHUSDT", 10))
        ]
    )


def chart(page: Page) -> Any:
    return page.get_by_test_id("chart")


async def test_watchlist_and_chart_update_live(
    page: Page, app: App, feed: ScriptedFeed, gateway: Gateway
) -> None:
    await history(feed, 5)
    await feed.quote("BTCUSDT", sec(290), "104.25", "104.75")
    await feed.quote("ETHUSDT", sec(290), "14.10", "14.20", receive_time=time.time_ns())
    await page.goto(f"http://127.0.0.1:{gateway.port}/#symbol=BTCUSDT&interval=1m")

    # The watchlist fills from ListSymbols and BatchGetPrices, the sparklines from the stream.
    await expect(page.get_by_test_id("watchlist")).to_have_attribute("data-symbols", "2")
    await expect(page.get_by_test_id("bid-BTCUSDT")).to_have_text("104.25")
    await expect(page.get_by_test_id("ask-BTCUSDT")).to_have_text("104.75")
    await expect(page.get_by_test_id("spark-BTCUSDT")).to_have_attribute("data-points", "5")
    await expect(page.get_by_test_id("change-BTCUSDT")).to_have_text("▲ +4.00%")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")

    # The chart loads the history, then draws at snapshot_end.
    await expect(chart(page)).to_have_attribute("data-ready", "true")
    await expect(chart(page)).to_have_attribute("data-bars", "5")
    await expect(chart(page)).to_have_attribute("data-gaps", "0")
    await expect(chart(page)).to_have_attribute("data-last-close", "104")
    await expect(page.get_by_test_id("legend")).to_contain_text("BTCUSDT · 1m")
    # Scripted data is dated 2026-01-01 by the upstream clock: the page says so.
    await expect(page.get_by_test_id("chart-message")).to_contain_text("Stale data")

    # Live: the forming candle is redrawn, then a new candle is appended.
    await feed.trade("BTCUSDT", sec(MINUTE * 4 + 30), "110.5")
    await expect(chart(page)).to_have_attribute("data-last-close", "110.5")
    await expect(chart(page)).to_have_attribute("data-bars", "5")
    await feed.trade("BTCUSDT", sec(MINUTE * 5 + 1), "111")
    await expect(chart(page)).to_have_attribute("data-bars", "6")
    await expect(chart(page)).to_have_attribute(
        "data-last-time", str(sec(MINUTE * 5) // NANOS_PER_SECOND)
    )
    await expect(chart(page)).to_have_attribute("data-gaps", "0")
    await expect(page.get_by_test_id("legend")).to_contain_text("C 111.00")

    # The watchlist updates: a new quote, and a quote received long ago is marked stale.
    await feed.quote("BTCUSDT", sec(301), "111.25", "111.75")
    await expect(page.get_by_test_id("bid-BTCUSDT")).to_have_text("111.25")
    old = time.time_ns() - 3600 * NANOS_PER_SECOND
    await feed.quote("ETHUSDT", sec(301), "14.30", "14.40", receive_time=old)
    await expect(page.get_by_test_id("row-ETHUSDT")).to_have_attribute("data-stale", "true")
    await expect(page.get_by_test_id("stale-ETHUSDT")).to_have_text("stale")
    await expect(page.get_by_test_id("stale-BTCUSDT")).to_be_hidden()


async def test_unknown_symbol_and_switching(
    page: Page, feed: ScriptedFeed, gateway: Gateway
) -> None:
    await history(feed, 3)
    await page.goto(f"http://127.0.0.1:{gateway.port}/")
    await expect(chart(page)).to_have_attribute("data-symbol", "BTCUSDT")
    await expect(chart(page)).to_have_attribute("data-bars", "3")

    await page.get_by_test_id("symbol-input").fill("nope")
    await page.get_by_test_id("show-chart").click()
    message = page.get_by_test_id("chart-message")
    await expect(message).to_have_attribute("data-kind", "error")
    await expect(message).to_contain_text("Unknown symbol “NOPE”")
    await expect(message).to_contain_text("BTCUSDT, ETHUSDT")
    await expect(page).to_have_url(f"http://127.0.0.1:{gateway.port}/#symbol=NOPE&interval=1m")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")

    await page.get_by_test_id("select-ETHUSDT").click()
    await expect(chart(page)).to_have_attribute("data-symbol", "ETHUSDT")
    await expect(chart(page)).to_have_attribute("data-last-close", "12")
    await expect(message).not_to_have_attribute("data-kind", "error")
    await page.get_by_test_id("interval-select").select_option("3m")
    await expect(chart(page)).to_have_attribute("data-interval", "3m")
    await expect(chart(page)).to_have_attribute("data-bars", "1")


async def test_reconnects_and_resumes_without_a_gap(
    page: Page, app: App, feed: ScriptedFeed, gateway: Gateway
) -> None:
    await history(feed, 3)
    await page.goto(f"http://127.0.0.1:{gateway.port}/#symbol=BTCUSDT&interval=1m")
    await expect(chart(page)).to_have_attribute("data-bars", "3")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")

    # The gRPC server goes away; the store and hub (and the feed) stay.
    assert app.api is not None
    port = app.api.port
    await app.api.stop(0)
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "reconnecting")

    # Data that arrives meanwhile is retained for resume tokens.
    await feed.trade("BTCUSDT", sec(MINUTE * 2 + 30), "150")
    await feed.trade("BTCUSDT", sec(MINUTE * 3 + 5), "160")
    await feed.trade("BTCUSDT", sec(MINUTE * 4 + 5), "170")

    instruments = dict(await feed.instruments())
    servicer = MarketDataServicer(
        app.store,
        app.hub,
        Catalog(instruments, app.settings.intervals),
        Limits(
            stale_after=app.settings.stale_after, heartbeat_interval=app.settings.heartbeat_interval
        ),
    )
    restarted = ApiServer(servicer, f"127.0.0.1:{port}")
    await restarted.start()
    try:
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
        await expect(chart(page)).to_have_attribute("data-bars", "5")
        await expect(chart(page)).to_have_attribute("data-gaps", "0")
        await expect(chart(page)).to_have_attribute("data-last-close", "170")
        bars = await page.evaluate("() => document.getElementById('chart').dataset.bars")
        assert bars == "5"
        # The candle that formed while the server was away has its final value.
        await page.get_by_test_id("chart").hover(position={"x": 5, "y": 5})
        await feed.trade("BTCUSDT", sec(MINUTE * 4 + 20), "171")
        await expect(chart(page)).to_have_attribute("data-last-close", "171")
    finally:
        await restarted.stop(0)


# -- Google's grpc-web client, text mode, from another origin --------------------------------


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def static_origin() -> Iterator[int]:
    """Serve tests/web/static on 127.0.0.1 (as http://localhost:PORT, another origin)."""
    handler = functools.partial(_Quiet, directory=str(STATIC))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
async def cross_origin(app: App) -> AsyncIterator[tuple[str, Gateway]]:
    with static_origin() as port:
        origin = f"http://localhost:{port}"
        gateway = Gateway(f"127.0.0.1:{app.port}", static_dir=None, allowed_origins=[origin])
        await gateway.start()
        try:
            yield origin, gateway
        finally:
            await gateway.stop()


async def test_google_grpc_web_text_mode_stream(
    page: Page, feed: ScriptedFeed, cross_origin: tuple[str, Gateway]
) -> None:
    origin, gateway = cross_origin
    await history(feed, 2)
    target = f"http://127.0.0.1:{gateway.port}"
    await page.goto(f"{origin}/grpcweb.html?target={target}&symbol=BTCUSDT&deadlineMs=5000")

    # A unary error, answered trailers-only, read through CORS-exposed headers.
    await expect(page.get_by_test_id("unary")).to_have_attribute("data-code", "5")
    await expect(page.get_by_test_id("unary")).to_contain_text("unknown symbol")

    events = page.get_by_test_id("events")
    await expect(events.locator("li[data-kind=candle]")).to_have_count(2)
    await expect(events.locator("li[data-kind=snapshotEnd]")).to_have_count(1)
    await feed.trade("BTCUSDT", sec(MINUTE * 1 + 40), "250")
    await expect(events.locator("li[data-kind=candle][data-close='250']")).to_have_count(1)
    # The deadline (grpc-timeout from grpc-web's "deadline") ends the stream.
    await expect(page.get_by_test_id("status")).to_have_attribute("data-code", "4")


async def test_screenshot(page: Page, tmp_path: Any) -> None:
    """The page with simulated data looks right (the image is kept in tmp_path)."""
    feed_app = running(
        None, sim_history=60, symbols="BTCUSDT,ETHUSDT,EURUSD", heartbeat_interval=1.0
    )
    async with feed_app as app:
        gateway = Gateway(f"127.0.0.1:{app.port}")
        await gateway.start()
        try:
            await page.goto(f"http://127.0.0.1:{gateway.port}/")
            await expect(chart(page)).to_have_attribute("data-ready", "true")
            await expect(page.get_by_test_id("spark-EURUSD")).not_to_have_attribute(
                "data-points", "0"
            )
            await expect(page.get_by_test_id("connection")).to_have_attribute(
                "data-state", "connected"
            )
            await expect(page.get_by_test_id("chart-message")).to_be_hidden()
            await page.screenshot(path=tmp_path / "page.png")
            await page.goto("about:blank")  # stop polling before the gateway goes
        finally:
            await gateway.stop()


async def test_trades_tape_and_delta_histogram(
    page: Page, app: App, feed: ScriptedFeed, gateway: Gateway
) -> None:
    from decimal import Decimal

    from candlewire.domain import Side, Source, Trade

    sink = await feed.attached()

    def trade(t: float, price: str, qty: str, side: Side, ident: str) -> Trade:
        return Trade("BTCUSDT", sec(t), Decimal(price), Decimal(qty), Source.LIVE, side, ident)

    await sink.trades(
        [
            trade(5, "100", "3", Side.BUY, "a"),
            trade(6, "101", "1", Side.SELL, "b"),
            trade(7, "100.5", "0.5", Side.UNKNOWN, "c"),
        ]
    )
    await page.goto(f"http://127.0.0.1:{gateway.port}/#symbol=BTCUSDT&interval=1m")
    tape = page.get_by_test_id("trades")
    await expect(tape).to_have_attribute("data-ready", "true")
    await expect(tape).to_have_attribute("data-trades", "3")
    await expect(tape).to_have_attribute("data-last-trade-id", "c")
    rows = tape.locator("tbody tr")
    await expect(rows).to_have_count(3)
    await expect(rows.nth(0)).to_have_attribute("data-side", "unknown")  # newest first
    await expect(rows.nth(2)).to_have_attribute("data-side", "buy")
    await expect(rows.nth(2)).to_contain_text("100.00")
    # Delta of the minute: 3 bought, 1.5 not bought (sold or unknown): 2 * 3 - 4.5.
    await expect(chart(page)).to_have_attribute("data-last-delta", "1.5")

    # Live: a sell arrives on the tape and moves the delta.
    await sink.trades([trade(8, "99.5", "2", Side.SELL, "d")])
    await expect(tape).to_have_attribute("data-last-trade-id", "d")
    await expect(rows.nth(0)).to_have_attribute("data-side", "sell")
    await expect(rows).to_have_count(4)
    await expect(chart(page)).to_have_attribute("data-last-delta", "-0.5")
    await expect(page.get_by_test_id("legend")).to_contain_text("Δ")

    # Another symbol: the tape follows the selection.
    await page.goto(f"http://127.0.0.1:{gateway.port}/#symbol=ETHUSDT&interval=1m")
    await expect(tape).to_have_attribute("data-symbol", "ETHUSDT")
    await expect(tape).to_have_attribute("data-trades", "0")
