"""The page on the Saxo feed, in a real browser: the feed's login state, closed markets."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Page, expect

from tests.saxo.fake import FakeSaxo
from tests.saxo.service import client, saxo_settings, serving
from tests.saxo.test_service import T0, S, _until_price
from tests.web.conftest import Console


async def test_feed_login_required_live_and_a_closed_market(
    page: Page, console: Console, tmp_path: Path
) -> None:
    async with FakeSaxo() as fake:
        await fake.quote("EURUSD", "1.10010", "1.10030", T0)
        await fake.quote("GBPUSD", "1.27000", "1.27020", T0)
        settings = saxo_settings(fake, tmp_path / "tokens.json")
        async with serving(**settings) as app, client(app) as c:
            assert app.gateway is not None
            await page.goto(f"http://127.0.0.1:{app.gateway.port}/#symbol=EURUSD&interval=1m")
            feed = page.get_by_test_id("feed")
            await expect(feed).to_have_text("Feed: login required")
            await expect(feed).to_have_attribute("data-state", "disconnected")

            assert (await c.login(fake)).status_code == 200
            await expect(feed).to_have_text("Feed live")
            await expect(page.get_by_test_id("bid-EURUSD")).to_have_text("1.10010")
            await expect(page.get_by_test_id("stale-EURUSD")).to_be_hidden()

            await fake.quote("EURUSD", "1.10020", "1.10040", T0 + S, market="Closed")
            await _until_price(c, "EURUSD", T0 + S)
            await expect(page.get_by_test_id("stale-EURUSD")).to_have_text("closed")
            await expect(page.get_by_test_id("row-EURUSD")).to_have_attribute(
                "data-market", "closed"
            )
            content = await page.content()
    assert [s for s in fake.all_secrets() if s in content] == []
