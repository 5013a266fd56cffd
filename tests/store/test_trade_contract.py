"""The trade log contract, against MemoryStore, RedisStore on one Redis and
RedisStore on a Redis Cluster: numbering per symbol, marks, time ranges,
paging, retention by count and by age, and expiry of positions."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from candlewire.domain import NANOS_PER_SECOND, Side, Source, Trade
from candlewire.errors import DataExpired
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.store.conftest import MakeStore

S = NANOS_PER_SECOND
T0 = 1_767_225_600 * S
SYMS = ("BTCUSDT", "ETHUSDT")


def trade(i: int, *, at: float | None = None, symbol: str = "BTCUSDT", price: str = "") -> Trade:
    return Trade(
        symbol,
        T0 + round((i if at is None else at) * S),
        Decimal(price or f"{100 + i}.5"),
        Decimal("0.25"),
        Source.LIVE,
        Side.BUY if i % 2 else Side.SELL,
        f"id{i}",
        T0 + i * S + 7,
    )


def parsed(frames: object) -> list[pb.Trade]:
    assert isinstance(frames, Iterable)
    return list(pb.GetTradesResponse.FromString(b"".join(frames)).trades)


def ids(frames: object) -> list[str]:
    return [t.trade_id for t in parsed(frames)]


async def test_trades_are_numbered_per_symbol_in_write_order(make_store: MakeStore) -> None:
    store = await make_store()
    assert await store.trade_heads(["BTCUSDT", "ETHUSDT"]) == {"BTCUSDT": 0, "ETHUSDT": 0}
    written = await store.write_trades(
        [trade(1), trade(2, symbol="ETHUSDT"), trade(3), trade(4, symbol="ETHUSDT")]
    )
    # In order per symbol (the order across symbols is the store's).
    by_symbol = {s: [(u.seq, u.frame) for u in written if u.series.symbol == s] for s in SYMS}
    assert [seq for seq, _ in by_symbol["BTCUSDT"]] == [1, 2]
    assert ids(f for _, f in by_symbol["BTCUSDT"]) == ["id1", "id3"]
    assert [seq for seq, _ in by_symbol["ETHUSDT"]] == [1, 2]
    assert ids(f for _, f in by_symbol["ETHUSDT"]) == ["id2", "id4"]
    assert await store.trade_heads(["BTCUSDT", "ETHUSDT"]) == {"BTCUSDT": 2, "ETHUSDT": 2}
    more = await store.write_trades([trade(5)])
    assert [u.seq for u in more] == [3]
    (first,) = parsed([by_symbol["BTCUSDT"][0][1]])
    assert first == pb.Trade(
        symbol="BTCUSDT",
        trade_id="id1",
        price=101.5,
        quantity=0.25,
        side=pb.AGGRESSOR_SIDE_BUY,
        event_time=Timestamp(seconds=T0 // S + 1),
        receive_time=Timestamp(seconds=T0 // S + 1, nanos=7),
        source=pb.SOURCE_LIVE,
    )


async def test_a_late_trade_keeps_the_mark_and_stays_where_it_arrived(
    make_store: MakeStore,
) -> None:
    store = await make_store()
    written = await store.write_trades([trade(1), trade(5), trade(3), trade(6)])
    assert [u.mark for u in written] == [T0 + S, T0 + 5 * S, T0 + 5 * S, T0 + 6 * S]
    # Ranges select by mark: the late trade 3 is in the range of its mark (5 s).
    got = await store.get_trades("BTCUSDT", start=T0 + 4 * S, end=T0 + 6 * S, limit=10)
    assert ids(got.frames) == ["id5", "id3"]
    assert list(got.seqs) == [2, 3]


async def test_ranges_first_latest_and_paging(make_store: MakeStore) -> None:
    store = await make_store()
    await store.write_trades([trade(i) for i in range(20)])
    first = await store.get_trades("BTCUSDT", start=T0 + 5 * S, limit=4)
    assert ids(first.frames) == ["id5", "id6", "id7", "id8"] and first.complete
    page = await store.get_trades("BTCUSDT", start=T0 + 5 * S, after=first.seqs[-1], limit=4)
    assert ids(page.frames) == ["id9", "id10", "id11", "id12"]
    latest = await store.get_trades("BTCUSDT", end=T0 + 10 * S, limit=3, latest=True)
    assert ids(latest.frames) == ["id7", "id8", "id9"]
    upto = await store.get_trades("BTCUSDT", after=2, upto=5, limit=100)
    assert list(upto.seqs) == [3, 4, 5]
    none = await store.get_trades("BTCUSDT", start=T0 + 100 * S, limit=5)
    assert len(none) == 0
    assert len(await store.get_trades("ETHUSDT", limit=5)) == 0


async def test_retention_by_count_evicts_the_oldest_and_expires_positions(
    make_store: MakeStore,
) -> None:
    store = await make_store(trade_retention=10)
    for lo in range(0, 30, 6):
        await store.write_trades([trade(i) for i in range(lo, lo + 6)])
    everything = await store.get_trades("BTCUSDT", after=0, limit=100)
    assert list(everything.seqs) == list(range(21, 31))
    assert not everything.complete  # trades 1 to 20 are gone
    assert (await store.get_trades("BTCUSDT", after=20, limit=100)).complete
    assert [u.seq for u in await store.read_trades(["BTCUSDT"], {"BTCUSDT": 20})] == list(
        range(21, 31)
    )
    with pytest.raises(DataExpired):
        await store.read_trades(["BTCUSDT"], {"BTCUSDT": 19})
    # A range that starts after everything evicted is complete; one before is not.
    assert (await store.get_trades("BTCUSDT", start=T0 + 20 * S, limit=100)).complete
    assert not (await store.get_trades("BTCUSDT", start=T0 + 19 * S, limit=100)).complete
    assert (await store.get_trades("BTCUSDT", latest=True, limit=5)).complete


async def test_retention_by_age_evicts_trades_behind_the_window(make_store: MakeStore) -> None:
    store = await make_store(trade_window=10 * S)
    await store.write_trades([trade(i) for i in range(0, 30, 2)])
    got = await store.get_trades("BTCUSDT", limit=100)
    assert ids(got.frames) == ["id18", "id20", "id22", "id24", "id26", "id28"]
    await store.write_trades([trade(33)])
    got = await store.get_trades("BTCUSDT", limit=100)
    assert ids(got.frames) == ["id24", "id26", "id28", "id33"]
    assert list(got.seqs) == [13, 14, 15, 16]
    with pytest.raises(DataExpired):
        await store.read_trades(["BTCUSDT"], {"BTCUSDT": 11})


async def test_read_trades_returns_what_follows_a_position(make_store: MakeStore) -> None:
    store = await make_store()
    await store.write_trades([trade(i) for i in range(5)] + [trade(9, symbol="ETHUSDT")])
    found = await store.read_trades(["BTCUSDT", "ETHUSDT"], {"BTCUSDT": 3})
    assert sorted((u.series.symbol, u.seq) for u in found) == [
        ("BTCUSDT", 4), ("BTCUSDT", 5), ("ETHUSDT", 1),
    ]  # fmt: skip
    assert await store.read_trades(["BTCUSDT"], {"BTCUSDT": 5}) == []
