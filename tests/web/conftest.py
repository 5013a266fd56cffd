"""A headless Chromium (Debian's package) driven by Playwright, and the service behind a gateway.

Never ``playwright install``: the browser is ``/usr/bin/chromium`` (apt), or
``$CHROMIUM_PATH``. Without it these tests are skipped locally and fail
in CI (``CI=true``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from candlewire.app import App
from candlewire.gateway import Gateway

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HAVE_CHROMIUM = Path(CHROMIUM).is_file()
STATIC = Path(__file__).parent / "static"  # the grpc-web test page (npm run build)

expect.set_options(timeout=15_000)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        if os.environ.get("CI"):
            pytest.fail(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Console:
    """What the page reported: console errors and uncaught exceptions."""

    errors: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def on_error(self, error: Exception) -> None:
        self.errors.append(f"uncaught: {error}")


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
async def page(browser: Browser, console: Console) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 720})
    page = await context.new_page()
    page.on("console", console.on_console)
    page.on("pageerror", console.on_error)
    try:
        yield page
    finally:
        await context.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Fail a test whose page logged errors (CSP violations, exceptions) while it ran.

    Checked when the test body ends, before teardown stops the servers under the page.
    """
    yield
    console = getattr(item, "funcargs", {}).get("console")
    if isinstance(console, Console):
        assert console.errors == [], "the page logged errors"


@pytest.fixture
async def gateway(app: App) -> AsyncIterator[Gateway]:
    gateway = Gateway(f"127.0.0.1:{app.port}", shutdown_grace=1.0)
    await gateway.start("127.0.0.1", 0)
    try:
        yield gateway
    finally:
        await gateway.stop()
