"""``async with App(...)``: entering returns once gRPC serves; leaving stops
the service and awaits everything it started; a start-up failure is raised."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from candlewire.app import App
from candlewire.config import load
from candlewire.domain import Instrument
from candlewire.errors import ConfigError
from candlewire.store.memory import MemoryStore
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.scripted import ScriptedFeed, sec, stub_for

WAIT = 10.0


class ClosingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.closed = asyncio.Event()

    async def close(self) -> None:
        self.closed.set()
        await super().close()


async def test_entering_serves_and_leaving_awaits_everything() -> None:
    before = asyncio.all_tasks()
    feed, store = ScriptedFeed(), ClosingStore()
    settings = load(grpc_listen="127.0.0.1:0", http_listen="", shutdown_grace=0.5)
    async with App(settings, feed=feed, store=store) as app:
        assert app.port > 0
        async with stub_for(app) as stub:
            listed = await stub.ListSymbols(pb.ListSymbolsRequest(), timeout=WAIT)
        assert [s.symbol for s in listed.symbols] == ["BTCUSDT", "ETHUSDT"]
        await feed.trade("BTCUSDT", sec(1), "100")
        port = app.port
    assert store.closed.is_set()
    assert asyncio.all_tasks() - before == set()  # nothing of the service runs on
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health.Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


class RefusingFeed(ScriptedFeed):
    async def instruments(self) -> Mapping[str, Instrument]:
        raise ConfigError("symbols (CANDLEWIRE_SYMBOLS): NOPE is not listed")


async def test_a_start_up_failure_is_raised_by_entering() -> None:
    before = asyncio.all_tasks()
    settings = load(grpc_listen="127.0.0.1:0", http_listen="")
    with pytest.raises(ConfigError, match="NOPE"):
        async with App(settings, feed=RefusingFeed()):
            pytest.fail("the block must not run")
    assert asyncio.all_tasks() - before == set()
