"""The write path into history: the Redis update-log archiver with its
checkpoint, and the memory store's bounded queue, against real servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from candlewire.codec import candle_frame
from candlewire.domain import Candle, Interval, SeriesKey, Side, Source, Trade
from candlewire.errors import HistoryUnavailable
from candlewire.history import HistoryStore
from candlewire.history.archive import ArchivingStore, LogArchiver, QueueArchiver
from candlewire.history.postgres import BEGIN
from candlewire.history.tiered import TieredStore
from candlewire.store.base import Store
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


def _trades(
    first: int, count: int, symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT")
) -> list[Trade]:
    """``count`` trades of each symbol, a second apart from trade ``first`` on."""
    return [
        Trade(s, T0 + i * 10**9, Decimal(100 + i % 7), Decimal("0.5"), Source.LIVE,
              Side.BUY if i % 2 else Side.SELL, str(i))
        for i in range(first, first + count)
        for s in symbols
    ]  # fmt: skip


async def _archived_trades(
    history: HistoryStore, hot: Store, symbol: str
) -> list[tuple[int, bytes]]:
    head = (await hot.trade_heads([symbol]))[symbol]
    found = await history.trades_after(
        symbol, hot.epoch, after=BEGIN, before=head + 1, start=None, end=None, limit=10**6
    )
    return list(zip(found.cursors, found.frames, strict=True))


async def _hot_trades(hot: Store, symbol: str) -> list[tuple[int, bytes]]:
    found = await hot.get_trades(symbol, limit=10**6)
    return list(zip(found.seqs, found.frames, strict=True))


async def test_trade_log_archiver_survives_outages_and_restarts(
    redis_here: RedisServer, own_pg: PostgresServer, own_history: HistoryStore
) -> None:
    redis = RedisStore(redis_here.url, retention=1000, log_size=4096, trade_retention=10_000)
    await redis.connect()
    try:
        await redis.write_trades(_trades(0, 30))
        archiver = LogArchiver(redis, own_history, SERIES)
        assert await archiver.archive_once() == 60
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert await _archived_trades(own_history, redis, symbol) == await _hot_trades(
                redis, symbol
            )
        own_pg.stop()
        await redis.write_trades(_trades(30, 20))
        with pytest.raises(HistoryUnavailable):
            await archiver.archive_once()
        await redis.write_trades(_trades(50, 20))
        own_pg.start()
        await until_writable(own_history)
        # A new process (after a crash or a fail-over) continues from the checkpoint.
        successor = LogArchiver(redis, own_history, SERIES)
        assert await successor.archive_once() == 2 * 40  # only what came after it
        assert await successor.archive_once() == 0
        heads = await redis.trade_heads(["BTCUSDT", "ETHUSDT"])
        assert successor.trade_checkpoint("BTCUSDT") == heads["BTCUSDT"] == 70
        for symbol in ("BTCUSDT", "ETHUSDT"):
            archived = await _archived_trades(own_history, redis, symbol)
            assert archived == await _hot_trades(redis, symbol)
            assert [c for c, _ in archived] == list(range(1, 71))
        # A checkpoint that lags what was committed (a crash between the commit
        # and anything after it) archives some trades again: stored once.
        await own_history.write_trades([], {"BTCUSDT": (redis.epoch, 10)})
        again = LogArchiver(redis, own_history, SERIES)
        assert await again.archive_once() == 60
        assert await own_history.trade_count("BTCUSDT") == 70
        assert await own_history.trade_count() == 140
    finally:
        await redis.close()


async def test_trade_log_archiver_beyond_the_trade_log_keeps_what_it_holds(
    redis_here: RedisServer, own_history: HistoryStore
) -> None:
    redis = RedisStore(redis_here.url, trade_retention=50)
    await redis.connect()
    try:
        await redis.write_trades(_trades(0, 10, ("BTCUSDT",)))
        archiver = LogArchiver(redis, own_history, SERIES[:1])
        await archiver.archive_once()
        await redis.write_trades(_trades(10, 200, ("BTCUSDT",)))  # more than the log keeps
        await archiver.archive_once()
        assert archiver.trades_lost == 1
        archived = await _archived_trades(own_history, redis, "BTCUSDT")
        assert [c for c, _ in archived] == [*range(1, 11), *range(161, 211)]
        assert archived[10:] == await _hot_trades(redis, "BTCUSDT")
        await redis.write_trades(_trades(210, 5, ("BTCUSDT",)))
        assert await archiver.archive_once() == 5
        assert archiver.trades_lost == 1  # followed again from the new checkpoint
    finally:
        await redis.close()


async def test_queue_archiver_writes_trades_behind_and_counts_drops(
    own_pg: PostgresServer, own_history: HistoryStore
) -> None:
    archiver = QueueArchiver(own_history, capacity=50, batch=7)
    hot = MemoryStore(trade_retention=10_000)
    store = ArchivingStore(hot, archiver)
    writer = asyncio.create_task(archiver.run())
    try:
        await store.write_trades(_trades(0, 10))
        await archiver.drained()
        for symbol in ("BTCUSDT", "ETHUSDT"):
            assert await _archived_trades(own_history, hot, symbol) == await _hot_trades(
                hot, symbol
            )
        own_pg.stop()
        await store.write_trades(_trades(10, 40))  # 80 trades, room for 50
        assert archiver.trades_dropped == 30
        assert archiver.pending == 50
        own_pg.start()
        await archiver.drained()
        assert archiver.trades_dropped == 30
        for symbol in ("BTCUSDT", "ETHUSDT"):
            archived = await _archived_trades(own_history, hot, symbol)
            # the oldest 30 of the 80 (15 per symbol) were dropped, the rest written once
            assert [c for c, _ in archived] == [*range(1, 11), *range(26, 51)]
            hot_trades = dict(await _hot_trades(hot, symbol))
            assert all(hot_trades[c] == f for c, f in archived)
    finally:
        await cancel_and_wait(writer)


async def test_trades_read_across_a_redis_trade_log_and_postgres(
    redis_here: RedisServer, own_history: HistoryStore
) -> None:
    redis = RedisStore(redis_here.url, trade_retention=30)
    await redis.connect()
    try:
        archiver = LogArchiver(redis, own_history, SERIES[:1])
        frames: list[bytes] = []
        for first in range(0, 100, 10):
            frames += [u.frame for u in await redis.write_trades(_trades(first, 10, ("BTCUSDT",)))]
            await archiver.archive_once()
        hot = await redis.get_trades("BTCUSDT", limit=1000)
        assert list(hot.seqs) == list(range(71, 101))
        tiered = TieredStore(redis, own_history)
        for start in (T0, T0 + 55 * 10**9, T0 + 80 * 10**9):
            got: list[bytes] = []
            cursors: list[int] = []
            after: int | None = None
            while True:
                page = await tiered.page_trades(
                    "BTCUSDT", start=start, end=None, after=after, upto=None, limit=7
                )
                got += page.frames
                cursors += page.seqs
                if len(page) < 7:
                    break
                after = page.seqs[-1]
            skip = (start - T0) // 10**9
            assert got == frames[skip:] and cursors == list(range(skip + 1, 101)), skip
        latest = await tiered.latest_trades("BTCUSDT", end=None, limit=45)
        assert list(latest.frames) == frames[-45:] and list(latest.seqs) == list(range(56, 101))
        older = await tiered.latest_trades("BTCUSDT", end=T0 + 40 * 10**9, limit=15)
        assert list(older.frames) == frames[25:40]
    finally:
        await redis.close()
