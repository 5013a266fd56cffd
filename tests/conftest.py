from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from candlewire.app import App
from candlewire_protos.marketdata.v1 import marketdata_pb2_grpc
from tests.scripted import ScriptedFeed, running, stub_for

for key in [k for k in os.environ if k.startswith("CANDLEWIRE_")]:
    del os.environ[key]  # tests choose their settings explicitly
# ... except that no in-process service may take the real page port 8080.
os.environ["CANDLEWIRE_HTTP_LISTEN"] = "127.0.0.1:0"


@pytest.fixture
def feed() -> ScriptedFeed:
    return ScriptedFeed()


@pytest.fixture
async def app(feed: ScriptedFeed) -> AsyncIterator[App]:
    async with running(feed, heartbeat_interval=0.2, lateness=2.0) as app:
        await feed.attached()
        yield app


@pytest.fixture
async def stub(app: App) -> AsyncIterator[marketdata_pb2_grpc.MarketDataServiceStub]:
    async with stub_for(app) as stub:
        yield stub
