"""The client's trades: typed reads, to_pandas, trade streams that resume by
themselves (and say when continuity was lost), volume profiles, and the
``trades`` command."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import socket
from decimal import Decimal

import pytest

from candlewire.app import App
from candlewire_client import (
    CandlewireClient,
    Client,
    Side,
    SnapshotEnd,
    TradeEvent,
    TradeList,
    TradesContinuityLost,
    VolumeProfile,
)
from candlewire_client.cli import main
from tests.client.conftest import FAST, Collector, SideServer
from tests.client.test_cli import Screen
from tests.scripted import ScriptedFeed, running
from tests.trading import push, tape

WAIT = 10.0


def ids(events: list[object]) -> list[str]:
    return [e.trade.trade_id for e in events if isinstance(e, TradeEvent)]


async def test_fetch_trades_is_typed_and_exact(app: App, feed: ScriptedFeed, target: str) -> None:
    trades = tape(random.Random(1), ["BTCUSDT"], 50)
    await push(feed, trades)
    async with CandlewireClient(target, decimals=True) as client:
        latest = await client.fetch_trades("BTCUSDT", limit=10)
        assert [t.trade_id for t in latest] == [t.trade_id for t in trades[-10:]]
        ranged = await client.fetch_trades("BTCUSDT", start=_utc(trades[5].time), page_size=7)
    assert isinstance(ranged, TradeList)
    assert [(t.price, t.quantity) for t in ranged] == [(t.price, t.quantity) for t in trades[5:]]
    sides = {0: Side.UNKNOWN, 1: Side.BUY, 2: Side.SELL}
    assert [t.side for t in ranged] == [sides[int(t.side)] for t in trades[5:]]
    frame = ranged.to_pandas()
    assert list(frame.columns) == [c for c in TradeList.COLUMNS if c != "event_time"]
    assert frame["price"].tolist() == [t.price for t in trades[5:]]
    assert str(frame.index.tz) == "UTC"


def _utc(ns: int) -> str:
    from datetime import UTC, datetime, timedelta

    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
    return moment.isoformat()


async def test_a_trade_stream_resumes_by_itself_without_gap_or_repeat(
    app: App, feed: ScriptedFeed
) -> None:
    side = SideServer(app, feed)
    await side.start()
    rng = random.Random(2)
    first = tape(rng, ["BTCUSDT", "ETHUSDT"], 20)
    await push(feed, first)
    async with CandlewireClient(side.target, decimals=True, retry=FAST) as client:
        stream = client.subscribe_trades(["BTCUSDT", "ETHUSDT"], history=5)
        events = Collector(stream)
        await events.wait_until(lambda items: any(isinstance(i, SnapshotEnd) for i in items))
        await side.stop()
        during = tape(rng, ["BTCUSDT", "ETHUSDT"], 15, start=200)
        await push(feed, during)  # while the server is away
        await side.start()
        after = tape(rng, ["BTCUSDT", "ETHUSDT"], 10, start=400)
        await push(feed, after)
        await events.wait_until(lambda items: after[-1].trade_id in ids(items))
        await events.stop()
        await side.stop()
    history = [t.trade_id for t in first if t.symbol == "BTCUSDT"][-5:] + [
        t.trade_id for t in first if t.symbol == "ETHUSDT"
    ][-5:]
    got = ids(events.items)
    assert got[:10] == history
    assert sorted(got[10:]) == sorted(t.trade_id for t in during + after)
    assert len(set(got)) == len(got)
    assert stream.reconnects >= 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_restarted_server_loses_continuity_and_nothing_is_repeated() -> None:
    target = f"127.0.0.1:{_free_port()}"
    go = asyncio.Event()

    async def on_reconnect(attempt: int, delay: float, error: object) -> None:
        await go.wait()  # reconnect once the new process holds its data

    rng = random.Random(3)
    before = tape(rng, ["BTCUSDT"], 12)
    later = tape(rng, ["BTCUSDT"], 6, start=100)
    async with CandlewireClient(target, decimals=True, retry=FAST) as client:
        async with running(ScriptedFeed(), heartbeat_interval=0.2, grpc_listen=target) as app:
            feed = app.feed
            assert isinstance(feed, ScriptedFeed)
            await push(feed, before)
            stream = client.subscribe_trades("BTCUSDT", history=4, on_reconnect=on_reconnect)
            events = Collector(stream)
            await events.wait_until(lambda items: before[-1].trade_id in ids(items))
        async with running(ScriptedFeed(), heartbeat_interval=0.2, grpc_listen=target) as app:
            feed = app.feed
            assert isinstance(feed, ScriptedFeed)
            await push(feed, [*before, *later])  # the same trades again, then new ones
            go.set()
            await events.wait_until(lambda items: later[-1].trade_id in ids(items))
            await events.stop()
    lost = [e for e in events.items if isinstance(e, TradesContinuityLost)]
    assert len(lost) == 1 and lost[0].symbols == ("BTCUSDT",)
    assert ids(events.items) == [t.trade_id for t in before[-4:] + later]


async def test_volume_profile_of_the_client(app: App, feed: ScriptedFeed, target: str) -> None:
    trades = tape(random.Random(4), ["BTCUSDT"], 80)
    await push(feed, trades)

    def blocking() -> VolumeProfile[Decimal]:  # the blocking client, off the server's loop
        with Client(target, decimals=True) as client:
            return client.get_volume_profile(
                "BTCUSDT", _utc(trades[0].time), price_step="0.5", interval="1m"
            )

    profile = await asyncio.to_thread(blocking)
    assert profile.trade_count == 80 and not profile.truncated
    assert sum(level.volume for level in profile.levels) == sum(t.quantity for t in trades)
    buy = sum(t.quantity for t in trades if int(t.side) == 1)
    sell = sum(t.quantity for t in trades if int(t.side) == 2)
    assert sum(level.delta for level in profile.levels) == buy - sell
    assert [level.price for level in profile.levels] == sorted(
        {
            (t.price / Decimal("0.5")).to_integral_value(rounding="ROUND_FLOOR") * Decimal("0.5")
            for t in trades
        }
    )
    assert sum(level.trade_count for c in profile.footprint for level in c.levels) == 80
    assert profile.to_pandas().index.tolist() == [level.price for level in profile.levels]


async def test_trades_command_prints_exactly_what_get_trades_returns(
    app: App, feed: ScriptedFeed, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    trades = tape(random.Random(5), ["BTCUSDT"], 30)
    await push(feed, trades)
    status = await asyncio.to_thread(
        main, ["trades", "BTCUSDT", "--target", target, "--format", "csv", "--limit", "12"]
    )
    out = capsys.readouterr().out
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["trade_id"] for r in rows] == [t.trade_id for t in trades[-12:]]
    assert [Decimal(r["price"]) for r in rows] == [t.price for t in trades[-12:]]
    status = await asyncio.to_thread(
        main, ["trades", "BTCUSDT", "--target", target, "--format", "json"]
    )
    records = json.loads(capsys.readouterr().out)
    assert status == 0 and len(records) == 30
    assert records[0]["side"] == {0: "unknown", 1: "buy", 2: "sell"}[int(trades[0].side)]


async def test_trades_follow_prints_live_trades(app: App, feed: ScriptedFeed, target: str) -> None:
    rng = random.Random(6)
    before = tape(rng, ["BTCUSDT"], 4)
    await push(feed, before)
    screen = Screen(asyncio.get_running_loop())
    argv = ["trades", "BTCUSDT", "--follow", "--limit", "2", "--target", target]
    argv += ["--count", "7", "--format", "json"]
    follow = asyncio.create_task(asyncio.to_thread(main, argv, stdout=screen))
    await screen.wait_for(lambda text: before[-1].trade_id in text)  # history shown: live next
    live = tape(rng, ["BTCUSDT"], 5, start=50)
    await push(feed, live)
    assert await asyncio.wait_for(follow, WAIT) == 0
    lines = [json.loads(line) for line in screen.getvalue().splitlines()]
    assert [r["trade_id"] for r in lines] == [t.trade_id for t in before[-2:] + live]
