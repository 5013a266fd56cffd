"""Fixtures and helpers of the client tests.

* ``target``/``client``: the real service in-process (``app`` of tests/conftest.py)
  and an async client connected to it.
* :class:`Collector`: consumes a stream in a task; tests wait on what it has
  received, with deadlines, instead of sleeping.
* :class:`SideServer`: a second gRPC server over the app's store and hub, that
  a test can stop and start again on the same port.
* :class:`FakeService`: a MarketDataService whose handlers a test scripts
  (metadata, deadlines, RetryInfo, TLS).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar, Generic, TypeVar

import grpc
import pytest

from candlewire.api.server import ApiServer
from candlewire.api.servicer import Catalog, Limits, MarketDataServicer
from candlewire.app import App
from candlewire.codec import frame_to_candle
from candlewire.domain import Interval as ServerInterval
from candlewire.domain import SeriesKey
from candlewire_client import (
    Candle,
    CandleEvent,
    CandlewireClient,
    Heartbeat,
    RetryPolicy,
    Series,
    SnapshotEnd,
)
from candlewire_client._convert import candle_from_pb, decimal_of
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.scripted import ScriptedFeed

WAIT = 10.0
"""Deadline, in seconds, for something that should happen at once."""

FAST = RetryPolicy(initial=0.02, maximum=0.2, unary_attempts=1)
"""Reconnect quickly in tests; unary calls fail at once."""

T = TypeVar("T")


def target_of(app: App) -> str:
    return f"127.0.0.1:{app.port}"


@pytest.fixture
def target(app: App) -> str:
    return target_of(app)


@pytest.fixture
async def client(target: str) -> AsyncIterator[CandlewireClient[Decimal]]:
    async with CandlewireClient(target, decimals=True, retry=FAST) as client:
        yield client


class Collector(Generic[T]):
    """Consumes an async iterator in a task and lets a test wait on what arrived."""

    def __init__(self, iterator: AsyncIterator[T]) -> None:
        self.items: list[T] = []
        self.error: BaseException | None = None
        self.done = False
        self._changed = asyncio.Condition()
        self._task = asyncio.create_task(self._run(iterator))

    async def _run(self, iterator: AsyncIterator[T]) -> None:
        try:
            async for item in iterator:
                async with self._changed:
                    self.items.append(item)
                    self._changed.notify_all()
        except Exception as error:
            self.error = error
        finally:
            async with self._changed:
                self.done = True
                self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[list[T]], bool], within: float = WAIT) -> None:
        """Wait until ``predicate(items)`` holds; fail if the stream ends or time runs out."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: predicate(self.items) or self.done)
        if not predicate(self.items):
            raise AssertionError(f"stream ended ({self.error!r}) after {len(self.items)} items")

    async def wait_done(self, within: float = WAIT) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: self.done)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def events_without_heartbeats(events: Sequence[object]) -> list[object]:
    """Candles and snapshot_end markers, without tokens (heartbeats are timing-dependent)."""
    out: list[object] = []
    for event in events:
        if isinstance(event, CandleEvent):
            out.append(event.candle)
        elif isinstance(event, SnapshotEnd):
            out.append("snapshot_end")
        else:
            assert isinstance(event, Heartbeat), event
    return out


def has_snapshot_end(events: Sequence[object]) -> bool:
    return any(isinstance(e, SnapshotEnd) for e in events)


def has_candle(events: Sequence[object], candle: Candle[Any]) -> bool:
    return any(isinstance(e, CandleEvent) and e.candle == candle for e in events)


async def logged_candles(
    app: App, series: Sequence[Series], after: Mapping[str, int]
) -> list[Candle[Decimal]]:
    """The candle versions in the store's update log after position ``after``, in order."""
    keys = [SeriesKey(s.symbol, ServerInterval(s.interval.number)) for s in series]
    updates = await app.store.read_updates(keys, after=after)
    return [candle_from_pb(frame_to_candle(u.frame), decimal_of) for u in updates]


class SideServer:
    """A gRPC server over the app's store and hub that can go down and come back."""

    def __init__(self, app: App, feed: ScriptedFeed) -> None:
        self._app = app
        self._feed = feed
        self.port = 0
        self._api: ApiServer | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        settings = self._app.settings
        catalog = Catalog(dict(await self._feed.instruments()), settings.intervals)
        limits = Limits(
            stale_after=settings.stale_after, heartbeat_interval=settings.heartbeat_interval
        )
        servicer = MarketDataServicer(
            self._app.store, self._app.hub, catalog, limits, trade_hub=self._app.trade_hub
        )
        self._api = ApiServer(servicer, f"127.0.0.1:{self.port}")
        self.port = self._api.port
        await self._api.start()

    async def stop(self) -> None:
        assert self._api is not None
        await self._api.stop(0)
        self._api = None


Handler = Callable[..., Any]


class FakeService:
    """A MarketDataService whose handlers the test sets; records request metadata."""

    SERVICE = "marketdata.v1.MarketDataService"
    _TYPES: ClassVar[dict[str, tuple[Any, Any, bool]]] = {
        "GetPrice": (pb.GetPriceRequest, pb.GetPriceResponse, False),
        "BatchGetPrices": (pb.BatchGetPricesRequest, pb.BatchGetPricesResponse, False),
        "GetCandles": (pb.GetCandlesRequest, pb.GetCandlesResponse, False),
        "ListSymbols": (pb.ListSymbolsRequest, pb.ListSymbolsResponse, False),
        "SubscribeCandles": (pb.SubscribeCandlesRequest, pb.SubscribeCandlesResponse, True),
    }

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.metadata: list[dict[str, str]] = []
        self.requests: list[Any] = []
        self._server: grpc.aio.Server | None = None
        self.port = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _method(self, name: str) -> grpc.RpcMethodHandler[Any, Any]:
        request_type, response_type, streaming = self._TYPES[name]

        def record(request: Any, context: Any) -> Handler:
            self.requests.append(request)
            self.metadata.append(dict(list(context.invocation_metadata() or ())))
            handler = self.handlers.get(name)
            if handler is None:
                raise AssertionError(f"no handler for {name}")
            return handler

        if streaming:

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                async for item in record(request, context)(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=request_type.FromString,
                response_serializer=response_type.SerializeToString,
            )

        async def unary(request: Any, context: Any) -> Any:
            return await record(request, context)(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )

    async def start(self, credentials: grpc.ServerCredentials | None = None) -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    self.SERVICE, {name: self._method(name) for name in self._TYPES}
                ),
            )
        )
        address = "127.0.0.1:0"
        if credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, credentials)
        await server.start()
        self._server = server

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop(0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeService]:
    service = FakeService()
    try:
        yield service
    finally:
        with contextlib.suppress(Exception):
            await service.stop()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "venv: builds a virtualenv and installs the client from the package index "
        "(runs in the normal suite; deselect with -m 'not venv')",
    )
