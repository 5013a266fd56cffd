"""The Redis store's Lua scripts are package data: every file is part of a
script the store registers, and every registered script is the one Redis runs."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from importlib.resources import files
from importlib.resources.abc import Traversable

from candlewire.domain import Quote, Source, Trade
from candlewire.store.redis import RedisStore, lua
from tests.store.conftest import RedisClusterNodes, RedisServer, cluster_prefix
from tests.store.test_contract import BTC, KEY, candle


def _lua_files(directory: Traversable, prefix: str = "") -> set[str]:
    found: set[str] = set()
    for entry in directory.iterdir():
        if entry.is_dir():
            found |= _lua_files(entry, f"{prefix}{entry.name}/")
        elif entry.name.endswith(".lua"):
            found.add(prefix + entry.name)
    return found


def test_every_script_file_is_part_of_a_registered_script() -> None:
    shipped = _lua_files(files("candlewire.store.redis").joinpath("scripts"))
    used = {
        part
        for cluster in (False, True)
        for name in lua.SCRIPTS
        for part in lua.parts(name, cluster=cluster)
    }
    assert shipped == used
    # The two deployments differ in the write guard only.
    one, cluster = lua.sources(cluster=False), lua.sources(cluster=True)
    assert {name for name in lua.SCRIPTS if one[name] != cluster[name]} == {
        "write",
        "quote",
        "trades_write",
    }
    assert "CWFENCED" in one["write"] and "CWFENCED" in cluster["write"]


async def _use_every_script(store: RedisStore) -> None:
    """One call of each store operation that runs a script."""
    await store.connect()
    value = await store.acquire_lease("s1", "test", 5.0)  # acquire
    assert value is not None
    assert await store.renew_lease("s1", value, 5.0)  # renew
    store.fence("s1", value)
    # More candles than the retention: the store reads the stored open times first (times).
    applied = await store.write_candles([candle(i) for i in range(4)])  # write
    assert [u.open_time for u in applied] == [candle(i).open_time for i in (1, 2, 3)]
    one = Decimal(1)
    await store.put_quotes([Quote("BTCUSDT", 1, one, one, one, one, Source.LIVE, 1)])  # quote
    found = await store.get_candles(KEY, start=None, end=None, limit=10)  # range
    assert list(found.open_times) == [u.open_time for u in applied]
    snapshot = await store.snapshot([KEY], history=2, start=None, closed_only=False)  # snapshot
    assert len(snapshot.slices[0]) == 2
    assert await store.read_updates([KEY], after={"BTCUSDT": 0}) == applied  # updates
    updates, bounds = await store.follow_updates([KEY], after={"BTCUSDT": 0})  # follow
    assert updates == applied and bounds[KEY] == (3, applied[0].open_time)
    assert await store.head(BTC) == {"BTCUSDT": applied[-1].seq}
    trades = [
        Trade("BTCUSDT", i * 10**9, Decimal(100 + i), Decimal(1), Source.LIVE) for i in range(3)
    ]
    written = await store.write_trades(trades)  # trades_write
    assert [u.seq for u in written] == [1, 2, 3]
    assert len(await store.get_trades("BTCUSDT", start=10**9, limit=5)) == 2  # trades_range
    await store.add_rejections({"BTCUSDT": {1: (2, 5)}})  # rejections
    assert await store.rejection_counts(["BTCUSDT"]) == {"BTCUSDT": {1: (2, 5)}}
    # The symbol's counter goes back (as after a restart from an older
    # snapshot): the next ping rotates the epoch.
    epoch = store.epoch
    await store._redis.set(store.keys.seq("BTCUSDT"), 1)
    await store.ping()  # rotate
    assert store.epoch != epoch


def _shas(*, cluster: bool) -> dict[str, str]:
    return {
        name: hashlib.sha1(text.encode()).hexdigest()
        for name, text in lua.sources(cluster=cluster).items()
    }


async def test_redis_runs_every_script_from_its_files(redis_server: RedisServer) -> None:
    with redis_server.client() as client:
        client.script_flush()
    store = RedisStore(redis_server.url, retention=3)
    try:
        await _use_every_script(store)
    finally:
        await store.close()
    shas = _shas(cluster=False)
    with redis_server.client() as client:
        loaded = client.script_exists(*shas.values())
    assert dict(zip(shas, loaded, strict=True)) == dict.fromkeys(shas, True)


async def test_redis_cluster_runs_every_script_from_its_files(
    redis_cluster: RedisClusterNodes,
) -> None:
    for server in redis_cluster.servers:
        with server.client() as client:
            client.script_flush()
    store = RedisStore(redis_cluster.url, prefix=cluster_prefix(), retention=3)
    try:
        await _use_every_script(store)
    finally:
        await store.close()
    shas = _shas(cluster=True)
    loaded = dict.fromkeys(shas, False)
    for server in redis_cluster.servers:
        with server.client() as client:
            for name, exists in zip(shas, client.script_exists(*shas.values()), strict=True):
                loaded[name] = loaded[name] or bool(exists)
    assert loaded == dict.fromkeys(shas, True)
