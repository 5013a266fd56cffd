"""Server reflection in both protocol versions, and what the HTTP port says of it.

grpcurl, Postman and ``buf curl`` ask for ``grpc.reflection.v1`` first; older
tools ask for ``v1alpha``. Both are served on the gRPC port. The grpc-web
gateway cannot carry reflection (a bidirectional stream): it must say so at
once rather than wait for a request body that a streaming client keeps open.
"""

from __future__ import annotations

import asyncio
import shutil

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from candlewire.app import App

V1 = "grpc.reflection.v1.ServerReflection"
V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
MARKET_DATA = "marketdata.v1.MarketDataService"
HEALTH = "grpc.health.v1.Health"
HANG_GUARD = 60.0  # seconds: a tool still running then is hanging, not slow

needs_buf = pytest.mark.skipif(shutil.which("buf") is None, reason="buf is a dev dependency")


async def reflect(
    app: App, service: str, request: reflection_pb2.ServerReflectionRequest
) -> reflection_pb2.ServerReflectionResponse:
    """One request on ``service``; v1 messages are v1alpha's under a new name."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        call = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )()
        await call.write(request)
        async with asyncio.timeout(HANG_GUARD):
            response = await call.read()
        await call.done_writing()
    assert isinstance(response, reflection_pb2.ServerReflectionResponse)
    return response


@pytest.mark.parametrize("service", [V1, V1ALPHA])
async def test_both_versions_list_the_services(app: App, service: str) -> None:
    response = await reflect(app, service, reflection_pb2.ServerReflectionRequest(list_services=""))

    names = {s.name for s in response.list_services_response.service}
    assert names == {MARKET_DATA, HEALTH, V1, V1ALPHA}


@pytest.mark.parametrize("service", [V1, V1ALPHA])
async def test_both_versions_describe_themselves(app: App, service: str) -> None:
    response = await reflect(
        app, V1, reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
    )

    (raw,) = response.file_descriptor_response.file_descriptor_proto
    proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
    package = service.rsplit(".", 1)[0]
    assert proto.package == package
    assert proto.name.endswith(f"/{package.rsplit('.', 1)[1]}/reflection.proto")
    (method,) = proto.service[0].method
    assert method.input_type == f".{package}.ServerReflectionRequest"
    assert method.client_streaming and method.server_streaming


async def run_buf(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "buf", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(HANG_GUARD):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@needs_buf
async def test_buf_curl_lists_services_over_reflection_v1(app: App) -> None:
    code, out, err = await run_buf(
        "curl",
        "--protocol=grpc",
        "--http2-prior-knowledge",
        "--reflect-protocol=grpc-v1",
        "--list-services",
        f"http://127.0.0.1:{app.port}",
    )

    assert code == 0, err
    assert set(out.split()) == {MARKET_DATA, HEALTH, V1, V1ALPHA}


@needs_buf
@pytest.mark.parametrize("http2", [False, True])
async def test_reflection_through_the_gateway_is_refused_at_once(app: App, http2: bool) -> None:
    assert app.gateway is not None
    code, _, err = await run_buf(
        "curl",
        "--verbose",
        "--protocol=grpcweb",
        *(["--http2-prior-knowledge"] if http2 else []),
        f"http://127.0.0.1:{app.gateway.port}/{MARKET_DATA}/GetPrice",
        "--data",
        '{"symbol": "BTCUSDT"}',
    )

    assert code != 0
    assert "Grpc-Status: 12" in err  # UNIMPLEMENTED, for both reflection versions
    assert "server reflection is served on the gRPC port" in err
    assert f"/{V1}/ServerReflectionInfo" in err and f"/{V1ALPHA}/ServerReflectionInfo" in err
