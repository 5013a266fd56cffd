"""The README run command as a real subprocess, in its embedded defaults.

``python -m candlewire serve`` with no ``CANDLEWIRE_*`` variables runs the
simulated feed on the memory store. The port comes from the log line
``gRPC listening on ... (port N)``; readiness from the Health Watch stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc

LISTENING = re.compile(r"gRPC listening on (\S+) \(port (\d+)\)")
GATEWAY = re.compile(r"HTTP on http://127\.0\.0\.1:(\d+)")
READINESS = "marketdata.v1.MarketDataService"
START_TIMEOUT = 30.0  # the default start-up backfills a day of simulated trades


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any CANDLEWIRE_ variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CANDLEWIRE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Server:
    process: asyncio.subprocess.Process
    port: int = 0
    log: list[str] = field(default_factory=list)
    drained: asyncio.Task[None] | None = None

    async def read_until(self, pattern: re.Pattern[str], within: float) -> re.Match[str]:
        """Read log lines until one matches ``pattern``; fail after ``within`` s."""
        stderr = self.process.stderr
        assert stderr is not None
        try:
            async with asyncio.timeout(within):
                while True:
                    raw = await stderr.readline()
                    if not raw:
                        pytest.fail(f"log ended before {pattern.pattern!r}: {self.log}")
                    line = raw.decode(errors="replace").rstrip("\n")
                    self.log.append(line)
                    match = pattern.search(line)
                    if match:
                        return match
        except TimeoutError:
            pytest.fail(f"no {pattern.pattern!r} within {within}s: {self.log}")

    def drain(self) -> None:
        """Keep reading the log in the background (so the pipe never fills)."""

        async def read() -> None:
            stderr = self.process.stderr
            assert stderr is not None
            while raw := await stderr.readline():
                self.log.append(raw.decode(errors="replace").rstrip("\n"))

        self.drained = asyncio.create_task(read())


PYTHON_M = (sys.executable, "-m", "candlewire")
# The console script installed with the package, next to this interpreter.
SCRIPT = (str(Path(sys.executable).with_name("candlewire")),)
assert Path(SCRIPT[0]).exists(), f"console script not installed: {SCRIPT[0]}"


@contextlib.asynccontextmanager
async def serve(
    *args: str, env: Mapping[str, str], command: tuple[str, ...] = PYTHON_M
) -> AsyncIterator[Server]:
    process = await asyncio.create_subprocess_exec(
        *command,
        "serve",
        *args,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    server = Server(process)
    try:
        yield server
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if server.drained is not None:
            await server.drained


async def wait_ready(channel: grpc.aio.Channel, within: float) -> None:
    """Wait for readiness SERVING on the Health Watch stream."""
    watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(service=READINESS)
    )
    seen: list[int] = []
    try:
        async with asyncio.timeout(within):
            while True:
                response = await watch.read()
                assert isinstance(response, health_pb2.HealthCheckResponse)
                seen.append(response.status)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
    except TimeoutError:
        pytest.fail(f"readiness not SERVING within {within}s (saw {seen})")
    finally:
        watch.cancel()


async def live_trades(
    stub: marketdata_pb2_grpc.MarketDataServiceStub, count: int, within: float
) -> None:
    """Wait until ``count`` live simulator ticks reached BTCUSDT's 1s candles.

    Each tick is one trade, so a tick shows as a candle update with a new
    ``(open_time, trade_count)``. The simulator stores a tick's quote before it
    sends the next tick's trade, so after two ticks a quote of this run is stored.
    """
    stream = stub.SubscribeCandles(
        pb.SubscribeCandlesRequest(
            series=[pb.Series(symbol="BTCUSDT", interval=pb.INTERVAL_1S)], history=0
        )
    )
    ticks: set[tuple[int, int]] = set()
    live = False
    try:
        async with asyncio.timeout(within):
            while len(ticks) < count:
                response = await stream.read()
                assert isinstance(response, pb.SubscribeCandlesResponse)
                kind = response.WhichOneof("event")
                if kind == "snapshot_end":
                    live = True
                elif kind == "candle" and live and response.candle.trade_count:
                    candle = response.candle
                    ticks.add((candle.open_time.ToNanoseconds(), candle.trade_count))
    except TimeoutError:
        pytest.fail(f"{len(ticks)} of {count} live trades within {within}s")
    finally:
        stream.cancel()


async def test_serve_with_embedded_defaults() -> None:
    listen = ("--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0")
    async with serve(*listen, env=clean_env()) as server:
        await server.read_until(re.compile(r"event loop: uvloop \(uvloop\b"), START_TIMEOUT)
        match = await server.read_until(LISTENING, START_TIMEOUT)
        assert match.group(1) == "127.0.0.1:0"
        server.port = int(match.group(2))
        assert server.port > 0
        page_port = int((await server.read_until(GATEWAY, START_TIMEOUT)).group(1))
        server.drain()

        # The web page is served by the gateway, with its script.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{page_port}") as http:
            page = await http.get("/", timeout=10)
            assert page.status_code == 200
            assert "text/html" in page.headers["content-type"]
            script = re.search(r'<script[^>]+src="/?([^"]+\.js)"', page.text)
            assert script is not None, page.text
            assert (await http.get("/" + script.group(1), timeout=10)).status_code == 200

        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            await wait_ready(channel, START_TIMEOUT)
            stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)

            price = (await stub.GetPrice(pb.GetPriceRequest(symbol="BTCUSDT"), timeout=10)).price
            assert price.symbol == "BTCUSDT"
            assert price.source == pb.SOURCE_SIMULATED
            assert 0 < price.bid < price.ask
            assert price.bid < price.mid < price.ask
            assert price.last > 0  # the simulator reports its trades with the quote

            # The live simulation runs: trades arrive as candle updates, and once
            # a tick's quote is stored the price is fresh.
            await live_trades(stub, 2, within=10)
            price = (await stub.GetPrice(pb.GetPriceRequest(symbol="BTCUSDT"), timeout=10)).price
            assert price.stale is False
            assert price.source == pb.SOURCE_SIMULATED

            response = await stub.GetCandles(
                pb.GetCandlesRequest(symbol="BTCUSDT", interval=pb.INTERVAL_1M, page_size=1000),
                timeout=10,
            )
            candles = response.candles
            assert len(candles) == 1000  # a day of simulated history, all in one page
            assert response.next_page_token == ""
            for before, after in itertools.pairwise(candles):
                assert after.open_time.seconds == before.open_time.seconds + 60
                assert before.close_time == after.open_time
            assert all(c.symbol == "BTCUSDT" and c.interval == pb.INTERVAL_1M for c in candles)
            assert all(c.source == pb.SOURCE_SIMULATED for c in candles)
            assert all(
                c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high for c in candles
            )
            assert sum(c.trade_count for c in candles) > 0
            assert all(c.closed for c in candles[:-1])

            symbols = await stub.ListSymbols(pb.ListSymbolsRequest(), timeout=10)
            assert [s.symbol for s in symbols.symbols] == ["BTCUSDT", "ETHUSDT", "EURUSD"]
            assert {s.source for s in symbols.symbols} == {pb.SOURCE_SIMULATED}
            assert len(symbols.symbols[0].intervals) == 16

        server.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                code = await server.process.wait()
        except TimeoutError:
            pytest.fail(f"still running 10 s after SIGTERM: {server.log[-5:]}")
        assert server.drained is not None
        await server.drained
        assert code == 0, server.log
        assert any(line.endswith("shutting down") for line in server.log), server.log
        assert server.log[-1].endswith(": stopped"), server.log


@pytest.mark.parametrize(
    ("command", "args", "env"),
    [
        pytest.param(SCRIPT, ["--retention", "5"], {}, id="flag"),
        pytest.param(PYTHON_M, [], {"CANDLEWIRE_RETENTION": "5"}, id="env"),
        # A valid variable does not rescue an invalid flag: the flag wins.
        pytest.param(
            PYTHON_M, ["--retention", "5"], {"CANDLEWIRE_RETENTION": "500"}, id="flag-over-env"
        ),
    ],
)
async def test_serve_with_an_invalid_setting_exits_with_2(
    command: tuple[str, ...], args: list[str], env: dict[str, str]
) -> None:
    async with serve(
        "--grpc-listen", "127.0.0.1:0", *args, env=clean_env(**env), command=command
    ) as server:
        stderr = server.process.stderr
        assert stderr is not None
        async with asyncio.timeout(20):
            output = (await stderr.read()).decode()
            code = await server.process.wait()
    assert code == 2, output
    assert "retention" in output
    assert "--retention" in output
    assert "CANDLEWIRE_RETENTION" in output
    assert "gRPC listening" not in output


async def test_liveness_answers_promptly_during_startup() -> None:
    """A liveness probe (1 s deadline, as Kubernetes' default) is answered while
    the service backfills, not only once it is ready."""
    listen = ("--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0")
    async with serve(*listen, env=clean_env()) as server:
        server.port = int((await server.read_until(LISTENING, START_TIMEOUT)).group(2))
        server.drain()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            ready = asyncio.create_task(wait_ready(channel, START_TIMEOUT))
            started = time.monotonic()
            failures: list[str] = []
            probes = 0
            # Probe every 0.25 s until readiness is reported on its Watch stream.
            while not (await asyncio.wait({ready}, timeout=0.25))[0]:
                probes += 1
                sent = time.monotonic()
                try:
                    live = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    assert live.status == health_pb2.HealthCheckResponse.SERVING
                except grpc.aio.AioRpcError as error:
                    failures.append(f"{sent - started:.1f}s: {error.code().name}")
            await ready
        assert probes > 0
        assert failures == [], (
            f"{len(failures)} of {probes} liveness probes got no answer within 1 s while "
            f"the service started (the backfill blocks the event loop): {failures}"
        )
