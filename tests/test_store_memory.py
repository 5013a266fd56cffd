"""MemoryStore: upserts, retention, ranges, the update log and rewinding."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from candlewire.codec import frame_to_candle
from candlewire.domain import Candle, Interval, SeriesKey, Source
from candlewire.errors import DataExpired
from candlewire.store.memory import MemoryStore

KEY = SeriesKey("BTCUSDT", Interval.M1)
MIN = 60 * 10**9


def candle(i: int, revision: int = 0, *, closed: bool = True, close: str = "1") -> Candle:
    price = Decimal(close)
    return Candle(
        "BTCUSDT", Interval.M1, i * MIN, (i + 1) * MIN, price, price, price, price,
        Decimal("1"), price, 1, closed, revision, Source.LIVE,
    )  # fmt: skip


async def test_newer_revision_replaces_older_never_the_reverse() -> None:
    store = MemoryStore()
    applied = await store.write_candles([candle(1, 0, closed=False), candle(1, 2, close="3")])
    assert [u.revision for u in applied] == [0, 2]
    assert await store.write_candles([candle(1, 1, close="2"), candle(1, 2, close="9")]) == []
    (frame,) = (await store.get_candles(KEY, start=None, end=None, limit=10)).frames
    assert frame_to_candle(frame).close == 3.0


async def test_retention_keeps_the_newest_and_late_old_candles_are_refused() -> None:
    store = MemoryStore(retention=100)
    for i in range(150):
        await store.write_candles([candle(i)])
    got = await store.get_candles(KEY, start=None, end=None, limit=1000)
    assert list(got.open_times) == [i * MIN for i in range(50, 150)]
    assert await store.write_candles([candle(10)]) == []
    # A backfill batch larger than the retention keeps its newest candles only.
    big = MemoryStore(retention=100)
    applied = await big.write_candles([candle(i) for i in range(1000)])
    assert [u.open_time for u in applied] == [i * MIN for i in range(900, 1000)]


async def test_ranges_latest_and_first() -> None:
    store = MemoryStore()
    await store.write_candles([candle(i) for i in range(10)])
    first = await store.get_candles(KEY, start=2 * MIN, end=8 * MIN, limit=3)
    assert list(first.open_times) == [2 * MIN, 3 * MIN, 4 * MIN]
    latest = await store.get_candles(KEY, start=None, end=8 * MIN, limit=3)
    assert list(latest.open_times) == [5 * MIN, 6 * MIN, 7 * MIN]
    assert (
        len(await store.get_candles(SeriesKey("X", Interval.M1), start=None, end=None, limit=5))
        == 0
    )


async def test_read_updates_merges_series_in_sequence_order() -> None:
    store = MemoryStore()
    other = replace(candle(0), interval=Interval.M5, close_time=5 * MIN)
    await store.write_candles([candle(0), other, candle(1), candle(0, 1)])
    updates = await store.read_updates([KEY, other.series], after=1)
    assert [(u.seq, u.series.interval) for u in updates] == [
        (2, Interval.M5),
        (3, Interval.M1),
        (4, Interval.M1),
    ]


async def test_log_trimming_expires_old_positions() -> None:
    store = MemoryStore(log_size=16)
    for i in range(40):
        await store.write_candles([candle(i)])
    with pytest.raises(DataExpired):
        await store.read_updates([KEY], after=1)
    assert len(await store.read_updates([KEY], after=30)) == 10


async def test_snapshot_at_an_earlier_position_rewinds_changed_candles() -> None:
    store = MemoryStore()
    await store.write_candles([candle(0), candle(1, 0, closed=False, close="5")])
    position = await store.head()
    await store.write_candles([candle(1, 1, close="6"), candle(2, 0, closed=False, close="7")])
    now = await store.snapshot([KEY], history=10, start=None, closed_only=False)
    then = await store.snapshot([KEY], history=10, start=None, closed_only=False, at=position)
    assert [frame_to_candle(f).close for f in now.slices[0].frames] == [1.0, 6.0, 7.0]
    assert [frame_to_candle(f).close for f in then.slices[0].frames] == [1.0, 5.0]
    assert then.position == position
    closed_then = await store.snapshot([KEY], history=10, start=None, closed_only=True, at=position)
    assert list(closed_then.slices[0].open_times) == [0]


async def test_snapshot_at_a_trimmed_position_is_expired() -> None:
    store = MemoryStore(log_size=4)
    await store.write_candles([candle(0, 0, closed=False)])
    position = await store.head()
    for revision in range(1, 20):
        await store.write_candles([candle(0, revision, closed=False)])
    with pytest.raises(DataExpired):
        await store.snapshot([KEY], history=5, start=None, closed_only=False, at=position)
