"""Optional OpenTelemetry traces of RPCs, sent over OTLP/gRPC.

With ``CANDLEWIRE_OTLP_ENDPOINT`` set, every RPC on the gRPC port (and so
every call through the gateway) becomes a server span made by
``opentelemetry-instrumentation-grpc``'s interceptor, batched and exported to
the endpoint. The packages are the ``tracing`` extra
(``pip install 'candlewire[tracing]'``); without them the setting is refused
at start with a message naming it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import grpc

from candlewire.errors import ConfigError

__all__ = ["Tracing"]

log = logging.getLogger(__name__)


class Tracing:
    """A tracer provider exporting to ``endpoint``, and its server interceptor."""

    def __init__(self, endpoint: str, *, service_name: str = "candlewire") -> None:
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            from opentelemetry.instrumentation.grpc import aio_server_interceptor
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            raise ConfigError(
                "otlp_endpoint (CANDLEWIRE_OTLP_ENDPOINT): tracing needs the tracing extra "
                "(pip install 'candlewire[tracing]')"
            ) from None
        self._provider: Any = TracerProvider(
            resource=Resource.create({"service.name": service_name})
        )
        exporter = OTLPSpanExporter(
            endpoint=endpoint.split("://", 1)[1], insecure=endpoint.startswith("http://")
        )
        self._provider.add_span_processor(BatchSpanProcessor(exporter))
        self.interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=self._provider
        )
        log.info("tracing RPCs to %s", endpoint)

    async def close(self) -> None:
        """Export what is pending, then stop."""
        await asyncio.to_thread(self._provider.shutdown)
