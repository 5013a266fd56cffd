"""The service started while the venue is down: it serves liveness, reports
readiness NOT_SERVING with the reason, and asks again with backoff until the
venue answers; then it serves. A symbol the venue does not list is still a
start-up error (one line naming it, exit status 2) once the venue answers.

``candlewire serve`` runs as a child process with ``CANDLEWIRE_FEED=binance``
pointed at ports where the local exchange is not listening yet; the test
starts the exchange there later.
"""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc
from tests.binance.exchange import T0, Exchange, SymbolSpec, make_tape
from tests.test_smoke import LISTENING, READINESS, clean_env, serve, wait_ready

WAIT = 30.0
SPECS = [SymbolSpec("BTCUSDT", "BTC", "USDT")]
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on (bound and released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def venue_env(symbols: str, rest_port: int, ws_port: int) -> dict[str, str]:
    return clean_env(
        CANDLEWIRE_FEED="binance",
        CANDLEWIRE_SYMBOLS=symbols,
        CANDLEWIRE_INTERVALS="1m",
        CANDLEWIRE_BINANCE_HISTORY="10",
        CANDLEWIRE_GRPC_LISTEN="127.0.0.1:0",
        CANDLEWIRE_HTTP_LISTEN="",
    )


def with_venue(env: dict[str, str], rest_port: int, ws_port: int) -> dict[str, str]:
    env["CANDLEWIRE_BINANCE_REST_URL"] = f"http://127.0.0.1:{rest_port}"
    env["CANDLEWIRE_BINANCE_WS_URL"] = f"ws://127.0.0.1:{ws_port}"
    return env


async def test_a_venue_down_at_start_is_waited_for() -> None:
    rest_port, ws_port = free_ports(2)
    env = with_venue(venue_env("BTCUSDT", rest_port, ws_port), rest_port, ws_port)
    async with serve(env=env) as server:
        port = (await server.read_until(LISTENING, WAIT)).group(2)
        server.drain()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            alive = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert alive.status == health_pb2.HealthCheckResponse.SERVING
            ready = await health.Check(health_pb2.HealthCheckRequest(service=READINESS), timeout=5)
            assert ready.status == NOT_SERVING
            stub = marketdata_pb2_grpc.MarketDataServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ListSymbols(pb.ListSymbolsRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert str(rest_port) not in (info.value.details() or "")
            assert server.process.returncode is None  # still up, asking again

            tape = make_tape(["BTCUSDT"], T0 - 600_000, T0 + 10_000, seed=7)
            async with Exchange(tape, SPECS, rest_port=rest_port, ws_port=ws_port):
                await wait_ready(channel, WAIT)
                symbols = await stub.ListSymbols(pb.ListSymbolsRequest(), timeout=5)
                assert [s.symbol for s in symbols.symbols] == ["BTCUSDT"]
    # Why readiness was NOT_SERVING was logged, naming the feed.
    assert any("NOT_SERVING: feed unavailable" in line for line in server.log), server.log
    assert not any("Traceback" in line for line in server.log), server.log


async def test_an_unknown_symbol_stops_the_start_once_the_venue_answers() -> None:
    rest_port, ws_port = free_ports(2)
    env = with_venue(venue_env("BTCUSDT,NOPEUSDT", rest_port, ws_port), rest_port, ws_port)
    async with serve(env=env) as server:
        await server.read_until(LISTENING, WAIT)
        server.drain()
        async with Exchange([], SPECS, rest_port=rest_port, ws_port=ws_port):
            async with asyncio.timeout(WAIT):
                status = await server.process.wait()
    assert status == 2
    assert server.drained is not None
    await server.drained
    last = server.log[-1]
    assert last.startswith("candlewire: ") and "NOPEUSDT" in last, server.log
    assert not any("Traceback" in line for line in server.log), server.log
