"""The store contract: every test runs against MemoryStore, RedisStore on one
Redis and RedisStore on a 3-master Redis Cluster.

Sequence numbers grow per symbol; numbers of different symbols are not
comparable (the memory store shares one counter, Redis counts per symbol),
so positions are ``{symbol: seq}``.

Upserts, retention, ranges, the update log, rewinding snapshots and quotes;
what only Redis can do (sharing, epochs, TTLs) is in ``test_redis.py``.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from itertools import pairwise

import pytest

from candlewire.codec import FrameRun, frame_to_candle
from candlewire.domain import Candle, Interval, Quote, SeriesKey, Source
from candlewire.errors import DataExpired
from tests.store.conftest import MakeStore

KEY = SeriesKey("BTCUSDT", Interval.M1)
MIN = 60 * 10**9
BTC = ["BTCUSDT"]


def candle(
    i: int, revision: int = 0, *, closed: bool = True, close: str = "1", symbol: str = "BTCUSDT"
) -> Candle:
    price = Decimal(close)
    return Candle(
        symbol, Interval.M1, i * MIN, (i + 1) * MIN, price, price, price, price,
        Decimal("1"), price, 1, closed, revision, Source.LIVE,
    )  # fmt: skip


def closes(frames: object) -> list[float]:
    assert isinstance(frames, list | FrameRun)
    return [frame_to_candle(f).close for f in frames]


async def test_newer_revision_replaces_older_never_the_reverse(make_store: MakeStore) -> None:
    store = await make_store()
    applied = await store.write_candles([candle(1, 0, closed=False), candle(1, 2, close="3")])
    assert [u.revision for u in applied] == [0, 2]
    assert await store.write_candles([candle(1, 1, close="2"), candle(1, 2, close="9")]) == []
    (frame,) = (await store.get_candles(KEY, start=None, end=None, limit=10)).frames
    assert frame_to_candle(frame).close == 3.0


async def test_writes_are_idempotent(make_store: MakeStore) -> None:
    store = await make_store()
    batch = [candle(i, r, close=str(10 + r)) for i in range(5) for r in range(3)]
    first = await store.write_candles(batch)
    assert len(first) == 15
    head = await store.head(BTC)
    assert await store.write_candles(batch) == []
    assert await store.head(BTC) == head
    got = await store.get_candles(KEY, start=None, end=None, limit=100)
    assert closes(got.frames) == [12.0] * 5


async def test_updates_are_numbered_in_write_order(make_store: MakeStore) -> None:
    store = await make_store()
    assert await store.head(BTC) == {"BTCUSDT": 0}
    applied = await store.write_candles([candle(0), candle(1), candle(0, 1, close="2")])
    assert [u.seq for u in applied] == [1, 2, 3]
    assert [(u.open_time, u.revision, u.closed) for u in applied] == [
        (0, 0, True),
        (MIN, 0, True),
        (0, 1, True),
    ]
    assert frame_to_candle(applied[2].frame).close == 2.0
    assert await store.head(BTC) == {"BTCUSDT": 3}


async def test_retention_keeps_the_newest_and_late_old_candles_are_refused(
    make_store: MakeStore,
) -> None:
    store = await make_store(retention=100)
    for i in range(150):
        await store.write_candles([candle(i)])
    got = await store.get_candles(KEY, start=None, end=None, limit=1000)
    assert list(got.open_times) == [i * MIN for i in range(50, 150)]
    assert await store.write_candles([candle(10)]) == []
    # A backfill batch larger than the retention keeps its newest candles only.
    big = await make_store(retention=100)
    applied = await big.write_candles([candle(i) for i in range(1000)])
    assert [u.open_time for u in applied] == [i * MIN for i in range(900, 1000)]


async def test_large_batches_over_many_series_are_written_in_order(make_store: MakeStore) -> None:
    store = await make_store(retention=10_000, log_size=10_000)
    symbols = ("AAA", "BBB", "CCC")
    batch = [candle(i, symbol=s, close=str(i + 1)) for s in symbols for i in range(3000)]
    applied = await store.write_candles(batch)
    assert sorted((u.series.symbol, u.open_time) for u in applied) == [
        (c.symbol, c.open_time) for c in batch
    ]
    for symbol in symbols:  # in write order per symbol
        mine = [u for u in applied if u.series.symbol == symbol]
        assert [u.open_time for u in mine] == [i * MIN for i in range(3000)]
        assert all(a.seq < b.seq for a, b in pairwise(mine))
    # A symbol's head is at or after its newest update (the memory store's
    # counter is shared), and nothing of the symbol follows it.
    heads = await store.head(symbols)
    for symbol in symbols:
        assert heads[symbol] >= max(u.seq for u in applied if u.series.symbol == symbol)
    assert await store.read_updates([SeriesKey(s, Interval.M1) for s in symbols], heads) == []
    got = await store.get_candles(
        SeriesKey("BBB", Interval.M1), start=2990 * MIN, end=None, limit=100
    )
    assert closes(got.frames) == [float(i + 1) for i in range(2990, 3000)]


async def test_ranges_latest_and_first(make_store: MakeStore) -> None:
    store = await make_store()
    await store.write_candles([candle(i, close=str(i + 1)) for i in range(10)])
    first = await store.get_candles(KEY, start=2 * MIN, end=8 * MIN, limit=3)
    assert list(first.open_times) == [2 * MIN, 3 * MIN, 4 * MIN]
    assert closes(first.frames) == [3.0, 4.0, 5.0]
    latest = await store.get_candles(KEY, start=None, end=8 * MIN, limit=3)
    assert list(latest.open_times) == [5 * MIN, 6 * MIN, 7 * MIN]
    assert closes(latest.frames) == [6.0, 7.0, 8.0]
    tail = await store.get_candles(KEY, start=None, end=None, limit=2)
    assert list(tail.open_times) == [8 * MIN, 9 * MIN]
    empty = await store.get_candles(KEY, start=20 * MIN, end=None, limit=5)
    assert len(empty) == 0
    before = await store.get_candles(KEY, start=-5 * MIN, end=1 * MIN, limit=5)
    assert list(before.open_times) == [0]
    unknown = await store.get_candles(SeriesKey("X", Interval.M1), start=None, end=None, limit=5)
    assert len(unknown) == 0


async def test_read_updates_merges_series_in_sequence_order(make_store: MakeStore) -> None:
    store = await make_store()
    other = replace(candle(0), interval=Interval.M5, close_time=5 * MIN)
    await store.write_candles([candle(0), other, candle(1), candle(0, 1)])
    updates = await store.read_updates([KEY, other.series], after={"BTCUSDT": 1})
    assert [(u.seq, u.series.interval) for u in updates] == [
        (2, Interval.M5),
        (3, Interval.M1),
        (4, Interval.M1),
    ]
    assert [frame_to_candle(u.frame).revision for u in updates] == [0, 0, 1]
    assert await store.read_updates([KEY, other.series], after={"BTCUSDT": 4}) == []


async def test_log_trimming_expires_old_positions(make_store: MakeStore) -> None:
    # A log keeps at least log_size updates per series; much older positions expire.
    store = await make_store(log_size=16)
    for lo in range(0, 400, 20):
        await store.write_candles([candle(i) for i in range(lo, lo + 20)])
    with pytest.raises(DataExpired):
        await store.read_updates([KEY], after={"BTCUSDT": 1})
    recent = await store.read_updates([KEY], after={"BTCUSDT": 384})
    assert [u.seq for u in recent] == list(range(385, 401))


async def test_snapshot_at_an_earlier_position_rewinds_changed_candles(
    make_store: MakeStore,
) -> None:
    store = await make_store()
    await store.write_candles([candle(0), candle(1, 0, closed=False, close="5")])
    position = await store.head(BTC)
    await store.write_candles([candle(1, 1, close="6"), candle(2, 0, closed=False, close="7")])
    now = await store.snapshot([KEY], history=10, start=None, closed_only=False)
    then = await store.snapshot([KEY], history=10, start=None, closed_only=False, at=position)
    assert closes(now.slices[0].frames) == [1.0, 6.0, 7.0]
    assert now.position == await store.head(BTC)
    assert closes(then.slices[0].frames) == [1.0, 5.0]
    assert then.position == position
    closed_then = await store.snapshot([KEY], history=10, start=None, closed_only=True, at=position)
    assert list(closed_then.slices[0].open_times) == [0]
    since = await store.snapshot([KEY], history=0, start=MIN, closed_only=False)
    assert list(since.slices[0].open_times) == [MIN, 2 * MIN]


async def test_snapshot_closed_only_picks_the_last_closed(make_store: MakeStore) -> None:
    store = await make_store()
    await store.write_candles([candle(i, closed=i % 3 != 0, close=str(i + 1)) for i in range(200)])
    snap = await store.snapshot([KEY], history=5, start=None, closed_only=True)
    assert list(snap.slices[0].open_times) == [i * MIN for i in (193, 194, 196, 197, 199)]
    assert closes(snap.slices[0].frames) == [194.0, 195.0, 197.0, 198.0, 200.0]


async def test_snapshot_at_a_trimmed_position_is_expired(make_store: MakeStore) -> None:
    store = await make_store(log_size=4)
    await store.write_candles([candle(0, 0, closed=False)])
    position = await store.head(BTC)
    for revision in range(1, 400):
        await store.write_candles([candle(0, revision, closed=False)])
    with pytest.raises(DataExpired):
        await store.snapshot([KEY], history=5, start=None, closed_only=False, at=position)


async def test_history_evicted_since_a_position_is_expired(make_store: MakeStore) -> None:
    store = await make_store(retention=100)
    await store.write_candles([candle(i) for i in range(100)])
    position = await store.head(BTC)
    await store.write_candles([candle(i) for i in range(100, 110)])
    with pytest.raises(DataExpired):
        await store.snapshot([KEY], history=100, start=None, closed_only=False, at=position)
    ok = await store.snapshot([KEY], history=90, start=None, closed_only=False, at=position)
    assert list(ok.slices[0].open_times) == [i * MIN for i in range(10, 100)]


async def test_quotes_round_trip_exactly(make_store: MakeStore) -> None:
    store = await make_store()
    quote = Quote(
        "BTCUSDT", 5, Decimal("65000.01"), Decimal("65000.03"), Decimal("0.1"),
        Decimal("2.50"), Source.LIVE, 7, Decimal("65000.02"),
    )  # fmt: skip
    assert await store.get_quotes(["BTCUSDT"]) == [None]
    await store.put_quotes([quote, replace(quote, symbol="ETHUSDT", last=None)])
    got = await store.get_quotes(["ETHUSDT", "XXX", "BTCUSDT"])
    assert got == [replace(quote, symbol="ETHUSDT", last=None), None, quote]
    newer = replace(quote, time=6, bid=Decimal("1"))
    await store.put_quotes([newer])
    assert await store.get_quotes(["BTCUSDT"]) == [newer]


async def test_positions_are_per_symbol(make_store: MakeStore) -> None:
    store = await make_store()
    eth = SeriesKey("ETHUSDT", Interval.M1)
    both = ["BTCUSDT", "ETHUSDT"]
    await store.write_candles([candle(0), candle(0, symbol="ETHUSDT"), candle(1)])
    mark = await store.head(both)
    await store.write_candles(
        [
            candle(1, 1, close="2"),
            candle(1, symbol="ETHUSDT", close="3"),
            candle(2, symbol="ETHUSDT"),
        ]
    )
    after = await store.head(both)
    for symbol in both:
        assert after[symbol] > mark[symbol]
    # Each symbol is read from its own position; the rest of a symbol is in order.
    updates = await store.read_updates([KEY, eth], after=mark)
    by_symbol = {
        s: [(u.open_time, u.revision) for u in updates if u.series.symbol == s] for s in both
    }
    assert by_symbol == {"BTCUSDT": [(MIN, 1)], "ETHUSDT": [(MIN, 0), (2 * MIN, 0)]}
    for s in both:
        seqs = [u.seq for u in updates if u.series.symbol == s]
        assert seqs == sorted(seqs) and seqs[-1] <= after[s]
    only_eth = await store.read_updates(
        [KEY, eth], after={"BTCUSDT": after["BTCUSDT"], "ETHUSDT": mark["ETHUSDT"]}
    )
    assert [u.series.symbol for u in only_eth] == ["ETHUSDT", "ETHUSDT"]
    # A snapshot rewinds each symbol to its own position and reports it.
    mixed = {"BTCUSDT": mark["BTCUSDT"], "ETHUSDT": after["ETHUSDT"]}
    snap = await store.snapshot([eth, KEY], history=10, start=None, closed_only=False, at=mixed)
    assert snap.position == mixed
    assert [list(s.open_times) for s in snap.slices] == [[0, MIN, 2 * MIN], [0, MIN]]
    assert closes(snap.slices[1].frames) == [1.0, 1.0]
    now = await store.snapshot([eth, KEY], history=10, start=None, closed_only=False)
    assert now.position == after
    assert closes(now.slices[1].frames) == [1.0, 2.0]
