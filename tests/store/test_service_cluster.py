"""The service on a 3-master Redis Cluster, in-process: symbols on different
masters in one stream, cancelled at random points and resumed, give exactly
what an uninterrupted subscriber gets."""

from __future__ import annotations

import random
from collections.abc import Awaitable
from typing import Any

from candlewire.domain import Interval, SeriesKey
from candlewire.store.redis.keys import Keys
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.scripted import ScriptedFeed, running, sec, stub_for
from tests.store.conftest import RedisClusterNodes, cluster_prefix
from tests.streams import key, read, series

CANDIDATES = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "LTCUSDT")


def spread_symbols(cluster: RedisClusterNodes, keys: Keys) -> list[str]:
    """Two symbols per master, chosen by where their keys live."""
    by_node: dict[int, list[str]] = {}
    for symbol in CANDIDATES:
        by_node.setdefault(cluster.node_of(keys.seq(symbol)), []).append(symbol)
    assert len(by_node) == 3, by_node
    return [s for symbols in by_node.values() for s in symbols[:2]]


async def test_resumed_streams_over_symbols_on_several_masters_match_an_uninterrupted_one(
    redis_cluster: RedisClusterNodes,
) -> None:
    prefix = cluster_prefix()
    keys = Keys(prefix)
    symbols = spread_symbols(redis_cluster, keys)
    # Every key of a symbol is on its master (one slot per symbol).
    for symbol in symbols:
        node = redis_cluster.node_of(keys.seq(symbol))
        names = keys.series(SeriesKey(symbol, Interval.M1))
        assert {redis_cluster.node_of(k) for k in (names.candles, names.log, names.meta)} == {node}
    feed = ScriptedFeed(symbols)
    async with running(
        feed,
        redis_url=redis_cluster.url,
        redis_prefix=prefix,
        symbols=",".join(symbols),
        intervals="1s,1m",
        heartbeat_interval=0.2,
    ) as app:
        await feed.attached()
        for i, symbol in enumerate(symbols):  # some history first
            await feed.trade(symbol, sec(i + 1), f"{100 + i}", "1")
        wanted = [series(s, pb.INTERVAL_1M) for s in symbols] + [series(symbols[0], pb.INTERVAL_1S)]
        wanted_keys = [SeriesKey(s.symbol, Interval(s.interval)) for s in wanted]
        request = pb.SubscribeCandlesRequest(series=wanted, history=2)
        async with stub_for(app) as stub:
            reference = stub.SubscribeCandles(request)
            first = await read(reference, len(symbols) + 2)
            assert first[-1].WhichOneof("event") == "snapshot_end"
            expected = [key(r) for r in first]

            rng = random.Random(4)
            got: list[tuple[object, ...]] = []
            token = ""
            resumes = heartbeat_tokens = 0
            call: Any = stub.SubscribeCandles(request)

            async def read_interrupted(n: int) -> None:
                """Read n responses (taking heartbeats' tokens too), cancelling
                and resuming at random points."""
                nonlocal token, resumes, heartbeat_tokens, call
                while n:
                    if rng.random() < 0.3:
                        call.cancel()
                        request.resume_token = token
                        call = stub.SubscribeCandles(request)
                        resumes += 1
                    (r,) = await read(call, heartbeats=True)
                    token = r.resume_token
                    if r.WhichOneof("event") == "heartbeat":
                        heartbeat_tokens += 1
                        continue
                    got.append(key(r))
                    n -= 1

            await read_interrupted(len(first))

            async def step(event: Awaitable[None]) -> None:
                """Feed one event, then let both subscribers read all it produced."""
                nonlocal expected
                head = await app.store.head(symbols)
                await event
                n = len(await app.store.read_updates(wanted_keys, after=head))
                expected += [key(r) for r in await read(reference, n)]
                await read_interrupted(n)

            async def heartbeat() -> None:
                """Everything was read: the next response is a heartbeat; go on from its token."""
                nonlocal token, heartbeat_tokens
                (r,) = await read(call, heartbeats=True)
                assert r.WhichOneof("event") == "heartbeat"
                token = r.resume_token
                heartbeat_tokens += 1

            t = 10.0
            for _ in range(60):
                t += rng.choice([0.3, 0.8, 1.5, 20.0])
                symbol = rng.choice(symbols)
                await step(feed.trade(symbol, sec(t), f"{rng.randint(900, 1100) / 10}", "0.5"))
                if rng.random() < 0.2:
                    await heartbeat()
            call.cancel()
            reference.cancel()
    assert resumes > 15
    assert heartbeat_tokens > 0
    assert got == expected
    assert {r[1] for r in got if r[0] == "candle"} == set(symbols)
