"""The service with the Saxo feed against the fake Saxo: start, log in, read the API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from candlewire.app import App
from candlewire.config import load
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc
from tests.saxo.fake import WAIT, FakeSaxo

READINESS = "marketdata.v1.MarketDataService"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
REDIRECT = "http://localhost:8080/auth/saxo/callback"


def saxo_settings(fake: FakeSaxo, token_file: Path, **settings: Any) -> dict[str, Any]:
    return {
        "feed": "saxo",
        "symbols": "EUR/USD,GBP-USD",
        "intervals": "1s,1m,1h",
        "saxo_app_key": fake.app_key,
        "saxo_auth_url": fake.auth_url,
        "saxo_rest_url": fake.rest_url,
        "saxo_streaming_url": fake.streaming_url,
        "saxo_redirect_url": REDIRECT,
        "saxo_token_file": str(token_file),
        "grpc_listen": "127.0.0.1:0",
        "http_listen": "127.0.0.1:0",
        "shutdown_grace": 1.0,
        "feed_stale_after": 3600.0,
        "stale_after": 3600.0,
        **settings,
    }


@contextlib.asynccontextmanager
async def serving(**settings: Any) -> AsyncIterator[App]:
    async with App(load(**settings)) as app:
        yield app


class Client:
    """gRPC stubs and the HTTP port of one running service."""

    def __init__(self, app: App, channel: grpc.aio.Channel) -> None:
        self.app = app
        self.api = marketdata_pb2_grpc.MarketDataServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        assert app.gateway is not None
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.gateway.port}")

    async def readiness(self) -> int:
        answer = await self.health.Check(health_pb2.HealthCheckRequest(service=READINESS))
        return int(answer.status)

    async def until_ready(self, status: int) -> None:
        """Read the readiness Watch stream until it reports ``status``."""
        call = self.health.Watch(health_pb2.HealthCheckRequest(service=READINESS))
        seen = []
        try:
            async with asyncio.timeout(WAIT):
                while True:
                    response = await call.read()
                    assert response is not grpc.aio.EOF
                    seen.append(response.status)
                    if response.status == status:
                        return
        except TimeoutError:
            raise AssertionError(f"readiness never {status}: {seen}") from None
        finally:
            call.cancel()

    async def symbols(self) -> dict[str, pb.SymbolInfo]:
        answer = await self.api.ListSymbols(pb.ListSymbolsRequest())
        return {s.symbol: s for s in answer.symbols}

    async def login(self, fake: FakeSaxo) -> httpx.Response:
        """An operator's browser: the login route, Saxo's sign-in, the callback."""
        start = await self.http.get("/auth/saxo/login")
        assert start.status_code == 302, start.text
        redirect = fake.sign_in(start.headers["location"])
        return await self.callback(redirect)

    async def callback(self, redirect: str) -> httpx.Response:
        query = redirect.split("?", 1)[1]
        return await self.http.get(f"/auth/saxo/callback?{query}")


@contextlib.asynccontextmanager
async def client(app: App) -> AsyncIterator[Client]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        client = Client(app, channel)
        try:
            yield client
        finally:
            await client.http.aclose()
