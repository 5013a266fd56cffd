"""RPCs traced over OTLP/gRPC to a local collector (the OTLP trace service, on a free port)."""

from __future__ import annotations

import asyncio

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.scripted import ScriptedFeed, running
from tests.security.conftest import call

LIST = "/marketdata.v1.MarketDataService/ListSymbols"


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[str] = []
        self.received = asyncio.Event()

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext[object, object],
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(span.name for span in scope.spans)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_rpcs_are_traced_when_an_otlp_endpoint_is_set() -> None:
    collector = Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with (
            running(ScriptedFeed(), otlp_endpoint=f"http://127.0.0.1:{port}") as app,
            grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel,
        ):
            assert (await call(channel, LIST))[0] == grpc.StatusCode.OK
        # Stopping the service flushes what is pending.
        async with asyncio.timeout(10):
            await collector.received.wait()
        assert LIST.lstrip("/") in collector.spans or LIST in collector.spans
    finally:
        await server.stop(0)
