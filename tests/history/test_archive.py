"""The write path into history: the Redis update-log archiver with its
checkpoint, and the memory store's bounded queue, against real servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from candlewire.codec import candle_frame
from candlewire.domain import Candle, Interval, SeriesKey
from candlewire.errors import HistoryUnavailable
from candlewire.history import HistoryStore
from candlewire.history.archive import ArchivingStore, LogArchiver, QueueArchiver
from candlewire.store.memory import MemoryStore
from candlewire.store.redis import RedisStore
from candlewire.tasks import cancel_and_wait
from tests.history.candles import make_candle
from tests.history.conftest import until_writable
from tests.history.pg import PostgresServer, postgres
from tests.store.conftest import RedisServer, redis_server_in

M = 60 * 10**9
T0 = 1_735_689_600 * 10**9
SERIES = [SeriesKey("BTCUSDT", Interval.M1), SeriesKey("ETHUSDT", Interval.M1)]


@pytest.fixture
def redis_here(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server_in(tmp_path) as server:
        yield server


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    with postgres() as server:
        yield server


@pytest.fixture
async def own_history(own_pg: PostgresServer) -> AsyncIterator[HistoryStore]:
    store = HistoryStore(own_pg.url, timeout=1.0)
    await store.connect()
    try:
        yield store
    finally:
        await store.close()


def _batch(start: int, count: int, final: dict[tuple[str, int], Candle]) -> list[Candle]:
    """``count`` minutes of both symbols: each candle forming, then closed,
    and every third one corrected after close."""
    out: list[Candle] = []
    for i in range(start, start + count):
        for key in SERIES:
            t = T0 + i * M
            versions = [make_candle(t, symbol=key.symbol, closed=False)]
            versions.append(make_candle(t, symbol=key.symbol, revision=1))
            if i % 3 == 0:
                versions.append(make_candle(t, symbol=key.symbol, revision=2, price="7"))
            out.extend(versions)
            final[(key.symbol, t)] = versions[-1]
    return out


async def _archived(history: HistoryStore) -> dict[tuple[str, int], bytes]:
    found: dict[tuple[str, int], bytes] = {}
    for key in SERIES:
        got = await history.get_candles(key, start=0, end=None, limit=10**6)
        for t, frame in zip(got.open_times, got.frames, strict=True):
            assert (key.symbol, t) not in found
            found[(key.symbol, t)] = frame
    return found


async def test_log_archiver_survives_outages_and_restarts(
    redis_here: RedisServer, own_pg: PostgresServer, own_history: HistoryStore
) -> None:
    redis = RedisStore(redis_here.url, retention=1000, log_size=4096)
    await redis.connect()
    try:
        final: dict[tuple[str, int], Candle] = {}
        for i in range(0, 30, 10):
            await redis.write_candles(_batch(i, 10, final))
        archiver = LogArchiver(redis, own_history, SERIES)
        await archiver.archive_once()
        assert await _archived(own_history) == {k: candle_frame(c) for k, c in final.items()}

        own_pg.stop()
        later = _batch(30, 20, final)
        await redis.write_candles(later)
        with pytest.raises(HistoryUnavailable):
            await archiver.archive_once()
        later += _batch(50, 20, final)
        await redis.write_candles(later[len(later) // 2 :])
        own_pg.start()
        await until_writable(own_history)
        # A new process (after a crash or a fail-over) continues from the checkpoint.
        successor = LogArchiver(redis, own_history, SERIES)
        written = await successor.archive_once()
        assert written == sum(c.closed for c in later)  # only what came after the checkpoint
        assert await _archived(own_history) == {k: candle_frame(c) for k, c in final.items()}
        assert await successor.archive_once() == 0
        head = await redis.head(["BTCUSDT", "ETHUSDT"])
        assert successor.checkpoint("BTCUSDT") == head["BTCUSDT"]
    finally:
        await redis.close()


async def test_log_archiver_beyond_log_retention_keeps_what_the_hot_store_holds(
    redis_here: RedisServer, own_history: HistoryStore
) -> None:
    redis = RedisStore(redis_here.url, retention=100, log_size=16)
    await redis.connect()
    try:
        final: dict[tuple[str, int], Candle] = {}
        await redis.write_candles(_batch(0, 5, final))
        archiver = LogArchiver(redis, own_history, SERIES, retention=100)
        await archiver.archive_once()
        for i in range(5, 300, 10):  # far more updates than the logs keep
            await redis.write_candles(_batch(i, 10, final))
        await archiver.archive_once()
        assert archiver.lost == 2  # one per symbol
        archived = await _archived(own_history)
        newest = {k: candle_frame(c) for k, c in final.items() if k[1] >= T0 + 205 * M}
        assert newest.items() <= archived.items()
        assert len(archived) < len(final)  # what was evicted unarchived is gone: said, not hidden
        await redis.write_candles(_batch(305, 2, final))
        await archiver.archive_once()
        assert archiver.lost == 2  # followed again from the new checkpoint
    finally:
        await redis.close()


async def test_queue_archiver_writes_behind_and_counts_drops(
    own_pg: PostgresServer, own_history: HistoryStore
) -> None:
    archiver = QueueArchiver(own_history, capacity=50, batch=7)
    store = ArchivingStore(MemoryStore(retention=1000), archiver)
    writer = asyncio.create_task(archiver.run())
    try:
        final: dict[tuple[str, int], Candle] = {}
        await store.write_candles(_batch(0, 10, final))
        await archiver.drained()
        assert await _archived(own_history) == {k: candle_frame(c) for k, c in final.items()}
        own_pg.stop()
        await store.write_candles(_batch(10, 40, final))  # 80 closed candles, room for 50
        assert archiver.dropped == 30
        assert archiver.pending == 50
        own_pg.start()
        await archiver.drained()
        archived = await _archived(own_history)
        kept = [k for k in final if k[1] >= T0 + 25 * M]  # the oldest 30 were dropped
        assert {k: archived[k] for k in kept} == {k: candle_frame(final[k]) for k in kept}
        assert len(archived) == 20 + 50
    finally:
        await cancel_and_wait(writer)
