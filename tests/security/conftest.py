"""Helpers of the security tests: keys files, raw calls, status details."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory
from google.rpc import error_details_pb2, status_pb2

from candlewire.api.auth import METHOD_SCOPES, SCOPES
from candlewire.api.keys import add_key
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.store.conftest import RedisServer, redis_server_in

SERVICE = pb.DESCRIPTOR.services_by_name["MarketDataService"]
METHODS = {f"/{SERVICE.full_name}/{m.name}": m for m in SERVICE.methods}


KNOWN_REQUESTS = {
    "GetPrice",
    "GetRecentTicks",
    "BatchGetPrices",
    "GetCandles",
    "SubscribeCandles",
    "ListSymbols",
    "GetTrades",
    "SubscribeTrades",
    "GetVolumeProfile",
}


def admitted(path: str, code: grpc.StatusCode) -> bool:
    """Whether ``code`` shows the call was let through: OK for the requests built
    here; for a method added later (an empty request), any code but a refusal."""
    if path.rsplit("/", 1)[1] in KNOWN_REQUESTS:
        return code == grpc.StatusCode.OK
    return code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


def request_for(path: str) -> bytes:
    """A valid request of ``path`` (the fields the scripted feed serves)."""
    name = path.rsplit("/", 1)[1]
    if name == "GetPrice":
        return pb.GetPriceRequest(symbol="BTCUSDT").SerializeToString()
    if name == "GetRecentTicks":
        return pb.GetRecentTicksRequest(symbol="BTCUSDT", limit=1).SerializeToString()
    if name == "BatchGetPrices":
        return pb.BatchGetPricesRequest(symbols=["BTCUSDT"]).SerializeToString()
    if name == "GetCandles":
        return pb.GetCandlesRequest(
            symbol="BTCUSDT", interval=pb.INTERVAL_1M, page_size=1
        ).SerializeToString()
    if name == "SubscribeCandles":
        return pb.SubscribeCandlesRequest(
            series=[pb.Series(symbol="BTCUSDT", interval=pb.INTERVAL_1M)], history=1
        ).SerializeToString()
    if name == "GetTrades":
        return pb.GetTradesRequest(symbol="BTCUSDT", page_size=1).SerializeToString()
    if name == "SubscribeTrades":
        return pb.SubscribeTradesRequest(symbols=["BTCUSDT"], history=1).SerializeToString()
    if name == "GetVolumeProfile":
        request = pb.GetVolumeProfileRequest(symbol="BTCUSDT", price_step="1")
        request.start_time.FromNanoseconds(0)
        return request.SerializeToString()
    method = METHODS[path]
    return bytes(message_factory.GetMessageClass(method.input_type)().SerializeToString())


async def call(
    channel: grpc.aio.Channel,
    path: str,
    metadata: Sequence[tuple[str, str]] = (),
    request: bytes | None = None,
) -> tuple[grpc.StatusCode, status_pb2.Status | None]:
    """Call ``path`` (a stream: up to its first message); its code and status details."""
    body = request_for(path) if request is None else request
    method = METHODS.get(path)
    try:
        if method is not None and method.server_streaming:
            stream = channel.unary_stream(path)(body, metadata=tuple(metadata), timeout=10)
            async for _ in stream:
                break
            stream.cancel()
        else:
            await channel.unary_unary(path)(body, metadata=tuple(metadata), timeout=10)
    except grpc.aio.AioRpcError as error:
        return error.code(), details_of(error.trailing_metadata())
    return grpc.StatusCode.OK, None


def details_of(trailing: object) -> status_pb2.Status | None:
    for key, value in trailing or ():  # type: ignore[attr-defined]
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def retry_delay(status: status_pb2.Status | None) -> float | None:
    """The RetryInfo delay of a status, in seconds."""
    for detail in status.details if status is not None else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def error_reason(status: status_pb2.Status | None) -> str | None:
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return None


def grpc_web_frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


class Keys:
    """A keys file with a key of every scope, one reading everything, and one per limit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.reader = add_key(path, "reader")
        self.only = {
            scope: add_key(path, f"only-{scope}", scopes=[scope])
            for scope in sorted(SCOPES - {"read"})
        }
        self.slow = add_key(path, "slow", rate=2)
        self.one_stream = add_key(path, "one-stream", streams=1)

    def lacking(self, scope: str) -> str:
        """A key without ``scope``."""
        return next(key for s, key in self.only.items() if s != scope)

    def having(self, path: str) -> str:
        scope = METHOD_SCOPES.get(path)
        return self.only[scope] if scope is not None else self.reader

    def all(self) -> list[str]:
        return [self.reader, self.slow, self.one_stream, *self.only.values()]


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys.json")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of this test alone."""
    with redis_server_in(tmp_path) as server:
        yield server
