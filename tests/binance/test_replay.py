"""ReplayFeed: data.binance.vision files, written here in Binance's dump layout,
replayed through the service into exactly their candles."""

from __future__ import annotations

import asyncio
import csv
import io
import random
import time
import zipfile
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from candlewire.domain import NANOS_PER_MILLI, Interval
from candlewire.errors import ConfigError
from candlewire.feeds.replay import ReplayFeed
from candlewire.intervals import bucket_end, bucket_start
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.binance.exchange import StreamKey, collecting, serving
from tests.scripted import running, stub_for

DAY_2024 = 1_704_067_200_000  # 2024-01-01T00:00:00Z, ms
DAY_2025 = 1_735_689_600_000  # 2025-01-01T00:00:00Z, ms
DAY = 86_400_000
TRADE_INTERVALS = (Interval.M1, Interval.M15, Interval.H1, Interval.D1)


@dataclass(frozen=True)
class Tick:
    time: int  # ns
    price: Decimal
    qty: Decimal


def write(path: Path, rows: list[list[Any]], *, header: list[str] | None = None) -> Path:
    """A dump file: CSV without a header (unless given), zipped when the name says so."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    if header:
        writer.writerow(header)
    writer.writerows(rows)
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(path.with_suffix(".csv").name, text.getvalue())
    else:
        path.write_text(text.getvalue())
    return path


def kline_rows(start_ms: int, count: int, unit: int, seed: int = 1) -> list[list[Any]]:
    """1m klines from ``start_ms``; times in the file's unit (1 = ms, 1000 = µs)."""
    rng = random.Random(seed)
    rows = []
    price = Decimal("42000.00")
    for n in range(count):
        t = start_ms + n * 60_000
        o = price
        c = o + Decimal(rng.randint(-500, 500)) / 100
        h = max(o, c) + Decimal(rng.randint(0, 300)) / 100
        l = min(o, c) - Decimal(rng.randint(0, 300)) / 100  # noqa: E741
        v = Decimal(rng.randint(1, 10**6)) / 10**5
        rows.append(
            [t * unit, f"{o:.8f}", f"{h:.8f}", f"{l:.8f}", f"{c:.8f}", f"{v:.8f}",
             (t + 59_999) * unit + (unit - 1), f"{v * c:.8f}", rng.randint(1, 900),
             f"{v / 2:.8f}", f"{v * c / 2:.8f}", "0"]
        )  # fmt: skip
        price = c
    return rows


def kline_truth(rows: list[list[Any]], unit: int) -> list[tuple[Any, ...]]:
    ns = NANOS_PER_MILLI // unit
    return [
        (
            int(r[0]) * ns,
            float(r[1]),
            float(r[2]),
            float(r[3]),
            float(r[4]),
            float(r[5]),
            r[8],
            True,
        )
        for r in rows
    ]


def trade_rows(
    start_ms: int, count: int, unit: int, *, spacing: int = 7_000, seed: int = 2
) -> tuple[list[list[Any]], list[Tick]]:
    """Trades every ``spacing`` ms or so, with a quiet stretch; (rows, ticks)."""
    rng = random.Random(seed)
    rows: list[list[Any]] = []
    ticks: list[Tick] = []
    t = start_ms
    price = Decimal("3000.00")
    for n in range(count):
        t += rng.randint(spacing // 2, spacing * 3 // 2) + (240_000 if n == count // 2 else 0)
        price += Decimal(rng.randint(-300, 300)) / 100
        qty = Decimal(rng.randint(1, 50_000)) / 10_000
        rows.append(
            [10_000 + n, f"{price:.8f}", f"{qty:.8f}", f"{price * qty:.8f}", t * unit,
             rng.choice(["True", "False"]), "True"]
        )  # fmt: skip
        ticks.append(Tick(t * NANOS_PER_MILLI, price, qty))
    return rows, ticks


def trade_truth(ticks: list[Tick], interval: Interval, end: int) -> list[tuple[Any, ...]]:
    """Candles from the first trade's bucket to the one holding ``end`` (ns), which
    is where the replay leaves the clock: empty buckets at the previous close."""
    out = []
    start = bucket_start(interval, ticks[0].time)
    last = bucket_start(interval, end)
    close = ticks[0].price
    while start <= last:
        stop = bucket_end(interval, start)
        part = [t for t in ticks if start <= t.time < stop]
        if part:
            prices = [t.price for t in part]
            o, h, l, close = prices[0], max(prices), min(prices), prices[-1]  # noqa: E741
            volume = sum((t.qty for t in part), Decimal(0))
        else:
            o = h = l = close  # noqa: E741
            volume = Decimal(0)
        out.append(
            (
                start,
                float(o),
                float(h),
                float(l),
                float(close),
                float(volume),
                len(part),
                end >= stop,
            )
        )
        start = stop
    return out


async def replayed(
    feed: ReplayFeed, truth: dict[StreamKey, list[tuple[Any, ...]]], **settings: Any
) -> None:
    series = [(s, Interval(i)) for s, i in truth]
    async with running(feed, **settings) as app, collecting(app, series) as collector:
        await collector.until_equal(truth)


@pytest.mark.parametrize(
    ("name", "day", "unit"),
    [
        ("BTCUSDT-1m-2024-01.zip", DAY_2024, 1),
        ("BTCUSDT-1m-2025-01-01.csv", DAY_2025, 1000),  # microseconds from 2025 on
    ],
)
async def test_klines_file_replays_into_its_candles(
    tmp_path: Path, name: str, day: int, unit: int
) -> None:
    rows = kline_rows(day + 3_600_000, 90, unit)
    path = write(tmp_path / name, rows)
    feed = ReplayFeed(path, ["BTCUSDT"], [Interval.M1], speed=0)
    truth = {("BTCUSDT", int(Interval.M1)): kline_truth(rows, unit)}
    await replayed(feed, truth, symbols="BTCUSDT", intervals="1m")


@pytest.mark.parametrize(
    ("name", "day", "unit"),
    [
        ("ETHUSDT-trades-2025-01-01.zip", DAY_2025, 1000),
        ("ETHUSDT-trades-2024-01-01.csv", DAY_2024, 1),
        ("ETHUSDT-aggTrades-2024-01-01.zip", DAY_2024, 1),
    ],
)
async def test_trades_file_replays_into_every_interval(
    tmp_path: Path, name: str, day: int, unit: int
) -> None:
    rows, ticks = trade_rows(day + DAY - 900_000, 60, unit)  # the day's last quarter hour
    if "aggTrades" in name:  # id, price, qty, first trade id, last trade id, time, maker, best
        rows = [[r[0], r[1], r[2], r[0] * 3, r[0] * 3 + 2, r[4], r[5], r[6]] for r in rows]
    path = write(tmp_path / name, rows)
    feed = ReplayFeed(path, ["ETHUSDT"], TRADE_INTERVALS, speed=0)
    end = (day + DAY) * NANOS_PER_MILLI
    truth = {("ETHUSDT", int(i)): trade_truth(ticks, i, end) for i in TRADE_INTERVALS}
    await replayed(feed, truth, symbols="ETHUSDT", intervals="1m,15m,1h,1d")


async def test_directory_from_settings_merges_files_and_skips_a_header(tmp_path: Path) -> None:
    header = "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume"
    header += ",taker_buy_quote_volume,ignore"
    klines = kline_rows(DAY_2024 + DAY - 3_600_000, 60, 1)
    write(tmp_path / "BTCUSDT-1m-2024-01-01.zip", klines, header=header.split(","))
    trades, ticks = trade_rows(DAY_2024 + DAY - 600_000, 40, 1, spacing=9_000)
    write(tmp_path / "ETHUSDT-trades-2024-01-01.zip", trades)
    (tmp_path / "notes.txt").write_text("not a dump file")
    end = (DAY_2024 + DAY) * NANOS_PER_MILLI
    truth = {
        ("BTCUSDT", int(Interval.M1)): kline_truth(klines, 1),
        ("ETHUSDT", int(Interval.M1)): trade_truth(ticks, Interval.M1, end),
        ("ETHUSDT", int(Interval.H1)): trade_truth(ticks, Interval.H1, end),
    }
    async with serving(
        feed="replay",
        replay_path=str(tmp_path),
        replay_speed=0,
        symbols="BTCUSDT,ETHUSDT",
        intervals="1m,1h",
    ) as app:
        assert isinstance(app.feed, ReplayFeed)
        async with collecting(app, [(s, Interval(i)) for s, i in truth]) as collector:
            await collector.until_equal(truth)


async def test_speed_paces_the_replay(tmp_path: Path) -> None:
    start = DAY_2024 + 3_600_000
    rows = [[n, "1.00000000", "1.00000000", "1.00000000", start + 200 * n, "True", "True"]
            for n in range(11)]  # fmt: skip
    path = write(tmp_path / "BTCUSDT-trades-2024-01-01.csv", rows)  # 2 s of trades
    for speed, at_least in ((4.0, 0.45), (0.0, 0.0)):
        feed = ReplayFeed(path, ["BTCUSDT"], [Interval.M1], speed=speed)
        async with running(feed, symbols="BTCUSDT", intervals="1m"):
            began = time.monotonic()
            await asyncio.wait_for(feed.finished.wait(), 10)
            assert time.monotonic() - began >= at_least


@pytest.mark.parametrize(
    ("files", "symbols", "message"),
    [
        (["BTCUSDT-1minute-2024-01.zip"], "BTCUSDT", "not named like"),
        (["BTCUSDT-1m-2024-01.csv"], "BTCUSDT,ETHUSDT", "no file for ETHUSDT"),
        (["BTCUSDT-1m-2024-01.csv", "BTCUSDT-trades-2024-01-01.csv"], "BTCUSDT", "both klines"),
    ],
)
async def test_unusable_replay_paths_stop_the_start(
    tmp_path: Path, files: list[str], symbols: str, message: str
) -> None:
    for name in files:
        write(tmp_path / name, kline_rows(DAY_2024, 2, 1))
    with pytest.raises(ConfigError, match=message):
        async with serving(
            feed="replay", replay_path=str(tmp_path), symbols=symbols, intervals="1m"
        ):
            pass


@pytest.mark.parametrize("columns", [12, 9])
async def test_klines_carry_their_taker_buy_volumes(tmp_path: Path, columns: int) -> None:
    """Columns 9 and 10 (taker buy base and quote volume) become the candles'
    buy volumes, exactly; a file cut before them leaves them unset."""
    rows = [r[:columns] for r in kline_rows(DAY_2024 + 3_600_000, 30, 1, seed=5)]
    path = write(tmp_path / "BTCUSDT-1m-2024-01-01.csv", rows)
    feed = ReplayFeed(path, ["BTCUSDT"], [Interval.M1], speed=0)
    truth = {("BTCUSDT", int(Interval.M1)): kline_truth(rows, 1)}
    async with (
        running(feed, symbols="BTCUSDT", intervals="1m") as app,
        stub_for(app) as stub,
    ):
        async with collecting(app, [("BTCUSDT", Interval.M1)]) as collector:
            await collector.until_equal(truth)
        response = await stub.GetCandles(
            pb.GetCandlesRequest(
                symbol="BTCUSDT",
                interval=pb.INTERVAL_1M,
                start_time=Timestamp(seconds=0),
                page_size=1000,
            )
        )
    got = [(c.buy_volume, c.buy_quote_volume) for c in response.candles]
    if columns == 12:
        assert got == [(float(Decimal(r[9])), float(Decimal(r[10]))) for r in rows]
        assert all(b > 0 for b, _ in got)
    else:
        assert got == [(0.0, 0.0)] * len(rows)
    assert [c.volume for c in response.candles] == [float(r[5]) for r in rows]
