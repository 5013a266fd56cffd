"""History tier benchmarks: import rate, GetCandles from a year-old window, bytes per candle.

    python bench/history.py [--quick] [--json]

A PostgreSQL server of its own (durable settings: fsync and synchronous
commit on) in a temp dir. Monthly data.binance.vision 1m kline files of a
year for 3 symbols are generated, then imported with ``candlewire import``'s
code (:func:`candlewire.history.load.import_files`): candles/s. The table is
then measured (table and indexes per stored candle). Finally
``bench/history_serve.py`` serves MarketDataService over the memory store
(the newest 5,000 candles) and that history, pinned to one core, and h2load
(on the other core) asks for 1,000 1m candles of a window a year old
(PostgreSQL) and for the latest 1,000 (the hot store), alternating, best of
the rounds; a single blocking client then measures p50/p99 of each.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import struct
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import PYTHON, cores, percentile, pinned, spawn
from unary import H2Result, h2load

from candlewire.api.server import SERVICE_NAME
from candlewire.codec import timestamp
from candlewire.history import HistoryStore
from candlewire.history.load import import_files
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.history.pg import postgres

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
YEAR = 2025


def _month_rows(year: int, month: int, rng: random.Random, price: float) -> tuple[str, float]:
    start = dt.datetime(year, month, 1, tzinfo=dt.UTC)
    end = (start + dt.timedelta(days=32)).replace(day=1)
    t = int(start.timestamp()) * 1000
    stop = int(end.timestamp()) * 1000
    lines = []
    while t < stop:
        o = price
        c = max(1.0, o + rng.randint(-500, 500) / 100)
        h = max(o, c) + rng.randint(0, 300) / 100
        lo = min(o, c) - rng.randint(0, 300) / 100
        v = rng.randint(1, 10**6) / 10**5
        lines.append(
            f"{t},{o:.8f},{h:.8f},{lo:.8f},{c:.8f},{v:.8f},{t + 59_999},{v * c:.8f},"
            f"{rng.randint(1, 900)},{v / 2:.8f},{v * c / 2:.8f},0\n"
        )
        price = c
        t += 60_000
    return "".join(lines), price


def generate(directory: Path, months: int) -> int:
    rng = random.Random(1)
    count = 0
    for symbol in SYMBOLS:
        price = 40_000.0
        for month in range(1, months + 1):
            text, price = _month_rows(YEAR, month, rng, price)
            name = f"{symbol}-1m-{YEAR}-{month:02d}"
            with zipfile.ZipFile(directory / f"{name}.zip", "w", zipfile.ZIP_DEFLATED) as z:
                z.writestr(f"{name}.csv", text)
            count += text.count("\n")
    return count


async def _import(url: str, directory: Path) -> dict[str, Any]:
    history = HistoryStore(url)
    await history.connect()
    try:
        report = await import_files(history, [directory])
        stored = await history.count()
        size = await history.size_bytes()
    finally:
        await history.close()
    return {
        "candles": report.candles,
        "seconds": report.seconds,
        "rate": report.rate,
        "stored": stored,
        "bytes": size,
        "bytes_per_candle": size / stored,
    }


def _request(start: int | None) -> pb.GetCandlesRequest:
    request = pb.GetCandlesRequest(symbol="BTCUSDT", interval=pb.INTERVAL_1M, page_size=1000)
    if start is not None:
        request.start_time.CopyFrom(timestamp(start))
    return request


def _latencies(port: int, request: pb.GetCandlesRequest, count: int) -> tuple[float, float]:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        rpc = channel.unary_unary(f"/{SERVICE_NAME}/GetCandles")
        body = request.SerializeToString()
        for _ in range(20):
            rpc(body, timeout=10)
        times = []
        for _ in range(count):
            started = time.perf_counter()
            raw = rpc(body, timeout=10)
            times.append((time.perf_counter() - started) * 1000)
        assert len(pb.GetCandlesResponse.FromString(raw).candles) == 1000
    times.sort()
    return percentile(times, 0.5), percentile(times, 0.99)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="3 months, short h2load runs")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    months = 3 if args.quick else 12
    seconds, rounds = (3.0, 1) if args.quick else (8.0, 3)
    usable = cores()
    server_core, load_core = (usable[0], usable[1]) if len(usable) > 1 else (None, None)
    result: dict[str, Any] = {"months": months, "symbols": len(SYMBOLS)}
    with postgres(durable=True) as pg, tempfile.TemporaryDirectory() as tmp:
        url = pg.create_database("bench")
        started = time.perf_counter()
        result["generated"] = generate(Path(tmp), months)
        result["generate_seconds"] = time.perf_counter() - started
        result["import"] = asyncio.run(_import(url, Path(tmp)))
        # A window a year (or, quick, months) before the newest candle: history only.
        old = int(dt.datetime(YEAR, 1, 10, tzinfo=dt.UTC).timestamp()) * 10**9
        cases = {"history": _request(old), "hot": _request(None)}
        argv = [PYTHON, "bench/history_serve.py", "--postgres-url", url]
        with spawn(pinned(server_core, argv)) as server:
            port = int(server.expect("PORT "))
            best: dict[str, H2Result] = {}
            with tempfile.TemporaryDirectory() as work:
                for name, request in cases.items():
                    message = request.SerializeToString()
                    body = Path(work) / f"{name}.req"
                    body.write_bytes(struct.pack(">BI", 0, len(message)) + message)
                for _ in range(rounds):
                    for name in cases:
                        body = Path(work) / f"{name}.req"
                        run = h2load(
                            port, "GetCandles", body, seconds=seconds, core=load_core, conns=4,
                            streams=8,
                        )  # fmt: skip
                        if run.failed:
                            raise RuntimeError(f"{name}: {run}")
                        if name not in best or run.rps > best[name].rps:
                            best[name] = run
            result["h2load"] = {k: vars(v) for k, v in best.items()}
            result["ratio"] = best["history"].rps / best["hot"].rps
            result["single_client_ms"] = {
                name: dict(zip(("p50", "p99"), _latencies(port, request, 300), strict=True))
                for name, request in cases.items()
            }
    if args.json:
        print(json.dumps(result))
        return
    imp = result["import"]
    print(f"import: {imp['candles']:,} candles in {imp['seconds']:.1f} s = {imp['rate']:,.0f}/s")
    print(f"stored: {imp['stored']:,} candles, {imp['bytes']:,} B = "
          f"{imp['bytes_per_candle']:.1f} B per candle (table + indexes)")  # fmt: skip
    h = result["h2load"]
    print(f"GetCandles(1000) a year back (PostgreSQL): {h['history']['rps']:,.0f} req/s; "
          f"hot store: {h['hot']['rps']:,.0f} req/s; ratio {result['ratio']:.0%}")  # fmt: skip
    for name, lat in result["single_client_ms"].items():
        print(f"single client {name}: p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms")


if __name__ == "__main__":
    main()
