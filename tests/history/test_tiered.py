"""Stitching the hot store and history: GetCandles pages and SubscribeCandles
history over a real gRPC server equal a brute-force reference, for random
windows and page sizes around the seam; no gap, no duplicate."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from candlewire.api.server import ApiServer
from candlewire.api.servicer import Catalog, Limits, MarketDataServicer
from candlewire.codec import candle_frame, timestamp
from candlewire.domain import Candle, Instrument, Interval, SeriesKey, Source
from candlewire.history import HistoryStore
from candlewire.history.archive import ArchivingStore, QueueArchiver
from candlewire.history.tiered import TieredStore
from candlewire.hub import Hub
from candlewire.store.memory import MemoryStore
from candlewire.tasks import cancel_and_wait
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc
from tests.history.candles import make_candle
from tests.history.conftest import until_writable
from tests.history.pg import postgres

M = 60 * 10**9
T0 = 1_735_689_600 * 10**9  # 2025-01-01
HOT = 60  # candles the hot store keeps
TOTAL = 400
KEY = SeriesKey("BTCUSDT", Interval.M1)


@dataclass
class World:
    stub: marketdata_pb2_grpc.MarketDataServiceStub
    tiered: TieredStore
    reference: list[Candle]


async def _load(store: ArchivingStore, rng: random.Random) -> list[Candle]:
    final: dict[int, Candle] = {}
    times = [T0 + i * M for i in range(TOTAL)]
    for lo in range(0, TOTAL, 25):
        batch = []
        for t in times[lo : lo + 25]:
            candle = make_candle(t, closed=t != times[-1])
            batch.append(candle)
            final[t] = candle
        # Corrections after close of recent candles (still hot): newer revisions.
        for t in rng.sample(times[max(0, lo - 20) : lo + 25], 3):
            if t in final and final[t].closed:
                final[t] = make_candle(t, revision=final[t].revision + 1)
                batch.append(final[t])
        batch.sort(key=lambda c: c.open_time)
        await store.write_candles(batch)
    return [final[t] for t in sorted(final)]


@pytest.fixture
async def world(history: HistoryStore) -> AsyncIterator[World]:
    memory = MemoryStore(retention=HOT)
    archiver = QueueArchiver(history)
    writer = asyncio.create_task(archiver.run())
    try:
        reference = await _load(ArchivingStore(memory, archiver), random.Random(3))
        await archiver.drained()
    finally:
        await cancel_and_wait(writer)
    assert archiver.written >= TOTAL - 1 and archiver.dropped == 0
    tiered = TieredStore(memory, history)
    catalog = Catalog({"BTCUSDT": Instrument("BTCUSDT", "BTC", "USDT", 2, 4, Source.LIVE)},
                      (Interval.M1, Interval.H1))  # fmt: skip
    servicer = MarketDataServicer(tiered, Hub(), catalog, Limits(heartbeat_interval=60))
    server = ApiServer(servicer, "127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield World(marketdata_pb2_grpc.MarketDataServiceStub(channel), tiered, reference)
    finally:
        await server.stop(0)


def _frames(response: pb.GetCandlesResponse) -> list[bytes]:
    return [pb.GetCandlesResponse(candles=[c]).SerializeToString() for c in response.candles]


async def _pages(world: World, start: int | None, end: int | None, size: int) -> list[bytes]:
    request = pb.GetCandlesRequest(symbol="BTCUSDT", interval=pb.INTERVAL_1M, page_size=size)
    if start is not None:
        request.start_time.CopyFrom(timestamp(start))
    if end is not None:
        request.end_time.CopyFrom(timestamp(end))
    got: list[bytes] = []
    for _ in range(TOTAL + 2):
        response = await world.stub.GetCandles(request)
        assert len(response.candles) <= size
        got += _frames(response)
        if not response.next_page_token:
            return got
        request.page_token = response.next_page_token
    pytest.fail("paging did not end")


async def test_seam_is_where_the_hot_store_starts(world: World) -> None:
    oldest = await world.tiered.hot_oldest(KEY)
    assert oldest == world.reference[-HOT].open_time
    assert await world.tiered.history.count(KEY) == TOTAL - 1  # every closed candle


async def test_get_candles_pages_equal_the_reference(world: World) -> None:
    rng = random.Random(11)
    seam = world.reference[-HOT].open_time
    frames = [candle_frame(c) for c in world.reference]
    times = [c.open_time for c in world.reference]
    for _ in range(30):
        start = seam + rng.randrange(-80, 40) * M
        end = None if rng.random() < 0.4 else start + rng.randrange(1, 200) * M
        size = rng.choice([1, 2, 7, 30, 59, 60, 61, 100, 1000])
        got = await _pages(world, start, end, size)
        want = [
            f for t, f in zip(times, frames, strict=True) if t >= start and (end is None or t < end)
        ]
        assert got == want, (start, end, size)
    # The latest page_size candles, more than the hot store holds.
    for size in (1, HOT - 1, HOT, HOT + 1, 250, 1000):
        response = await world.stub.GetCandles(
            pb.GetCandlesRequest(symbol="BTCUSDT", interval=pb.INTERVAL_1M, page_size=size)
        )
        assert _frames(response) == frames[-size:]
        assert response.candles[-1].closed is False  # the forming candle, from the hot store
    # A window a year back: nothing there, nothing fabricated.
    year_ago = T0 - 365 * 1440 * M
    assert await _pages(world, year_ago, year_ago + 100 * M, 50) == []
    assert await _pages(world, year_ago, None, 1000) == frames


async def _history(world: World, **fields: object) -> list[bytes]:
    request = pb.SubscribeCandlesRequest(
        series=[pb.Series(symbol="BTCUSDT", interval=pb.INTERVAL_1M)], **fields
    )
    got: list[bytes] = []
    async with asyncio.timeout(20):
        async for response in world.stub.SubscribeCandles(request):
            if response.HasField("snapshot_end"):
                return got
            got.append(pb.GetCandlesResponse(candles=[response.candle]).SerializeToString())
    pytest.fail("no snapshot_end")


async def test_subscribe_history_equals_the_reference(world: World) -> None:
    frames = [candle_frame(c) for c in world.reference]
    closed = [candle_frame(c) for c in world.reference if c.closed]
    for n in (1, HOT - 1, HOT, HOT + 1, 300, 1000):
        assert await _history(world, history=n) == frames[-n:]
        assert await _history(world, history=n, closed_only=True) == closed[-n:]
    rng = random.Random(5)
    seam = world.reference[-HOT].open_time
    for _ in range(10):
        start = seam + rng.randrange(-120, 30) * M
        want = [candle_frame(c) for c in world.reference if c.open_time >= start]
        assert await _history(world, start_time=timestamp(start)) == want
    assert await _history(world, start_time=timestamp(T0 - 365 * 1440 * M)) == frames


async def test_missing_ranges_across_tiers(world: World, history: HistoryStore) -> None:
    assert await world.tiered.missing(KEY, T0 - 10 * M, T0 + TOTAL * M) == [(T0 - 10 * M, T0)]
    assert (await world.tiered.earliest([KEY]))[KEY] == T0
    assert await history.delete(KEY, T0 + 5 * M, T0 + 8 * M) == 3  # a hole in history only
    assert await world.tiered.missing(KEY, T0, T0 + TOTAL * M) == [(T0 + 5 * M, T0 + 8 * M)]


async def test_history_down_fails_only_what_needs_it() -> None:
    with postgres() as own:
        history = HistoryStore(own.url, timeout=1.0)
        await history.connect()
        memory = MemoryStore(retention=HOT)
        archiver = QueueArchiver(history)
        writer = asyncio.create_task(archiver.run())
        try:
            await _load(ArchivingStore(memory, archiver), random.Random(1))
            await archiver.drained()
            tiered = TieredStore(memory, history)
            own.stop()
            recent = await tiered.get_candles(KEY, start=None, end=None, limit=HOT)
            assert len(recent) == HOT
            from candlewire.errors import HistoryUnavailable

            with pytest.raises(HistoryUnavailable):
                await tiered.get_candles(KEY, start=T0, end=None, limit=10)
            with pytest.raises(HistoryUnavailable):
                await tiered.get_candles(KEY, start=None, end=None, limit=HOT + 1)
            own.start()
            await until_writable(history)
            older = await tiered.get_candles(KEY, start=T0, end=None, limit=10)
            assert list(older.open_times) == [T0 + i * M for i in range(10)]
        finally:
            await cancel_and_wait(writer)
            await history.close()
