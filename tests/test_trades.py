"""GetTrades and SubscribeTrades against a real server (memory store)."""

from __future__ import annotations

import random

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from candlewire.app import App
from candlewire.domain import Side
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1.marketdata_pb2_grpc import MarketDataServiceStub
from tests.scripted import ScriptedFeed, running, stub_for
from tests.trading import push, read_trades, tape, tkey

SYMBOLS = ("BTCUSDT", "ETHUSDT")


def ts(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // 10**9, nanos=ns % 10**9)


async def test_get_trades_latest_range_and_pages(
    feed: ScriptedFeed, stub: MarketDataServiceStub
) -> None:
    trades = tape(random.Random(1), ["BTCUSDT"], 40)
    await push(feed, trades)
    ids = [t.trade_id for t in trades]
    latest = await stub.GetTrades(pb.GetTradesRequest(symbol="btcusdt", page_size=5))
    assert [t.trade_id for t in latest.trades] == ids[-5:] and not latest.next_page_token
    first = latest.trades[-1]
    assert first.side == trades[-1].side and first.price == float(trades[-1].price)
    assert first.receive_time.ToNanoseconds() > 0
    start = trades[10].time
    request = pb.GetTradesRequest(symbol="BTCUSDT", start_time=ts(start), page_size=7)
    pages: list[str] = []
    while True:
        response = await stub.GetTrades(request)
        pages += [t.trade_id for t in response.trades]
        if not response.next_page_token:
            break
        request.page_token = response.next_page_token
    assert pages == [t.trade_id for t in trades if t.time >= start]
    other = pb.GetTradesRequest(
        symbol="BTCUSDT", start_time=ts(start + 1), page_token=response.next_page_token or "x"
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.GetTrades(other)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_bad_requests_name_the_field(stub: MarketDataServiceStub) -> None:
    cases = [
        (pb.SubscribeTradesRequest(), "symbols"),
        (pb.SubscribeTradesRequest(symbols=["BTCUSDT", "btcusdt"]), "symbols[1]"),
        (pb.SubscribeTradesRequest(symbols=["BTCUSDT"], history=5000), "history"),
        (pb.SubscribeTradesRequest(symbols=["BTCUSDT"], resume_token="nope"), "resume_token"),
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await read_trades(stub.SubscribeTrades(request), 1)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in (error.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await read_trades(stub.SubscribeTrades(pb.SubscribeTradesRequest(symbols=["NOPE"])), 1)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


async def test_history_then_snapshot_end_then_live(
    feed: ScriptedFeed, stub: MarketDataServiceStub
) -> None:
    rng = random.Random(2)
    before = tape(rng, SYMBOLS, 12)
    await push(feed, before)
    call = stub.SubscribeTrades(pb.SubscribeTradesRequest(symbols=list(SYMBOLS), history=3))
    by_symbol = {s: [t.trade_id for t in before if t.symbol == s][-3:] for s in SYMBOLS}
    history = await read_trades(call, 7)
    assert [r.trade.trade_id for r in history[:6]] == by_symbol["BTCUSDT"] + by_symbol["ETHUSDT"]
    assert history[6].WhichOneof("event") == "snapshot_end"
    live = tape(rng, SYMBOLS, 5, start=100)
    await push(feed, live)
    got = await read_trades(call, 5)
    assert [r.trade.trade_id for r in got] == [t.trade_id for t in live]
    assert all(r.resume_token for r in history + got)
    call.cancel()


async def resumed_runs(
    feed: ScriptedFeed, stubs: list[MarketDataServiceStub], seed: int, runs: int = 6
) -> None:
    """Streams cut at random points (in history and live) and resumed, each
    piece on the next stub, equal an uninterrupted stream."""
    rng = random.Random(seed)
    await push(feed, tape(rng, SYMBOLS, 30))
    request = pb.SubscribeTradesRequest(symbols=list(SYMBOLS), history=8)
    reference = stubs[0].SubscribeTrades(request)
    history = 17  # 8 trades of each symbol, snapshot_end
    want = [tkey(r) for r in await read_trades(reference, history)]
    live = 25
    pieces: list[tuple[list[int], list[tuple[object, ...]], str]] = []
    for _ in range(runs):
        first = rng.randint(1, history)
        cuts = sorted({first, *rng.sample(range(first + 1, history + live), rng.randint(0, 3))})
        call = stubs[0].SubscribeTrades(request)
        got = await read_trades(call, first)
        call.cancel()
        pieces.append((cuts[1:], [tkey(r) for r in got], got[-1].resume_token))
    await push(feed, tape(rng, SYMBOLS, live, start=1000))
    want += [tkey(r) for r in await read_trades(reference, live)]
    reference.cancel()
    for cuts, seen, token in pieces:
        for n, cut in enumerate([*cuts, history + live]):
            stub = stubs[(n + 1) % len(stubs)]
            call = stub.SubscribeTrades(
                pb.SubscribeTradesRequest(symbols=list(SYMBOLS), history=8, resume_token=token)
            )
            got = await read_trades(call, cut - len(seen))
            call.cancel()
            seen += [tkey(r) for r in got]
            token = got[-1].resume_token
        # The order across symbols is the store's (sequence numbers are per
        # symbol); per symbol, and for the history, it is exact.
        assert seen[:history] == want[:history]
        assert per_symbol(seen) == per_symbol(want) and len(seen) == len(want)


def per_symbol(keys: list[tuple[object, ...]]) -> dict[object, list[tuple[object, ...]]]:
    out: dict[object, list[tuple[object, ...]]] = {}
    for k in keys:
        out.setdefault(k[1] if k[0] == "trade" else k[0], []).append(k)
    return out


@pytest.mark.parametrize("seed", range(4))
async def test_resume_at_random_points_equals_an_uninterrupted_stream(seed: int) -> None:
    feed = ScriptedFeed(SYMBOLS)
    async with running(feed, heartbeat_interval=30) as app, stub_for(app) as stub:
        await resumed_runs(feed, [stub], seed)


async def test_a_resume_token_beyond_the_retained_trades_is_out_of_range() -> None:
    feed = ScriptedFeed(SYMBOLS)
    async with (
        running(feed, heartbeat_interval=30, trade_retention=10) as app,
        stub_for(app) as stub,
    ):
        rng = random.Random(3)
        await push(feed, tape(rng, ["BTCUSDT"], 3))
        request = pb.SubscribeTradesRequest(symbols=["BTCUSDT"], history=2)
        call = stub.SubscribeTrades(request)
        first, _ = await read_trades(call, 2)
        call.cancel()
        await push(feed, tape(rng, ["BTCUSDT"], 30, start=50))
        request.resume_token = first.resume_token
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await read_trades(stub.SubscribeTrades(request), 1)
        assert error.value.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_a_slow_trade_stream_is_ended_and_resumes_without_loss() -> None:
    """Trades are never conflated: a stream that stops reading is ended with
    RESOURCE_EXHAUSTED once its queue is full, a fast one goes on, and
    resuming with the slow one's last token yields what the fast one saw."""
    feed = ScriptedFeed(SYMBOLS)
    queue_size = 8
    async with (
        running(feed, subscriber_queue_size=queue_size, heartbeat_interval=30) as app,
        stub_for(app) as stub,
        grpc.aio.insecure_channel(
            f"127.0.0.1:{app.port}", options=[("grpc.http2.bdp_probe", 0)]
        ) as slow_channel,
    ):
        request = pb.SubscribeTradesRequest(symbols=["BTCUSDT"])
        fast = stub.SubscribeTrades(request)
        slow = MarketDataServiceStub(slow_channel).SubscribeTrades(request)
        await read_trades(fast, 1)
        await read_trades(slow, 1)  # snapshot_end; then the slow one stops reading
        rng = random.Random(4)
        fast_seen = []
        pushes = 0
        while app.trade_hub.overflowed == 0:
            pushes += 1
            assert pushes < 50_000, "the slow stream was never ended"
            await push(feed, tape(rng, ["BTCUSDT"], 1, start=4 * pushes))
            fast_seen += [tkey(r) for r in await read_trades(fast, 1)]
            assert app.trade_hub.max_queued <= queue_size
        assert len(app.trade_hub) == 1  # the slow one was dropped; the fast one remains
        for i in range(5):
            await push(feed, tape(rng, ["BTCUSDT"], 1, start=4 * (pushes + 1 + i)))
            fast_seen += [tkey(r) for r in await read_trades(fast, 1)]
        slow_seen = []
        token = ""
        with pytest.raises(grpc.aio.AioRpcError) as error:
            while True:
                (r,) = await read_trades(slow, 1)
                slow_seen.append(tkey(r))
                token = r.resume_token
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert 0 < len(slow_seen) < len(fast_seen)
        request.resume_token = token
        resumed = stub.SubscribeTrades(request)
        slow_seen += [tkey(r) for r in await read_trades(resumed, len(fast_seen) - len(slow_seen))]
        assert slow_seen == fast_seen
        fast.cancel()
        resumed.cancel()


async def test_trades_carry_the_aggressor_side(app: App, feed: ScriptedFeed) -> None:
    trades = tape(random.Random(5), ["BTCUSDT"], 30)
    await push(feed, trades)
    async with stub_for(app) as stub:
        got = await stub.GetTrades(pb.GetTradesRequest(symbol="BTCUSDT", page_size=100))
    sides = {Side.BUY: pb.AGGRESSOR_SIDE_BUY, Side.SELL: pb.AGGRESSOR_SIDE_SELL}
    assert [t.side for t in got.trades] == [
        sides.get(t.side, pb.AGGRESSOR_SIDE_UNSPECIFIED) for t in trades
    ]
