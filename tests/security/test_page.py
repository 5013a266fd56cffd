"""The browser page holds no secret: it is authorised as anonymous read-only access.

With authentication on and ``anonymous_scopes`` set, the page works in a real
browser without any credential; every asset it loads and every response it
receives is searched for key material.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from playwright.async_api import Page, Response, expect

from candlewire.api.keys import hash_key
from candlewire.gateway import DEFAULT_STATIC_DIR
from tests.scripted import ScriptedFeed, running, sec
from tests.security.conftest import Keys
from tests.web.conftest import browser, console, page  # noqa: F401 - fixtures

ANONYMOUS = "prices,candles,streams,symbols"


def _secrets(keys: Keys) -> list[bytes]:
    found = [k.encode() for k in keys.all()]
    found += [hash_key(k).encode() for k in keys.all()]
    found += [hash_key(k).split(":")[1].encode() for k in keys.all()]
    return [*found, b"cwk_", str(keys.path).encode(), b"sha256:"]


def _served_files() -> list[str]:
    root = Path(DEFAULT_STATIC_DIR)
    return ["/" + p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file()]


async def test_the_page_works_anonymously_and_loads_no_key_material(
    page: Page,  # noqa: F811
    keys: Keys,
) -> None:
    feed = ScriptedFeed()
    bodies: list[tuple[str, bytes]] = []

    async def keep(response: Response) -> None:
        try:
            body = await response.body()
        except Exception:  # a stream cut when the page closes
            body = b""
        headers = "\n".join(f"{k}: {v}" for k, v in (await response.all_headers()).items())
        bodies.append((response.url, body + headers.encode()))

    page.on("response", keep)
    async with running(feed, api_keys_file=str(keys.path), anonymous_scopes=ANONYMOUS) as app:
        for minute in range(3):
            await feed.trade("BTCUSDT", sec(60 * minute + 5), str(100 + minute))
        await feed.quote("BTCUSDT", sec(170), "101.5", "102.5")
        assert app.gateway is not None
        base = f"http://127.0.0.1:{app.gateway.port}"
        await page.goto(f"{base}/#symbol=BTCUSDT&interval=1m")
        await expect(page.get_by_test_id("bid-BTCUSDT")).to_have_text("101.50")
        await expect(page.get_by_test_id("chart")).to_have_attribute("data-ready", "true")
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
        # And every file the gateway serves, loaded or not, plus its metrics.
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            for relative in _served_files():
                response = await http.get(relative)
                assert response.status_code == 200, relative
                bodies.append((relative, response.content))
            bodies.append(("/metrics", (await http.get("/metrics")).content))
    urls = [url for url, _ in bodies]
    assert any(url.endswith(".js") for url in urls)
    assert any("BatchGetPrices" in url for url in urls)
    for url, body in bodies:
        for secret in _secrets(keys):
            assert secret not in body, f"{secret!r} in {url}"
