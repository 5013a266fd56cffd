"""Rejection counts through Redis: what an ingestor's validation refused is
shown by every replica (``ListSymbols`` and metrics), and survives an
ingestor fail-over.

The processes are App instances in this event loop on one real
``redis-server``: an ingestor (``role=ingest``) and an API replica
(``role=api``), then a second ingestor after the first stopped. Flushes and
reads are triggered directly (they also run once a second on their own).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from candlewire.app import App
from candlewire.flow.rejections import RejectionPublisher, RejectionReader
from candlewire.obs import render
from candlewire.store.redis import RedisStore
from candlewire.validate import Reason
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.scripted import ScriptedFeed, running, sec, stub_for
from tests.store.conftest import RedisServer

SYMBOLS = ("BTCUSDT", "ETHUSDT")
PRICE, SIZE = int(Reason.NON_POSITIVE_PRICE), int(Reason.NON_POSITIVE_SIZE)


async def test_the_store_adds_counts_and_keeps_the_newest_time(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    try:
        await store.connect()
        assert await store.rejection_counts(["BTCUSDT"]) == {"BTCUSDT": {}}
        await store.add_rejections({"BTCUSDT": {PRICE: (2, 1_767_225_600_000_000_123)}})
        await store.add_rejections(
            {
                "BTCUSDT": {PRICE: (3, 1_767_225_600_000_000_122), SIZE: (1, 99)},
                "ETHUSDT": {SIZE: (4, 7)},
            }
        )
        assert await store.rejection_counts(list(SYMBOLS)) == {
            # the older time of the second batch does not replace the newer one
            "BTCUSDT": {PRICE: (5, 1_767_225_600_000_000_123), SIZE: (1, 99)},
            "ETHUSDT": {SIZE: (4, 7)},
        }
    finally:
        await store.close()


@asynccontextmanager
async def process(redis_server: RedisServer, role: str, **extra: Any) -> AsyncIterator[App]:
    feed = ScriptedFeed(SYMBOLS)
    settings: dict[str, Any] = {
        "redis_url": redis_server.url,
        "symbols": ",".join(SYMBOLS),
        "intervals": "1m",
        "role": role,
        "lease_ttl": 2.0,
        "heartbeat_interval": 30,
        **extra,
    }
    async with running(feed, **settings) as app:
        if role != "api":
            await feed.attached()  # holding the lease, ingesting
        app.test_feed = feed  # type: ignore[attr-defined]
        yield app


async def refuse(app: App, *trades: tuple[str, float, str, str]) -> None:
    """Feed trades the validation refuses, then flush the counts to Redis."""
    feed: ScriptedFeed = app.test_feed  # type: ignore[attr-defined]
    await feed.trades([(s, sec(t), p, q) for s, t, p, q in trades])
    publisher = app.rejection_publisher
    assert isinstance(publisher, RejectionPublisher)
    await publisher.flush()
    assert publisher.pending() == {}


async def shown(app: App) -> dict[str, dict[int, tuple[int, int]]]:
    """What ListSymbols of ``app`` shows, once its reader read Redis."""
    reader = app.rejection_reader
    assert isinstance(reader, RejectionReader)
    await reader.read()
    async with stub_for(app) as stub:
        response = await stub.ListSymbols(pb.ListSymbolsRequest())
    return {
        s.symbol: {r.reason: (r.count, r.last_time.ToNanoseconds()) for r in s.rejections}
        for s in response.symbols
    }


def metric(app: App) -> dict[tuple[str, str], float]:
    """candlewire_input_rejections of ``app``'s metrics, by (symbol, reason)."""
    text = render(app.metrics).decode()
    pattern = r'candlewire_input_rejections_total\{reason="(\w+)",symbol="(\w+)"\} (\S+)'
    return {(symbol, reason): float(v) for reason, symbol, v in re.findall(pattern, text)}


async def test_an_api_replica_shows_what_the_ingestor_refused_across_a_fail_over(
    redis_server: RedisServer,
) -> None:
    async with process(redis_server, "api") as api:
        assert await shown(api) == {"BTCUSDT": {}, "ETHUSDT": {}}
        async with process(redis_server, "ingest") as first:
            assert first.rejection_reader is None  # it does not serve
            await refuse(
                first,
                ("BTCUSDT", 1, "0", "1"),
                ("BTCUSDT", 2, "-5", "1"),
                ("ETHUSDT", 3, "10", "0"),
            )
            assert first.rejections.total() == 3
            assert await shown(api) == {
                "BTCUSDT": {PRICE: (2, sec(2))},
                "ETHUSDT": {SIZE: (1, sec(3))},
            }
            assert metric(api) == {
                ("BTCUSDT", "non_positive_price"): 2.0,
                ("ETHUSDT", "non_positive_size"): 1.0,
            }
        # The ingestor is gone: the replica still shows its counts.
        assert (await shown(api))["BTCUSDT"] == {PRICE: (2, sec(2))}

        async with process(redis_server, "ingest") as second:
            assert second.rejections.total() == 0  # a new process counts from zero ...
            assert (await shown(api))["BTCUSDT"] == {PRICE: (2, sec(2))}
            await refuse(second, ("BTCUSDT", 4, "0", "1"), ("BTCUSDT", 5, "1", "-1"))
            # ... and adds to the totals.
            assert await shown(api) == {
                "BTCUSDT": {PRICE: (3, sec(4)), SIZE: (1, sec(5))},
                "ETHUSDT": {SIZE: (1, sec(3))},
            }
            assert metric(api)[("BTCUSDT", "non_positive_price")] == 3.0


async def test_a_process_that_ingests_and_serves_counts_once(redis_server: RedisServer) -> None:
    async with process(redis_server, "all") as app:
        await refuse(app, ("BTCUSDT", 1, "0", "1"), ("BTCUSDT", 2, "0", "1"))
        assert app.rejections.total() == 2
        assert (await shown(app))["BTCUSDT"] == {PRICE: (2, sec(2))}
        assert metric(app) == {("BTCUSDT", "non_positive_price"): 2.0}
