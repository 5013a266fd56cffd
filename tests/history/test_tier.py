"""The pieces around the store: settings, readiness, progress, the tier's own tasks."""

from __future__ import annotations

import asyncio
import io

import pytest

from candlewire.config import describe_settings, load
from candlewire.domain import NANOS_PER_SECOND, Interval, SeriesKey
from candlewire.errors import ConfigError
from candlewire.history.load import Progress
from candlewire.history.options import (
    format_retention,
    parse_retention,
    parse_trade_retention,
    redact_url,
)
from candlewire.history.postgres import HistoryStore, rows_from_candles
from candlewire.history.tier import HistoryTier
from candlewire.readiness import Observed, evaluate
from candlewire.store.memory import MemoryStore
from candlewire.tasks import cancel_and_wait
from tests.history.candles import DAY, make_candle

DAY_S = 86_400 * NANOS_PER_SECOND


def test_retention_setting() -> None:
    assert parse_retention("1s=7d") == {Interval.S1: 7 * DAY_S}
    assert parse_retention("1s=12h, 1m=52w,1h=forever") == {
        Interval.S1: 12 * 3600 * NANOS_PER_SECOND,
        Interval.M1: 52 * 7 * DAY_S,
    }
    assert format_retention(parse_retention("1m=2d")) == "1m=172800s"
    for bad in ("1s", "1s=7", "1s=0d", "2s=7d", "1s=7y"):
        with pytest.raises(ValueError):  # noqa: PT011 (each names its own reason)
            parse_retention(bad)
    with pytest.raises(ConfigError, match="history_retention"):
        load(history_retention="1s=soon")
    with pytest.raises(ConfigError, match="history_retention"):
        load(history_retention="1s=7d,trades=often")


def test_trade_retention_setting() -> None:
    assert parse_trade_retention(load().history_retention) == 30 * DAY_S  # the default
    assert parse_retention(load().history_retention) == {Interval.S1: 7 * DAY_S}
    assert parse_trade_retention("1s=7d") == 30 * DAY_S  # not named: 30 days
    assert parse_trade_retention("trades=12h,1m=2d") == 12 * 3600 * NANOS_PER_SECOND
    assert parse_retention("trades=12h,1m=2d") == {Interval.M1: 2 * DAY_S}
    assert parse_trade_retention("trades=forever") is None


def test_postgres_settings_never_show_the_password() -> None:
    url = "postgresql://cw:t0p-secret@db:5432/history"
    settings = load(postgres_url=url, postgres_read_url=url.replace("db:", "replica:"))
    lines = describe_settings(settings)
    assert "postgres_url=postgresql://cw:***@db:5432/history" in lines
    assert not any("t0p-secret" in line for line in lines)
    assert redact_url("postgresql://db/x") == "postgresql://db/x"
    with pytest.raises(ConfigError) as raised:
        load(postgres_url="mysql://cw:t0p-secret@db/x")
    assert "CANDLEWIRE_POSTGRES_URL" in str(raised.value)
    assert "t0p-secret" not in str(raised.value)
    with pytest.raises(ConfigError, match="CANDLEWIRE_POSTGRES_READ_URL"):
        load(postgres_read_url=url)


def test_readiness_names_postgres_but_keeps_serving() -> None:
    seen = Observed(now=100.0, backfilled=True, last_receive=99.0, history_error="refused")
    ready, why = evaluate(seen)
    assert ready and why == "degraded: history store (PostgreSQL) unavailable: refused"
    down = Observed(now=100.0, store_error="gone", history_error="refused")
    assert evaluate(down) == (False, "store unavailable: gone")
    assert evaluate(Observed(now=100.0, backfilled=True, last_receive=99.0)) == (True, "ok")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_and_lines_otherwise(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    screen = _Terminal()
    bar = Progress("backfill", 1000, stream=screen, clock=lambda: now[0])
    now[0] = 2.0
    bar.advance(250)
    assert screen.getvalue().startswith("\r[######..................] backfill: 250/1,000")
    assert "(25%) 125/s ETA 0m06s" in screen.getvalue()
    bar.finish()
    assert screen.getvalue().endswith("\n")
    caplog.set_level("INFO", logger="candlewire.history.load")
    plain = Progress("import", 10, clock=lambda: now[0], every=5.0)
    plain.advance(1)
    now[0] = 8.0
    plain.advance(1)
    assert [r.getMessage() for r in caplog.records] == ["import: 2/10 candles (20%) 0/s ETA 0m24s"]


async def test_read_url_and_retention_task(pg_url: str) -> None:
    read_url = pg_url.replace("127.0.0.1", "localhost")
    old = [
        make_candle(1_700_000_000 * NANOS_PER_SECOND + k * DAY, interval=Interval.S1)
        for k in range(3)
    ]
    seed = HistoryStore(pg_url)
    await seed.connect()
    await seed.write(rows_from_candles(old))
    await seed.close()
    tier = HistoryTier(pg_url, read_url=read_url, retention={Interval.S1: 7 * DAY_S})
    await tier.connect()
    try:
        key = SeriesKey("BTCUSDT", Interval.S1)
        assert len(await tier.store.get_candles(key, start=0, end=None, limit=10)) == 3
        tier.ingest_store(MemoryStore())
        writer = asyncio.create_task(tier.run_writer(MemoryStore(), ()))
        try:
            async with asyncio.timeout(20):  # the retention pass runs at once; polled
                while True:
                    if not await tier.store.count(key):
                        break
                    await asyncio.sleep(0.05)
        finally:
            await cancel_and_wait(writer)
        await tier.check()
        assert tier.problem is None
    finally:
        await tier.close()
