"""Trades: stored and published per second, stream delivery against a ceiling,
volume profile latency.

    python bench/trades.py [--quick] [--json]
    python bench/trades.py --only stream --repeat 5 --rows 10x10000,100x1000

* store: trades through ``Ingestor.record_trades`` (validation, the store's
  trade log, trade hub publish with no subscribers) and through
  ``Ingestor.trades`` (the same plus aggregation into 16 intervals), in
  batches of 1,000 trades and of one trade, on a ``MemoryStore`` and on a
  ``RedisStore`` on a private ``redis-server`` (free port, no persistence);
* stream: ``SubscribeTrades`` streams (live only) of one symbol on a real
  server (``--role real``: the real servicer, trade hub and memory store,
  trades injected at a fixed rate through ``Ingestor.record_trades``) and on
  the ceiling (``--role ceiling``: a no-op ``grpc.aio`` handler that builds
  each tick's trade messages once and hands them to every stream), at the
  same offered load; a client process counts the messages delivered. Server
  and client are pinned to different cores when there are two. ``--repeat``
  runs each row several times, ceiling and real alternating (ABBA); the
  row's ratio is the median, ``ratios`` all of them.

  What the comparison counts: the ceiling does what any lossless fan-out
  must and no more (each tick's messages serialized once, appended to one
  log every stream reads by index: no queue per stream, no bound, one
  token for all). The real server does, on the same core, the ingest
  (validation, the store's trade log and the frame encoding, the trade
  hub's bounded queue per stream) and each message's own resume token.
  Both draw one tick's trades once and send them again every tick with new
  ids (the real server's with later times too, as validation requires);
  their messages are the same size within a few bytes (about 105 B). The
  rows 10x10000 and 100x1000 offer more than the server's core can send:
  there the figure is its capacity, and the real server's queues grow
  (bounded at 100,000 a stream; a run stays below that);
* profile: ``GetVolumeProfile`` over a real gRPC server on a memory store
  holding one day of trades of one symbol (4 trades/s, 345,600 trades): the
  latency of the whole day, without and with the 1-minute footprint.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc
from _common import PYTHON, cores, cpu_seconds, free_port, pinned, spawn

from candlewire.aggregate import AggregatorConfig
from candlewire.api.server import SERVICE_NAME, ApiServer, server_options
from candlewire.api.servicer import Catalog, Limits, MarketDataServicer
from candlewire.domain import (
    NANOS_PER_SECOND,
    Instrument,
    Interval,
    Side,
    Source,
    Trade,
)
from candlewire.errors import StoreUnavailable
from candlewire.flow.ingest import Ingestor
from candlewire.hub import Hub
from candlewire.store.base import Store, TradeUpdate, Update
from candlewire.store.memory import MemoryStore
from candlewire.store.redis import RedisStore
from candlewire.validate import ValidationConfig
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc

T0 = 1_767_225_600 * NANOS_PER_SECOND
SYMBOL = "BTCUSDT"


def tape(count: int, *, per_second: float, start: int = T0, seed: int = 1) -> list[Trade]:
    rng = random.Random(seed)
    price = Decimal("64000.00")
    step = int(NANOS_PER_SECOND / per_second)
    out = []
    for i in range(count):
        price += Decimal(rng.randint(-100, 100)) / 100
        out.append(
            Trade(
                SYMBOL,
                start + i * step,
                price,
                Decimal(rng.randint(1, 50000)) / 10000,
                Source.LIVE,
                Side.BUY if rng.random() < 0.5 else Side.SELL,
                str(i),
            )
        )
    return out


# --- store: trades stored and published per second --------------------------------------


def _ingestor(store: Store) -> Ingestor:
    config = AggregatorConfig(tuple(Interval), lateness=2 * NANOS_PER_SECOND)
    return Ingestor(
        store,
        Hub[Update](),
        [SYMBOL],
        config,
        Source.LIVE,
        trade_hub=Hub[TradeUpdate](conflate=False),
        validation=ValidationConfig(lateness=config.lateness, max_future=1 << 62),
    )


async def _rate(store: Store, trades: Sequence[Trade], batch: int, aggregate: bool) -> float:
    ingestor = _ingestor(store)
    sink = ingestor.trades if aggregate else ingestor.record_trades
    started = time.perf_counter()
    for i in range(0, len(trades), batch):
        await sink(trades[i : i + batch])
    elapsed = time.perf_counter() - started
    assert ingestor.trades_lost == 0 and ingestor.validator.rejections.total() == 0
    return len(trades) / elapsed


async def _store_rates(make: Any, quick: bool) -> dict[str, float]:
    out: dict[str, float] = {}
    big = tape(50_000 if quick else 200_000, per_second=300)
    small = big[: 5_000 if quick else 20_000]
    for aggregate in (False, True):
        name = "full" if aggregate else "record"
        out[f"{name}_batch1000_per_s"] = await _rate(await make(), big, 1000, aggregate)
        out[f"{name}_batch1_per_s"] = await _rate(await make(), small, 1, aggregate)
    return out


def store_section(quick: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}

    async def memory() -> Store:
        return MemoryStore(trade_retention=1_000_000)

    result["memory"] = asyncio.run(_store_rates(memory, quick))
    server = shutil.which("redis-server")
    if server is None:
        result["redis"] = "not measured: redis-server is not on PATH"
        return result
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="cw-redis-") as tmp:
        argv = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", tmp, "--loglevel", "warning"]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            made = 0

            async def redis() -> Store:
                nonlocal made
                made += 1
                store = RedisStore(url, prefix=f"b{made}:", trade_retention=1_000_000)
                deadline = time.monotonic() + 10
                while True:  # until it accepts connections
                    try:
                        await store.connect()
                        return store
                    except StoreUnavailable:
                        if time.monotonic() > deadline or proc.poll() is not None:
                            raise
                        await asyncio.sleep(0.05)

            result["redis"] = asyncio.run(_store_rates(redis, quick))
        finally:
            proc.terminate()
            proc.wait()
    return result


# --- stream: delivered messages/s, real server and ceiling --------------------------------


async def _ticks(rate: float) -> AsyncIterator[int]:
    """Tick numbers on a fixed schedule (late ticks are not skipped, but each
    tick yields to the event loop once, as a feed's network read would)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    while True:
        n += 1
        await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
        yield n


async def _serve(role: str, rate: float, per_tick: int) -> None:
    """A server for the stream benchmark; prints PORT, runs until stdin closes."""
    ticks_per_second = rate / per_tick
    if role == "real":
        store = MemoryStore(trade_retention=1_000_000)
        hub: Hub[Update] = Hub()
        trade_hub: Hub[TradeUpdate] = Hub(queue_size=100_000, conflate=False)
        catalog = Catalog(
            {SYMBOL: Instrument(SYMBOL, "BTC", "USDT", 2, 4, Source.LIVE)}, (Interval.M1,)
        )
        servicer = MarketDataServicer(
            store, hub, catalog, Limits(heartbeat_interval=30), trade_hub=trade_hub
        )
        api = ApiServer(servicer, "127.0.0.1:0")
        await api.start()
        ingestor = Ingestor(
            store,
            hub,
            [SYMBOL],
            AggregatorConfig((Interval.M1,)),
            Source.LIVE,
            trade_hub=trade_hub,
            validation=ValidationConfig(max_future=1 << 62),
        )

        # Like the ceiling: one tick's trades drawn once, sent again every
        # tick with later times and new ids (drawing prices is the load
        # generator's work, not the server's).
        sample = tape(per_tick, per_second=rate)

        async def produce() -> None:
            async for n in _ticks(ticks_per_second):
                shift = n * NANOS_PER_SECOND
                await ingestor.record_trades(
                    [replace(t, time=t.time + shift, trade_id=f"{n}-{t.trade_id}") for t in sample]
                )

        port = api.port
        stop_server: Any = api.stop
    else:
        sample = tape(per_tick, per_second=rate)
        token = "A" * 48
        # Every message ever built, in order; each stream keeps its own index
        # into it (no conflation, no bookkeeping: the cheapest lossless fan-out).
        log: list[bytes] = []
        tick = asyncio.Event()

        async def produce() -> None:
            async for n in _ticks(ticks_per_second):
                log.extend(
                    pb.SubscribeTradesResponse(
                        trade=pb.Trade(
                            symbol=t.symbol,
                            trade_id=f"{n}-{t.trade_id}",
                            price=float(t.price),
                            quantity=float(t.quantity),
                            side=int(t.side),  # type: ignore[arg-type]
                            event_time={"seconds": t.time // NANOS_PER_SECOND},
                            receive_time={"seconds": t.time // NANOS_PER_SECOND},
                            source=pb.SOURCE_LIVE,
                        ),
                        resume_token=token,
                    ).SerializeToString()
                    for t in sample
                )
                tick.set()
                tick.clear()

        async def subscribe(request: bytes, context: Any) -> AsyncIterator[bytes]:
            yield pb.SubscribeTradesResponse(
                snapshot_end=pb.SnapshotEnd(), resume_token=token
            ).SerializeToString()
            index = len(log)
            while True:
                while index < len(log):
                    yield log[index]
                    index += 1
                await tick.wait()

        server = grpc.aio.server(options=server_options())
        handler = grpc.unary_stream_rpc_method_handler(
            subscribe, request_deserializer=lambda b: b, response_serializer=lambda b: b
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, {"SubscribeTrades": handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        stop_server = server.stop
    producing = asyncio.create_task(produce())
    print(f"PORT {port}", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    producing.cancel()
    await stop_server(0.5)


async def _client(port: int, streams: int, seconds: float) -> dict[str, Any]:
    counts = [0] * streams
    errors: list[str] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)

        async def one(i: int) -> None:
            call = stub.SubscribeTrades(pb.SubscribeTradesRequest(symbols=[SYMBOL]))
            try:
                async for _ in call:
                    counts[i] += 1
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.CANCELLED:
                    errors.append(error.code().name)

        tasks = [asyncio.create_task(one(i)) for i in range(streams)]
        await asyncio.sleep(2.0)  # warm-up: every stream past its snapshot_end
        before = sum(counts)
        started = time.perf_counter()
        await asyncio.sleep(seconds)
        delivered = sum(counts) - before
        elapsed = time.perf_counter() - started
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"msgs_per_s": delivered / elapsed, "errors": errors}


ROWS = ((10, 2000.0), (10, 10_000.0), (100, 300.0), (100, 1000.0))
"""(streams, offered msgs/s per stream): 10x10000 and 100x1000 saturate the server's core."""


def stream_section(quick: bool, repeat: int = 1, only: str = "") -> dict[str, Any]:
    """Each row measured ``repeat`` times, ceiling and real server alternating
    in ABBA order (a drift of the machine's load favours neither); the
    row's ratio is the median of the runs' ratios, with their range."""
    available = cores()
    server_core, client_core = (available[0], available[1]) if len(available) > 1 else (None, None)
    seconds = 4.0 if quick else 8.0
    out: dict[str, Any] = {}
    for streams, rate in ROWS:
        name = f"{streams}x{rate:g}"
        if only and name not in only.split(","):
            continue
        runs = []
        for n in range(repeat):
            order = ("ceiling", "real") if n % 2 == 0 else ("real", "ceiling")
            run = _stream_run(streams, rate, order, seconds, server_core, client_core)
            run["ratio"] = run["real"]["msgs_per_s"] / run["ceiling"]["msgs_per_s"]
            runs.append(run)
        median = sorted(runs, key=lambda r: r["ratio"])[(len(runs) - 1) // 2]
        out[name] = {
            "streams": streams,
            "offered_per_s": streams * rate,
            "real": median["real"],
            "ceiling": median["ceiling"],
            "ratio": median["ratio"],
            "ratios": [r["ratio"] for r in runs],
        }
    return out


def _stream_run(
    streams: int,
    rate: float,
    order: Sequence[str],
    seconds: float,
    server_core: int | None,
    client_core: int | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for role in order:
        argv = [PYTHON, "bench/trades.py", "--role", role, "--rate", str(rate)]
        with spawn(pinned(server_core, argv)) as proc:
            port = int(proc.expect("PORT "))
            cpu_before = cpu_seconds(proc.pid)
            client = subprocess.run(
                pinned(
                    client_core,
                    [
                        PYTHON,
                        "bench/trades.py",
                        "--role",
                        "client",
                        "--port",
                        str(port),
                        "--streams",
                        str(streams),
                        "--seconds",
                        str(seconds),
                    ],
                ),
                capture_output=True,
                text=True,
                cwd=Path(__file__).resolve().parent.parent,
                timeout=120,
                check=True,
            )
            cpu = cpu_seconds(proc.pid) - cpu_before
        figures = json.loads(client.stdout.strip().splitlines()[-1])
        figures["server_cpu_s"] = cpu
        row[role] = figures
    return row


# --- profile: one day of trades -------------------------------------------------------------


async def _profile(quick: bool) -> dict[str, Any]:
    count = 86_400 * 4
    store = MemoryStore(trade_retention=count, trade_window=None)
    trades = tape(count, per_second=4)
    for i in range(0, count, 10_000):
        await store.write_trades(trades[i : i + 10_000])
    catalog = Catalog(
        {SYMBOL: Instrument(SYMBOL, "BTC", "USDT", 2, 4, Source.LIVE)}, tuple(Interval)
    )
    servicer = MarketDataServicer(store, Hub(), catalog, Limits())
    api = ApiServer(servicer, "127.0.0.1:0")
    await api.start()
    result: dict[str, Any] = {"trades": count}
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{api.port}") as channel:
            stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
            for name, interval in (("profile", 0), ("profile_footprint_1m", pb.INTERVAL_1M)):
                request = pb.GetVolumeProfileRequest(
                    symbol=SYMBOL,
                    start_time={"seconds": T0 // NANOS_PER_SECOND},
                    end_time={"seconds": T0 // NANOS_PER_SECOND + 86_400},
                    price_step="1",
                    interval=interval,  # type: ignore[arg-type]
                )
                latencies = []
                for _ in range(2 if quick else 5):
                    started = time.perf_counter()
                    response = await stub.GetVolumeProfile(request, timeout=300)
                    latencies.append(time.perf_counter() - started)
                assert response.trade_count == count
                result[name] = {
                    "median_s": statistics.median(latencies),
                    "min_s": min(latencies),
                    "levels": len(response.levels),
                    "footprint_candles": len(response.footprint),
                }
    finally:
        await api.stop(0)
    return result


def profile_section(quick: bool) -> dict[str, Any]:
    return asyncio.run(_profile(quick))


def run(quick: bool) -> dict[str, Any]:
    return {
        "store": store_section(quick),
        "stream": stream_section(quick),
        "profile": profile_section(quick),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--role", choices=("real", "ceiling", "client"))
    parser.add_argument("--rate", type=float, default=1000.0, help="offered trades/s")
    parser.add_argument("--port", type=int)
    parser.add_argument("--streams", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--only", default="store,stream,profile")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each stream row")
    parser.add_argument("--rows", default="", help="stream rows to run, e.g. 10x10000,100x1000")
    args = parser.parse_args()
    if args.role in ("real", "ceiling"):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        asyncio.run(_serve(args.role, args.rate, per_tick=max(1, int(args.rate // 100))))
        return
    if args.role == "client":
        print(json.dumps(asyncio.run(_client(args.port, args.streams, args.seconds))))
        return
    sections = set(args.only.split(","))
    result: dict[str, Any] = {}
    if "store" in sections:
        result["store"] = store_section(args.quick)
    if "stream" in sections:
        result["stream"] = stream_section(args.quick, args.repeat, args.rows)
    if "profile" in sections:
        result["profile"] = profile_section(args.quick)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
