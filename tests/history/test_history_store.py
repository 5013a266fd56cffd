"""Contract of the PostgreSQL history store, on a real server."""

from __future__ import annotations

import asyncio
import random

import psycopg
import pytest

from candlewire.codec import FrameRun, candle_frame, frame_to_candle
from candlewire.domain import Interval, SeriesKey
from candlewire.errors import ConfigError, HistoryUnavailable
from candlewire.history import HistoryStore
from candlewire.history.postgres import gaps, rows_from_candles
from candlewire.history.schema import MIGRATIONS, apply_migrations, period_of
from candlewire.intervals import bucket_start
from tests.history.candles import DAY, make_candle, series_of
from tests.history.conftest import until_writable
from tests.history.pg import PASSWORD, PostgresServer

M = 60 * 10**9
T0 = bucket_start(Interval.D1, 1_735_689_600 * 10**9)  # 2025-01-01
BTC_1M = SeriesKey("BTCUSDT", Interval.M1)


async def test_newest_revision_wins_in_any_order(history: HistoryStore) -> None:
    first = make_candle(T0, revision=1, price="10")
    await history.write(rows_from_candles([first]))
    older = make_candle(T0, revision=0, price="99")
    await history.write(rows_from_candles([older]))
    found = await history.get_candles(BTC_1M, start=None, end=None, limit=10)
    assert list(found.frames) == [candle_frame(first)]
    newer = make_candle(T0, revision=3, price="11")
    same_batch = [make_candle(T0, revision=2, price="12"), newer, make_candle(T0, revision=1)]
    await history.write(rows_from_candles(same_batch))
    found = await history.get_candles(BTC_1M, start=None, end=None, limit=10)
    assert list(found.frames) == [candle_frame(newer)]
    assert frame_to_candle(found.frames[0]).revision == 3
    assert await history.count() == 1


async def test_forming_candles_are_not_rows(history: HistoryStore) -> None:
    rows = rows_from_candles([make_candle(T0), make_candle(T0 + M, closed=False)])
    assert [r.open_time for r in rows] == [T0]


async def test_range_reads_match_a_reference(history: HistoryStore) -> None:
    rng = random.Random(7)
    candles = series_of(T0, 3000)
    kept = [c for c in candles if rng.random() > 0.1]  # holes
    rng.shuffle(kept)
    await history.write(rows_from_candles(kept))
    kept.sort(key=lambda c: c.open_time)
    times = [c.open_time for c in kept]
    frames = [candle_frame(c) for c in kept]
    for _ in range(40):
        start = T0 + rng.randrange(-10, 3100) * M if rng.random() < 0.8 else None
        end = T0 + rng.randrange(0, 3200) * M if rng.random() < 0.7 else None
        limit = rng.choice([1, 5, 100, 1000, 5000])
        found = await history.get_candles(BTC_1M, start=start, end=end, limit=limit)
        window = [
            i
            for i, t in enumerate(times)
            if (start is None or t >= start) and (end is None or t < end)
        ]
        window = window[:limit] if start is not None else window[-limit:]
        assert list(found.open_times) == [times[i] for i in window]
        assert list(found.frames) == [frames[i] for i in window]
        if window:
            assert isinstance(found.frames, FrameRun)
            assert found.frames.data == b"".join(frames[i] for i in window)
    other = await history.get_candles(
        SeriesKey("ETHUSDT", Interval.M1), start=None, end=None, limit=9
    )
    assert len(other) == 0


async def test_retention_drops_whole_partitions(pg_url: str) -> None:
    store = HistoryStore(pg_url, retention={Interval.S1: 7 * DAY})
    await store.connect()
    try:
        seconds = [T0 + d * DAY + k * 10**9 for d in range(10) for k in range(0, 86_400, 3600)]
        candles = [make_candle(t, interval=Interval.S1) for t in seconds]
        minutes = series_of(T0, 100)
        await store.write(rows_from_candles(candles + minutes))
        assert await store.count(SeriesKey("BTCUSDT", Interval.S1)) == len(seconds)
        now = T0 + 10 * DAY + 3600 * 10**9  # 2025-01-11 01:00
        dropped = await store.apply_retention(now)
        # Days wholly older than seven days before now go: Jan 1 to Jan 3.
        assert dropped == [period_of(Interval.S1, T0 + d * DAY).name for d in range(3)]
        left = await store.get_candles(
            SeriesKey("BTCUSDT", Interval.S1), start=0, end=None, limit=10**6
        )
        assert left.open_times[0] == T0 + 3 * DAY
        assert len(left) == len(seconds) - 3 * 24
        assert await store.count(BTC_1M) == 100  # kept forever
        with psycopg.connect(pg_url) as conn:
            names = {r[0] for r in conn.execute("SELECT relname FROM pg_class").fetchall()}
        assert not names & set(dropped)
        assert await store.apply_retention(now) == []
        # A candle written into a dropped day again gets a new partition.
        await store.write(rows_from_candles([make_candle(T0, interval=Interval.S1)]))
        assert await store.count(SeriesKey("BTCUSDT", Interval.S1)) == len(seconds) - 71
    finally:
        await store.close()


async def test_coverage_earliest_and_missing(history: HistoryStore) -> None:
    candles = series_of(T0, 100)
    holes = {*range(10, 15), 50, *range(90, 100)}
    await history.write(rows_from_candles([c for i, c in enumerate(candles) if i not in holes]))
    daily = series_of(T0 - 40 * DAY, 10, interval=Interval.D1)
    await history.write(rows_from_candles(daily))
    earliest = await history.earliest(
        [BTC_1M, SeriesKey("BTCUSDT", Interval.D1), SeriesKey("BTCUSDT", Interval.H1)]
    )
    assert earliest == {BTC_1M: T0, SeriesKey("BTCUSDT", Interval.D1): T0 - 40 * DAY}
    missing = await history.missing(BTC_1M, T0 - 5 * M, T0 + 120 * M)
    assert missing == [
        (T0 - 5 * M, T0),
        (T0 + 10 * M, T0 + 15 * M),
        (T0 + 50 * M, T0 + 51 * M),
        (T0 + 90 * M, T0 + 120 * M),
    ]
    assert await history.missing(BTC_1M, T0 + 20 * M, T0 + 40 * M) == []
    assert await history.missing(BTC_1M, T0 + 200 * M, T0 + 300 * M) == [
        (T0 + 200 * M, T0 + 300 * M)
    ]
    # Months: calendar arithmetic.
    monthly = series_of(T0, 6, interval=Interval.MO1)
    await history.write(rows_from_candles([monthly[0], monthly[1], monthly[4]]))
    key = SeriesKey("BTCUSDT", Interval.MO1)
    assert await history.missing(key, T0, monthly[5].close_time) == [
        (monthly[2].open_time, monthly[4].open_time),
        (monthly[5].open_time, monthly[5].close_time),
    ]
    assert gaps(Interval.M1, T0, T0 + 3 * M, [T0, T0 + 2 * M]) == [(T0 + M, T0 + 2 * M)]


async def test_checkpoint_is_saved_with_the_rows(history: HistoryStore) -> None:
    await history.write(rows_from_candles(series_of(T0, 3)), {"BTCUSDT": (b"e" * 8, 41)})
    assert await history.checkpoints() == {"BTCUSDT": (b"e" * 8, 41)}
    await history.write([], {"BTCUSDT": (b"f" * 8, 2)})
    assert await history.checkpoints() == {"BTCUSDT": (b"f" * 8, 2)}


async def test_migrations_apply_once_from_concurrent_processes(pg_url: str) -> None:
    async def one() -> list[int]:
        conn = await psycopg.AsyncConnection.connect(pg_url, autocommit=True)
        try:
            return await apply_migrations(conn)
        finally:
            await conn.close()

    results = await asyncio.gather(*(one() for _ in range(5)))
    assert sorted(v for r in results for v in r) == list(range(1, len(MIGRATIONS) + 1))
    store = HistoryStore(pg_url)
    assert await store.upgrade() == []
    assert await store.version() == len(MIGRATIONS)


async def test_bad_password_and_url_name_the_setting(pg_server: PostgresServer) -> None:
    wrong = pg_server.url.replace(PASSWORD, "not-the-password")
    with pytest.raises(ConfigError) as raised:
        await HistoryStore(wrong).connect()
    message = str(raised.value)
    assert "CANDLEWIRE_POSTGRES_URL" in message
    assert "password authentication failed" in message
    assert "not-the-password" not in message
    with pytest.raises(ConfigError, match=r"CANDLEWIRE_POSTGRES_URL.*does not exist"):
        await HistoryStore(pg_server.url_for("no_such_db")).connect()
    with pytest.raises(ConfigError, match="CANDLEWIRE_POSTGRES_URL"):
        await HistoryStore("postgresql://u:pw@127.0.0.1:1/x", timeout=1).connect()


async def test_unreachable_while_running_is_history_unavailable(
    pg_server: PostgresServer,
) -> None:
    from tests.history.pg import postgres

    with postgres() as own:
        store = HistoryStore(own.url, timeout=1.0)
        await store.connect()
        try:
            await store.write(rows_from_candles(series_of(T0, 5)))
            own.stop()
            with pytest.raises(HistoryUnavailable):
                await store.get_candles(BTC_1M, start=None, end=None, limit=10)
            with pytest.raises(HistoryUnavailable):
                await store.write(rows_from_candles(series_of(T0 + 5 * M, 5)))
            with pytest.raises(HistoryUnavailable):
                await store.ping()
            own.start()
            await until_writable(store)  # the pools reconnect by themselves
            await store.write(rows_from_candles(series_of(T0 + 5 * M, 5)))
            found = await store.get_candles(BTC_1M, start=None, end=None, limit=100)
            assert len(found) == 10
        finally:
            await store.close()
