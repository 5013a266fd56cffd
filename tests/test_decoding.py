"""Requests that are not the method's message: INVALID_ARGUMENT on every method, no traceback.

Bytes that do not decode as the request type used to end the call with
``UNKNOWN`` ("Unexpected DecodeError") and log a traceback for each request,
on the gRPC port and through the gateway (which forwards the bytes).
"""

from __future__ import annotations

import logging

import grpc
import httpx
import pytest

from candlewire.app import App
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb
from tests.gateway.test_gateway import BINARY, decode, frame

CORRUPT = b"\xff\xff\xff"  # a tag of field 0x1fffff... with a truncated varint: never decodes
SERVICE = "/marketdata.v1.MarketDataService"

UNARY = [
    f"{SERVICE}/GetPrice",
    f"{SERVICE}/BatchGetPrices",
    f"{SERVICE}/GetCandles",
    f"{SERVICE}/ListSymbols",
    "/grpc.health.v1.Health/Check",
]
SERVER_STREAMING = [f"{SERVICE}/SubscribeCandles", "/grpc.health.v1.Health/Watch"]
BIDI = [
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
]


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == [], [r.getMessage() for r in loud]


async def still_serves(channel: grpc.aio.Channel) -> None:
    reply = await channel.unary_unary(f"{SERVICE}/ListSymbols")(b"", timeout=10)
    assert pb.ListSymbolsResponse.FromString(reply).symbols


@pytest.mark.parametrize("path", UNARY + SERVER_STREAMING + BIDI)
async def test_undecodable_requests_are_invalid_arguments(
    app: App, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            if path in UNARY:
                await channel.unary_unary(path)(CORRUPT, timeout=10)
            elif path in SERVER_STREAMING:
                async for _ in channel.unary_stream(path)(CORRUPT, timeout=10):
                    pass
            else:
                call = channel.stream_stream(path)(timeout=10)
                await call.write(CORRUPT)
                await call.done_writing()
                async for _ in call:
                    pass

        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details().startswith("the request is not a valid ")
        assert "Wire format was corrupt" in info.value.details()
        await still_serves(channel)
    no_tracebacks(caplog)


async def test_the_message_type_is_named(app: App) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await channel.unary_unary(f"{SERVICE}/GetCandles")(CORRUPT, timeout=10)
    assert "marketdata.v1.GetCandlesRequest" in info.value.details()


@pytest.mark.parametrize("path", [f"{SERVICE}/GetPrice", f"{SERVICE}/SubscribeCandles"])
async def test_through_the_gateway(app: App, path: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    assert app.gateway is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.gateway.port}") as http:
        response = await http.post(path, content=frame(CORRUPT), headers=BINARY, timeout=10)
        reply = decode(response, response.content, text=False)

        assert reply.status == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert "the request is not a valid marketdata.v1." in reply.message
        good = await http.post(
            f"{SERVICE}/ListSymbols", content=frame(pb.ListSymbolsRequest()), headers=BINARY
        )
        assert decode(good, good.content, text=False).status == 0
    no_tracebacks(caplog)
