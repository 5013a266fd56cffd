"""Trades in the history tier: GetTrades and GetVolumeProfile over the hot
trade log and PostgreSQL as one, page tokens across the seam and across
restarts of the memory store, retention, and PostgreSQL away."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest

from candlewire.api.tokens import PageToken
from candlewire.app import App
from candlewire.codec import timestamp, timestamp_ns
from candlewire.domain import NANOS_PER_SECOND, Interval, Side, Source, Trade
from candlewire.history import HistoryStore
from candlewire.history.postgres import TradeRow
from candlewire.history.tiered import TieredStore
from candlewire.intervals import bucket_start
from candlewire.store.memory import MemoryStore
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc
from tests.history.conftest import until_writable
from tests.history.pg import postgres
from tests.scripted import T0, ScriptedFeed, running, stub_for

HOT = 40  # trades the hot log keeps
COUNT = 300
SPACING = 900 * NANOS_PER_SECOND  # two trades every half hour: three days and more
DAY = 86_400 * NANOS_PER_SECOND
SETTINGS = {
    "retention": 100,
    "trade_retention": HOT,
    "intervals": "1m,1h",
    "heartbeat_interval": 0.2,
    "history_retention": "trades=forever",
}
Row = tuple[int, float, float, int, str]
"""(event time, price, quantity, side, trade id) of a trade as GetTrades returns it."""


def _time(i: int) -> int:
    return T0 + (i // 2) * 2 * SPACING  # pairs of trades at the same time


def _trades(first: int, count: int) -> list[Trade]:
    return [
        Trade(
            "BTCUSDT", _time(i), Decimal(100) + Decimal(i * 37 % 41) / 4,
            Decimal(i % 9 + 1) / 8, Source.LIVE, (Side.BUY, Side.SELL, Side.UNKNOWN)[i % 3],
            f"t{i}",
        )
        for i in range(first, first + count)
    ]  # fmt: skip


def _rows(trades: list[Trade]) -> list[Row]:
    return [(t.time, float(t.price), float(t.quantity), int(t.side), t.trade_id) for t in trades]


def _got(trades: list[pb.Trade]) -> list[Row]:
    return [
        (timestamp_ns(t.event_time), t.price, t.quantity, int(t.side), t.trade_id) for t in trades
    ]


async def _send(feed: ScriptedFeed, trades: list[Trade]) -> None:
    sink = await feed.attached()
    for lo in range(0, len(trades), 50):
        await sink.trades(trades[lo : lo + 50])


def _request(start: int | None, size: int, end: int | None = None) -> pb.GetTradesRequest:
    request = pb.GetTradesRequest(symbol="BTCUSDT", page_size=size)
    if start is not None:
        request.start_time.CopyFrom(timestamp(start))
    if end is not None:
        request.end_time.CopyFrom(timestamp(end))
    return request


async def _pages(
    stub: marketdata_pb2_grpc.MarketDataServiceStub, request: pb.GetTradesRequest
) -> tuple[list[Row], int]:
    """Every page of ``request``; (the trades, the number of pages)."""
    got: list[Row] = []
    pages = 0
    while True:
        response = await stub.GetTrades(request)
        got += _got(list(response.trades))
        pages += 1
        if not response.next_page_token:
            return got, pages
        request.page_token = response.next_page_token


Service = tuple[App, ScriptedFeed, marketdata_pb2_grpc.MarketDataServiceStub]


@pytest.fixture
async def service(pg_url: str) -> AsyncIterator[Service]:
    feed = ScriptedFeed()
    async with running(feed, postgres_url=pg_url, **SETTINGS) as app:
        await _send(feed, _trades(0, COUNT))
        assert app.history is not None and app.history.queue is not None
        await app.history.queue.drained()
        async with stub_for(app) as stub:
            yield app, feed, stub


async def test_get_trades_pages_across_the_seam(service: Service) -> None:
    app, feed, stub = service
    assert app.history is not None and app.history.queue is not None
    assert await app.history.store.trade_count("BTCUSDT") == COUNT
    assert app.history.queue.trades_dropped == 0
    hot = await app.store.get_trades("BTCUSDT", limit=10**6)
    assert list(hot.seqs) == list(range(COUNT - HOT + 1, COUNT + 1))  # the rest is history
    everything = _rows(_trades(0, COUNT))
    for size in (37, 1, 260, 1000):
        got, pages = await _pages(stub, _request(T0, size))
        assert got == everything, size
        assert pages == -(-COUNT // size), size  # no empty last page
    # From within history, up to within the hot log, and after the seam.
    got, _ = await _pages(stub, _request(_time(101), 23, end=_time(281)))
    assert got == everything[100:280]
    got, _ = await _pages(stub, _request(_time(COUNT - 10), 3))
    assert got == everything[COUNT - 10 :]
    # Without start_time: the latest trades, reaching into history when the hot log has too few.
    latest = await stub.GetTrades(_request(None, 100))
    assert _got(list(latest.trades)) == everything[-100:] and not latest.next_page_token
    older = await stub.GetTrades(_request(None, 50, end=_time(120)))
    assert _got(list(older.trades)) == everything[70:120]
    # A token of the hot log whose trades were evicted since goes on from history.
    request = _request(_time(250), 5)
    page = await stub.GetTrades(request)
    assert _got(list(page.trades)) == everything[250:255]
    assert PageToken.decode(page.next_page_token).next_start == 256  # a sequence number
    newer = _trades(COUNT, HOT)
    await _send(feed, newer)  # the hot log now starts after the token's trade
    await app.history.queue.drained()
    request.page_token = page.next_page_token
    rest, _ = await _pages(stub, request)
    assert rest == everything[255:] + _rows(newer)


Level = tuple[float, float, float, float, int]


def _brute_levels(trades: list[Trade], step: Decimal) -> list[Level]:
    """The volume profile of ``trades`` added up one trade at a time."""
    levels: dict[Decimal, list[Decimal]] = {}
    counts: dict[Decimal, int] = {}
    for t in trades:
        low = (t.price // step) * step  # prices are positive: // is the floor
        sums = levels.setdefault(low, [Decimal(0)] * 3)
        sums[{Side.BUY: 0, Side.SELL: 1}.get(t.side, 2)] += t.quantity
        counts[low] = counts.get(low, 0) + 1
    return [
        (float(p), float(s[0]), float(s[1]), float(s[2]), counts[p])
        for p, s in sorted(levels.items())
    ]


def _levels(levels: list[pb.PriceLevel]) -> list[Level]:
    return [(x.price, x.buy_volume, x.sell_volume, x.unknown_volume, x.trade_count) for x in levels]


async def test_volume_profile_over_history_is_the_sum_of_its_trades(service: Service) -> None:
    _, _, stub = service
    trades = _trades(0, COUNT)
    step = Decimal("0.75")
    for start, end in ((T0, _time(290)), (_time(33), _time(150)), (T0 - DAY, None)):
        request = pb.GetVolumeProfileRequest(
            symbol="BTCUSDT", start_time=timestamp(start), price_step=str(step),
            interval=pb.INTERVAL_1H,
        )  # fmt: skip
        if end is not None:
            request.end_time.CopyFrom(timestamp(end))
        response = await stub.GetVolumeProfile(request)
        chosen = [t for t in trades if start <= t.time and (end is None or t.time < end)]
        assert response.trade_count == len(chosen) > HOT
        assert _levels(list(response.levels)) == _brute_levels(chosen, step)
        assert not response.truncated
        hours: dict[int, list[Trade]] = {}
        for t in chosen:
            hours.setdefault(bucket_start(Interval.H1, t.time), []).append(t)
        assert [
            (timestamp_ns(c.open_time), _levels(list(c.levels))) for c in response.footprint
        ] == [(h, _brute_levels(ts, step)) for h, ts in sorted(hours.items())]


async def test_a_restarted_memory_store_pages_on_into_the_previous_ones(pg_url: str) -> None:
    """Each process of the memory store has an epoch of its own, numbered from 1:
    history orders them as they came, and a page token can name either."""
    first, second = _trades(0, 100), _trades(100, 100)
    for batch in (first, second):
        feed = ScriptedFeed()
        async with running(feed, postgres_url=pg_url, **SETTINGS) as app:
            await _send(feed, batch)
            assert app.history is not None and app.history.queue is not None
            await app.history.queue.drained()
            async with stub_for(app) as stub:
                got, _ = await _pages(stub, _request(T0, 30))
                assert got == _rows(first if batch is first else first + second)
                if batch is second:  # from within either process's trades
                    for i in (50, 99, 100, 150):
                        got, _ = await _pages(stub, _request(_time(i), 13))
                        assert got == _rows(first + second)[i // 2 * 2 :], i
                tokens = []
                request = _request(T0, 30)
                while True:
                    response = await stub.GetTrades(request)
                    if not response.next_page_token:
                        break
                    tokens.append(PageToken.decode(response.next_page_token).next_start)
                    request.page_token = response.next_page_token
    # Tokens of the first process's trades are negative now, of the current one's its numbers.
    assert tokens == [tokens[0], tokens[1], tokens[2], 21, 51, 81]
    assert all(t < 0 for t in tokens[:3]) and tokens[:3] == sorted(tokens[:3])


async def test_retention_drops_whole_days_and_reads_say_so(history: HistoryStore) -> None:
    hot = MemoryStore(trade_retention=5)
    trades = [
        Trade("BTCUSDT", T0 + i * DAY // 4, Decimal(100 + i), Decimal(1), Source.LIVE, Side.BUY)
        for i in range(16)  # four a day for four days
    ]  # fmt: skip
    updates = await hot.write_trades(trades)
    await history.write_trades(
        [TradeRow(u.series.symbol, hot.epoch, u.seq, u.mark, u.frame) for u in updates]
    )
    assert await history.trade_count() == 16
    tiered = TieredStore(hot, history)
    found = await tiered.page_trades(
        "BTCUSDT", start=T0, end=None, after=None, upto=None, limit=100
    )
    assert list(found.seqs) == list(range(1, 17)) and found.complete
    assert await history.apply_retention(now=T0 + 4 * DAY) == []  # kept forever by default
    history.trade_retention = 2 * DAY
    dropped = await history.apply_retention(now=T0 + 4 * DAY)
    assert dropped == ["trades_p20260101", "trades_p20260102"]
    assert await history.trade_count() == 8
    found = await tiered.page_trades(
        "BTCUSDT", start=T0, end=None, after=None, upto=None, limit=100
    )
    assert list(found.seqs) == list(range(9, 17)) and not found.complete  # cut by retention
    found = await tiered.page_trades(
        "BTCUSDT", start=T0 + 2 * DAY, end=None, after=None, upto=None, limit=100
    )
    assert list(found.seqs) == list(range(9, 17)) and found.complete
    # A trade older than the retention is not written back (nor its day re-created).
    await history.write_trades([TradeRow("BTCUSDT", hot.epoch, 1, T0, updates[0].frame)])
    assert await history.trade_count() == 8
    assert await history.apply_retention(now=T0 + 4 * DAY) == []


async def test_postgres_away_fails_only_the_trades_that_need_it() -> None:
    feed = ScriptedFeed()
    everything = _rows(_trades(0, COUNT + 60))
    with postgres() as own:
        async with (
            running(feed, postgres_url=own.url, **SETTINGS) as app,
            stub_for(app) as stub,
        ):
            await _send(feed, _trades(0, COUNT))
            assert app.history is not None and app.history.queue is not None
            await app.history.queue.drained()
            own.stop()
            recent, _ = await _pages(stub, _request(_time(COUNT - 20), 7))
            assert recent == everything[COUNT - 20 : COUNT]
            latest = await stub.GetTrades(_request(None, 30))
            assert _got(list(latest.trades)) == everything[COUNT - 30 : COUNT]
            profile = pb.GetVolumeProfileRequest(
                symbol="BTCUSDT", start_time=timestamp(_time(COUNT - 20)), price_step="1"
            )
            assert (await stub.GetVolumeProfile(profile)).trade_count == 20
            for call in (
                stub.GetTrades(_request(T0, 100)),
                stub.GetTrades(_request(None, 100)),
                stub.GetVolumeProfile(
                    pb.GetVolumeProfileRequest(
                        symbol="BTCUSDT", start_time=timestamp(T0), price_step="1"
                    )
                ),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await call
                assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
            await _send(feed, _trades(COUNT, 60))  # written while PostgreSQL is away: queued
            assert app.history.queue.trades_pending == 60
            own.start()
            await until_writable(app.history.store)
            await app.history.queue.drained()
            got, _ = await _pages(stub, _request(T0, 250))
            assert got == everything
            assert app.history.queue.trades_dropped == 0
            assert await app.history.store.trade_count("BTCUSDT") == COUNT + 60
