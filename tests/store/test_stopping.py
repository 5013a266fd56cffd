"""The Redis reader and the leased ingestion stop on one cancellation, even
when a Redis call lost it (Python 3.11's ``asyncio.wait_for``, which redis-py
uses for socket writes, can return a result instead of raising the
cancellation that arrived with it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from candlewire.domain import Interval, Quote, SeriesKey
from candlewire.flow.follow import UpdateReader
from candlewire.flow.lease import LeasedIngestion
from candlewire.hub import Hub
from candlewire.store.cached import QuoteCache
from candlewire.store.redis import RedisStore
from tests.store.conftest import RedisServer

WAIT = 10.0
SERIES = [SeriesKey("BTCUSDT", Interval.M1)]


class LosesOneCancellation(RedisStore):
    """Its blocking read loses the first cancellation, as wait_for can (and,
    on Python 3.11, sometimes does in the write of the command: counted too)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = asyncio.Event()
        self.lost = 0

    async def wait_for_updates(self, *args: Any, **kwargs: Any) -> list[tuple[str, Quote]]:
        self.waiting.set()
        try:
            result = await super().wait_for_updates(*args, **kwargs)
        except asyncio.CancelledError:
            if self.lost:
                raise
            self.lost += 1
            return []
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            self.lost += 1  # redis-py's wait_for lost it
        return result


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[LosesOneCancellation]:
    store = LosesOneCancellation(redis_server.url)
    await store.connect()
    yield store
    await store.close()


async def test_the_reader_stops_after_a_lost_cancellation(store: LosesOneCancellation) -> None:
    reader = UpdateReader(store, Hub(), SERIES, QuoteCache(30))
    task = asyncio.create_task(reader.run())
    await store.waiting.wait()
    task.cancel()
    async with asyncio.timeout(WAIT):
        await asyncio.wait({task})
    assert task.cancelled()
    assert store.lost == 1


async def test_the_leased_ingestion_stops_when_its_feed_lost_a_cancellation(
    store: LosesOneCancellation,
) -> None:
    ingesting = asyncio.Event()
    lost: list[bool] = []

    async def ingest(fresh: bool) -> None:
        try:
            ingesting.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            lost.append(fresh)
        await asyncio.Event().wait()

    leased = LeasedIngestion(store, "s1", ingest, ttl=30)
    task = asyncio.create_task(leased.run())
    await ingesting.wait()
    assert leased.holding
    task.cancel()
    async with asyncio.timeout(WAIT):
        await asyncio.wait({task})
    assert task.cancelled()
    assert lost == [True]
    assert not leased.holding
