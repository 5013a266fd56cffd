"""The write path under faults, with real processes: a Redis ingestor that is
SIGKILLed and replaced, and PostgreSQL stopped for a while and started again.
Afterwards PostgreSQL holds every closed candle exactly once, in its newest
revision: exactly the closed candles Redis holds; and every trade exactly
once, in the order of the trade logs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from candlewire.codec import frame_to_candle
from candlewire.domain import Interval, SeriesKey
from candlewire.history import HistoryStore
from candlewire.history.archive import LogArchiver
from candlewire.history.postgres import BEGIN
from candlewire.store.redis import RedisStore
from tests.history.conftest import until_writable
from tests.history.pg import postgres
from tests.store.conftest import redis_server_in

WAIT = 60.0
SYMBOLS = ("BTCUSDT", "ETHUSDT")
SERIES = [SeriesKey(s, i) for s in SYMBOLS for i in (Interval.S1, Interval.M1)]


class Ingestor:
    def __init__(self, redis_url: str, postgres_url: str, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLEWIRE_")}
        env.update(
            CANDLEWIRE_REDIS_URL=redis_url,
            CANDLEWIRE_POSTGRES_URL=postgres_url,
            CANDLEWIRE_GRPC_LISTEN="127.0.0.1:0",
            CANDLEWIRE_HTTP_LISTEN="",
            CANDLEWIRE_SYMBOLS=",".join(SYMBOLS),
            CANDLEWIRE_INTERVALS="1s,1m",
            CANDLEWIRE_SIM_RATE="20",
            CANDLEWIRE_SIM_HISTORY="2",
            CANDLEWIRE_LEASE_TTL="1",
            CANDLEWIRE_LOG_LEVEL="INFO",
        )
        self.log = log
        self.out = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "candlewire", "ingest"],
            env=env, stdout=self.out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.out.close()


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` (a condition on the servers' state) until it holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_sigkill_and_postgres_outage_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    with redis_server_in(tmp_path) as redis_server, postgres() as pg:
        redis = RedisStore(redis_server.url)
        history = HistoryStore(pg.url, timeout=1.0)
        await history.upgrade()
        await history.connect()
        running: list[Ingestor] = []
        try:

            async def archived_through() -> int:
                found = await history.checkpoints()
                return min((found.get(s, (b"", 0))[1] for s in SYMBOLS), default=0)

            running.append(Ingestor(redis_server.url, pg.url, tmp_path / "first.log"))
            await until(lambda: _positive(archived_through), "the first ingestor to archive")
            await redis.connect()
            running[0].kill()  # mid-flight: no shutdown, no last archive pass
            killed_at = await archived_through()
            running.append(Ingestor(redis_server.url, pg.url, tmp_path / "second.log"))

            async def beyond(mark: int) -> bool:
                return await archived_through() > mark

            await until(lambda: beyond(killed_at), "the second ingestor to archive")
            pg.stop()
            stopped_head = min((await redis.head(SYMBOLS)).values())

            async def advanced() -> bool:
                return min((await redis.head(SYMBOLS)).values()) > stopped_head + 400

            await until(advanced, "live data written to Redis while PostgreSQL is down")
            pg.start()
            await until_writable(history)
            restarted_head = min((await redis.head(SYMBOLS)).values())
            await until(lambda: beyond(restarted_head), "the archive to catch up")
            running[1].kill()
            # What the last process wrote after its last pass, as its successor would archive it.
            await LogArchiver(redis, history, SERIES).archive_once()
            for key in SERIES:
                stored = await redis.get_candles(key, start=None, end=None, limit=10_000)
                closed = {
                    t: f
                    for t, f in zip(stored.open_times, stored.frames, strict=True)
                    if frame_to_candle(f).closed
                }
                kept = await history.get_candles(key, start=0, end=None, limit=10**6)
                archived = dict(zip(kept.open_times, kept.frames, strict=True))
                assert len(kept) == len(archived)  # no open time twice
                assert archived == closed, key
                assert len(closed) > (100 if key.interval is Interval.S1 else 1)
            for symbol in SYMBOLS:
                head = (await redis.trade_heads([symbol]))[symbol]
                stored_trades = await redis.get_trades(symbol, limit=10**6)
                assert stored_trades.seqs[0] == 1  # the trade log still holds every trade
                kept_trades = await history.trades_after(
                    symbol, redis.epoch, after=BEGIN, before=head + 1, start=None, end=None,
                    limit=10**6,
                )  # fmt: skip
                assert kept_trades.cursors == list(stored_trades.seqs)  # each once, in order
                assert list(kept_trades.frames) == list(stored_trades.frames)
                assert head > 100
            log = (tmp_path / "second.log").read_text(errors="replace")
            assert "history archiver" in log  # it met the outage and retried
        finally:
            for ingestor in running:
                ingestor.kill()
            await history.close()
            await redis.close()


def _serve(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own handle
        return subprocess.Popen(
            [sys.executable, "-m", "candlewire", "serve"], env=env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


async def _positive(value: Callable[[], Awaitable[int]]) -> bool:
    return await value() > 0


async def test_api_replica_reads_through_its_caches_and_postgres(tmp_path: Path) -> None:
    """An API replica (``serve --role api``) over Redis that keeps 100 candles a
    series, with the rest archived in PostgreSQL: one GetCandles over all of it."""
    import grpc

    from candlewire.codec import candle_frame, timestamp
    from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
    from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc
    from tests.history.candles import series_of
    from tests.store.conftest import free_port

    t0 = 1_767_225_600 * 10**9
    candles = series_of(t0, 300)
    with redis_server_in(tmp_path) as redis_server, postgres() as pg:
        redis = RedisStore(redis_server.url, retention=100)
        history = HistoryStore(pg.url)
        await redis.connect()
        await history.connect()
        replica: subprocess.Popen[bytes] | None = None
        try:
            for lo in range(0, 300, 50):  # written and archived as an ingestor would
                await redis.write_candles(candles[lo : lo + 50])
                await LogArchiver(
                    redis, history, [SeriesKey("BTCUSDT", Interval.M1)]
                ).archive_once()
            assert await history.count() == 300
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLEWIRE_")}
            env.update(
                CANDLEWIRE_REDIS_URL=redis_server.url,
                CANDLEWIRE_POSTGRES_URL=pg.url,
                CANDLEWIRE_ROLE="api",
                CANDLEWIRE_RETENTION="100",
                CANDLEWIRE_SYMBOLS="BTCUSDT",
                CANDLEWIRE_INTERVALS="1m",
                CANDLEWIRE_GRPC_LISTEN=f"127.0.0.1:{port}",
                CANDLEWIRE_HTTP_LISTEN="",
            )
            replica = _serve(env, tmp_path / "api.log")
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
                request = pb.GetCandlesRequest(
                    symbol="BTCUSDT", interval=pb.INTERVAL_1M, page_size=70,
                    start_time=timestamp(t0),
                )  # fmt: skip
                got: list[bytes] = []

                async def answered() -> bool:
                    try:
                        await stub.GetCandles(request, timeout=2)
                    except grpc.aio.AioRpcError:
                        return False
                    return True

                await until(answered, "the replica to answer")
                while True:
                    response = await stub.GetCandles(request)
                    got += [pb.GetCandlesResponse(candles=[c]).SerializeToString()
                            for c in response.candles]  # fmt: skip
                    if not response.next_page_token:
                        break
                    request.page_token = response.next_page_token
                assert got == [candle_frame(c) for c in candles]
        finally:
            if replica is not None:
                replica.kill()
                replica.wait(10)
            await history.close()
            await redis.close()
