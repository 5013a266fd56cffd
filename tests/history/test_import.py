"""``candlewire import``: data.binance.vision kline and trade files, written
here in Binance's exact layout, loaded into PostgreSQL."""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from candlewire.codec import candle_frame, frame_to_candle
from candlewire.domain import NANOS_PER_MILLI, Candle, Interval, SeriesKey, Source
from candlewire.feeds.replay import _kline
from candlewire.history import HistoryStore
from candlewire.history.load import ImportFailed, Progress, import_files, roll_up
from candlewire.intervals import bucket_end, bucket_start
from tests.binance.test_replay import DAY, DAY_2024, DAY_2025, kline_rows, write

MIN = 60 * 10**9


def _reference(symbol: str, rows: list[list[Any]]) -> list[bytes]:
    return [
        candle_frame(replace(_kline(symbol, Interval.M1, [str(v) for v in r]),
                             source=Source.BACKFILL))
        for r in rows
    ]  # fmt: skip


async def _frames(history: HistoryStore, key: SeriesKey) -> list[bytes]:
    found = await history.get_candles(key, start=0, end=None, limit=10**7)
    return list(found.frames)


async def test_kline_files_zipped_or_not_ms_or_us(tmp_path: Path, history: HistoryStore) -> None:
    monthly = kline_rows(DAY_2024, 31 * 1440, 1)
    daily = kline_rows(DAY_2025, 1440, 1000, seed=2)  # microseconds, spot files from 2025 on
    write(tmp_path / "BTCUSDT-1m-2024-01.zip", monthly)
    write(tmp_path / "BTCUSDT-1m-2025-01-01.csv", daily)
    eth = kline_rows(DAY_2024, 1440, 1, seed=3)
    write(tmp_path / "ETHUSDT-1m-2024-01-01.zip", eth,
          header=["open_time", "open", "high", "low", "close", "volume", "close_time",
                  "quote_volume", "count", "taker_buy_volume", "taker_buy_quote_volume",
                  "ignore"])  # fmt: skip
    progress = Progress("import")
    report = await import_files(history, [tmp_path], progress=progress)
    assert report.files == 3 and report.candles == 31 * 1440 + 2 * 1440
    assert progress.done == report.candles
    btc = await _frames(history, SeriesKey("BTCUSDT", Interval.M1))
    assert btc == _reference("BTCUSDT", monthly) + _reference("BTCUSDT", daily)
    assert await _frames(history, SeriesKey("ETHUSDT", Interval.M1)) == _reference("ETHUSDT", eth)
    # Importing again changes nothing (same revision: the stored rows stay).
    await import_files(history, [tmp_path / "BTCUSDT-1m-2024-01.zip"])
    assert await history.count() == report.candles


def _trades(day_ms: int, seed: int) -> list[list[Any]]:
    rng = random.Random(seed)
    rows: list[list[Any]] = []
    price = Decimal("100.00")
    t = day_ms + rng.randrange(0, 5000)
    ident = 1
    while t < day_ms + DAY:
        if not day_ms + 3 * 3600_000 <= t < day_ms + 3 * 3600_000 + 600_000:  # a quiet spell
            price += Decimal(rng.randint(-9, 9)) / 100
            qty = Decimal(rng.randint(1, 999)) / 1000
            rows.append([ident, f"{price:.8f}", f"{qty:.8f}", f"{price * qty:.8f}", t,
                         rng.choice(["True", "False"]), "True"])  # fmt: skip
            ident += 1
        t += rng.randint(200, 20_000)
    return rows


def _brute(symbol: str, interval: Interval, rows: list[list[Any]], day_ms: int) -> list[bytes]:
    """Candles straight from the trades: every bucket from the first trade's to
    the day's end, an empty one at the previous close where nothing traded."""
    by_bucket: dict[int, list[list[Any]]] = {}
    for r in rows:
        by_bucket.setdefault(bucket_start(interval, int(r[4]) * NANOS_PER_MILLI), []).append(r)
    out = []
    t = bucket_start(interval, int(rows[0][4]) * NANOS_PER_MILLI)
    close = Decimal(0)
    while t < (day_ms + DAY) * NANOS_PER_MILLI:
        part = by_bucket.get(t, [])
        prices = [Decimal(r[1]) for r in part]
        if prices:
            close = prices[-1]
        candle = Candle(
            symbol, interval, t, bucket_end(interval, t),
            prices[0] if prices else close, max(prices, default=close),
            min(prices, default=close), close,
            sum((Decimal(r[2]) for r in part), Decimal(0)),
            sum((Decimal(r[1]) * Decimal(r[2]) for r in part), Decimal(0)),
            len(part), True, 0, Source.BACKFILL,
            # isBuyerMaker False: the aggressor bought
            sum((Decimal(r[2]) for r in part if r[5] == "False"), Decimal(0)),
            sum((Decimal(r[1]) * Decimal(r[2]) for r in part if r[5] == "False"), Decimal(0)),
        )  # fmt: skip
        out.append(candle_frame(candle))
        t = bucket_end(interval, t)
    return out


async def test_trade_files_are_aggregated(tmp_path: Path, history: HistoryStore) -> None:
    rows = _trades(DAY_2024, 5)
    write(tmp_path / "BTCUSDT-trades-2024-01-01.zip", rows)
    intervals = (Interval.M1, Interval.M15, Interval.H1, Interval.D1, Interval.W1)
    report = await import_files(history, [tmp_path], intervals=intervals)
    for interval in intervals[:4]:
        got = await _frames(history, SeriesKey("BTCUSDT", interval))
        assert got == _brute("BTCUSDT", interval, rows, DAY_2024), interval
    # A week does not fit in a day's file: nothing partial is stored as closed.
    assert await _frames(history, SeriesKey("BTCUSDT", Interval.W1)) == []
    assert report.candles == await history.count()


async def test_malformed_file_names_file_and_line_and_imports_nothing(
    tmp_path: Path, history: HistoryStore
) -> None:
    good = kline_rows(DAY_2024, 1440, 1)
    write(tmp_path / "BTCUSDT-1m-2024-01-01.csv", good)
    bad = kline_rows(DAY_2024 + DAY, 1440, 1)
    bad[56][3] = "12.5x"
    path = write(tmp_path / "BTCUSDT-1m-2024-01-02.zip", bad)
    with pytest.raises(ImportFailed) as raised:
        await import_files(history, [tmp_path])
    assert str(path) in str(raised.value) and "line 57" in str(raised.value)
    assert await history.count() == 1440  # the good file only
    short = kline_rows(DAY_2024 + 2 * DAY, 100, 1)
    short[10] = short[10][:5]
    path = write(tmp_path / "ETHUSDT-1m-2024-01-03.csv", short)
    with pytest.raises(ImportFailed, match=r"line 11: missing columns"):
        await import_files(history, [path])
    trades = _trades(DAY_2024, 1)
    trades[99][4] = "yesterday"
    path = write(tmp_path / "ETHUSDT-trades-2024-01-01.csv", trades)
    with pytest.raises(ImportFailed, match=r"ETHUSDT-trades-2024-01-01.csv line 100"):
        await import_files(history, [path], intervals=(Interval.M1,))
    assert await history.count(SeriesKey("ETHUSDT", Interval.M1)) == 0
    odd = tmp_path / "prices.csv"
    odd.write_text("1,2,3\n")
    with pytest.raises(ImportFailed, match=r"prices.csv: .*not named like"):
        await import_files(history, [odd])


def test_roll_up_needs_every_finer_candle() -> None:
    base = DAY_2024 * NANOS_PER_MILLI
    fine = [
        Candle("X", Interval.M1, base + i * MIN, base + (i + 1) * MIN, Decimal(10 + i),
               Decimal(20 + i), Decimal(5), Decimal(11 + i), Decimal("0.1"), Decimal("1.5"), 2,
               True, 0, Source.BACKFILL)
        for i in range(120) if i != 70
    ]  # fmt: skip
    (hour,) = roll_up(fine, Interval.H1)  # the second hour misses a minute
    assert (hour.open, hour.high, hour.low, hour.close) == (10, 79, 5, 70)
    assert (hour.volume, hour.quote_volume, hour.trade_count) == (Decimal("6.0"), 90, 120)


async def test_unordered_and_empty_klines(tmp_path: Path, history: HistoryStore) -> None:
    rows = kline_rows(DAY_2024, 300, 1, seed=9)
    for row in rows[::7]:  # candles without trades: zero volume at the previous close
        row[1] = row[2] = row[3] = row[4]
        row[5] = row[7] = row[9] = row[10] = "0.00000000"
        row[8] = 0
    shuffled = list(rows)
    random.Random(4).shuffle(shuffled)
    write(tmp_path / "BTCUSDT-1m-2024-01-01.csv", shuffled)
    report = await import_files(history, [tmp_path])
    assert report.candles == 300
    assert await _frames(history, SeriesKey("BTCUSDT", Interval.M1)) == _reference("BTCUSDT", rows)


async def test_kline_files_carry_taker_buy_volumes(tmp_path: Path, history: HistoryStore) -> None:
    """Columns 9 and 10 become buy_volume and buy_quote_volume, exactly; a file
    without them imports as before, with the buy volumes unset."""
    full = kline_rows(DAY_2024, 1440, 1, seed=7)
    short = [r[:9] for r in kline_rows(DAY_2024, 1440, 1, seed=8)]
    write(tmp_path / "BTCUSDT-1m-2024-01-01.csv", full)
    write(tmp_path / "ETHUSDT-1m-2024-01-01.zip", short)
    await import_files(history, [tmp_path])
    btc = await _frames(history, SeriesKey("BTCUSDT", Interval.M1))
    eth = await _frames(history, SeriesKey("ETHUSDT", Interval.M1))
    assert btc == _reference("BTCUSDT", full)
    assert eth == _reference("ETHUSDT", short)
    got = [frame_to_candle(f) for f in btc]
    assert [(c.buy_volume, c.buy_quote_volume) for c in got] == [
        (float(Decimal(r[9])), float(Decimal(r[10]))) for r in full
    ]
    assert all(c.buy_volume > 0 and c.buy_quote_volume > 0 for c in got)
    assert [(c.buy_volume, c.buy_quote_volume) for c in map(frame_to_candle, eth)] == [
        (0.0, 0.0)
    ] * len(short)
