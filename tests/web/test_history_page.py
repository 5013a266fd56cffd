"""The chart scrolls back through the history tier: dragging it to the left
loads older candles page by page, and a hole in the history is marked."""

from __future__ import annotations

from playwright.async_api import Page, expect

from candlewire.domain import Interval, SeriesKey
from tests.history.pg import postgres
from tests.scripted import T0, ScriptedFeed, running, sec

MINUTE = 60
MINUTES = 1500
HOLE = (700, 710)  # minutes deleted from PostgreSQL (older than the hot store holds)


async def _drag_left_edge_into_view(page: Page, until: str, value: str) -> None:
    """Drag the chart to the right (towards older candles) until ``until`` has ``value``."""
    chart = page.get_by_test_id("chart")
    box = await chart.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    for _ in range(30):
        if await chart.get_attribute(until) == value:
            return
        await page.mouse.move(box["x"] + 100, y)
        await page.mouse.down()
        await page.mouse.move(box["x"] + box["width"] - 100, y, steps=8)
        await page.mouse.up()
        await expect(chart).to_have_attribute("data-loading-older", "false")
    await expect(chart).to_have_attribute(until, value)


async def test_scrolling_back_loads_history_and_marks_holes(page: Page) -> None:
    feed = ScriptedFeed(("BTCUSDT",))
    with postgres() as pg:
        async with running(feed, postgres_url=pg.url, retention=100, intervals="1m,1h") as app:
            for lo in range(0, MINUTES, 50):
                await feed.trades(
                    [
                        ("BTCUSDT", sec(MINUTE * m + 5), str(100 + m % 50), "1")
                        for m in range(lo, lo + 50)
                    ]
                )
            assert app.history is not None and app.history.queue is not None
            await app.history.queue.drained()
            key = SeriesKey("BTCUSDT", Interval.M1)
            removed = await app.history.store.delete(
                key, sec(MINUTE * HOLE[0]), sec(MINUTE * HOLE[1])
            )
            assert removed == HOLE[1] - HOLE[0]
            assert app.gateway is not None
            await page.goto(f"http://127.0.0.1:{app.gateway.port}/#symbol=BTCUSDT&interval=1m")
            chart = page.get_by_test_id("chart")
            await expect(chart).to_have_attribute("data-ready", "true")
            await expect(chart).to_have_attribute("data-bars", "500")  # the stream's history
            await expect(chart).to_have_attribute("data-older-pages", "0")

            await _drag_left_edge_into_view(page, "data-older-pages", "1")
            await expect(chart).to_have_attribute("data-bars", "1000")
            first = sec(MINUTE * (500 - (HOLE[1] - HOLE[0]))) // 10**9  # 500 candles back
            await expect(chart).to_have_attribute("data-first-time", str(first))
            # The hole: reported by the service, drawn as a gap, marked on the chart.
            await expect(chart).to_have_attribute("data-missing-ranges", "1")
            await expect(chart).to_have_attribute("data-gaps", "1")
            await expect(chart).to_have_attribute("data-holes", "1")

            await _drag_left_edge_into_view(page, "data-exhausted", "true")
            await expect(chart).to_have_attribute("data-bars", str(MINUTES - (HOLE[1] - HOLE[0])))
            await expect(chart).to_have_attribute("data-first-time", str(T0 // 10**9))
            await expect(chart).to_have_attribute("data-gaps", "1")
