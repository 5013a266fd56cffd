"""The gRPC server: MarketDataService, health and reflection on one port.

Handlers are registered from an explicit table rather than the generated
``add_MarketDataServiceServicer_to_server``, because the candle-carrying
methods return pre-encoded bytes (the serializer passes them through).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from candlewire.api.decoding import DecodeGuard
from candlewire.api.gatekeeper import Gatekeeper
from candlewire.api.policy import CallPolicy, PolicyHandlers
from candlewire.api.reflection import enable_reflection
from candlewire.api.servicer import Catalog, MarketDataServicer
from candlewire.api.tls import CertificateFiles
from candlewire.errors import ConfigError
from candlewire.gateway._dispatch import LocalDispatcher, collect_handlers
from candlewire.readiness import DEPENDENCY_SERVICES
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb

__all__ = ["SERVICE_NAME", "ApiServer", "Catalog", "server_options"]

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MarketDataService"].full_name

_MiB = 1024 * 1024


def server_options() -> list[tuple[str, int]]:
    """Channel arguments, chosen on purpose.

    Requests are small, responses at most 1000 candles (~120 KiB): the send
    limit leaves headroom, the receive limit refuses junk early. The server
    pings idle connections every 30 s so dead peers (and NATs) are noticed,
    and lets clients ping every 10 s (the Python client's keepalive).

    grpc.aio takes new calls from gRPC core one at a time; the calls that
    arrive meanwhile wait in core's queue of calls not yet taken, and core
    cancels calls at random once more than ``grpc.server.max_pending_requests``
    wait (1000 by default, all connections together): 2,000 streams opened
    at once over four connections lost 5-11 % of them that way, cancelled
    before the service saw them. The queue may hold more calls than the
    service has streams (``CANDLEWIRE_MAX_STREAMS``, 10,000 by default) plus
    a burst of unary calls; what the service cannot take it refuses with a
    status. A call still waiting after 30 s (core's default) is cancelled.
    """
    return [
        ("grpc.max_receive_message_length", 1 * _MiB),
        ("grpc.max_send_message_length", 16 * _MiB),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 3),
        ("grpc.max_concurrent_streams", 1000),
        ("grpc.server.max_pending_requests", 20_000),
        ("grpc.server.max_pending_requests_hard_limit", 40_000),
        ("grpc.so_reuseport", 0),
    ]


def _passthrough(value: bytes | Any) -> bytes:
    return value if isinstance(value, bytes) else bytes(value.SerializeToString())


def _handlers(servicer: MarketDataServicer) -> grpc.GenericRpcHandler:
    def unary(method: Callable[..., Any], request: type[Any]) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(
            method, request_deserializer=request.FromString, response_serializer=_passthrough
        )

    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "GetPrice": unary(servicer.GetPrice, pb.GetPriceRequest),
            "BatchGetPrices": unary(servicer.BatchGetPrices, pb.BatchGetPricesRequest),
            "GetCandles": unary(servicer.GetCandles, pb.GetCandlesRequest),
            "ListSymbols": unary(servicer.ListSymbols, pb.ListSymbolsRequest),
            "GetRecentTicks": unary(servicer.GetRecentTicks, pb.GetRecentTicksRequest),
            "SubscribeCandles": grpc.unary_stream_rpc_method_handler(
                servicer.SubscribeCandles,
                request_deserializer=pb.SubscribeCandlesRequest.FromString,
                response_serializer=_passthrough,
            ),
            "GetTrades": unary(servicer.GetTrades, pb.GetTradesRequest),
            "SubscribeTrades": grpc.unary_stream_rpc_method_handler(
                servicer.SubscribeTrades,
                request_deserializer=pb.SubscribeTradesRequest.FromString,
                response_serializer=_passthrough,
            ),
            "GetVolumeProfile": unary(servicer.GetVolumeProfile, pb.GetVolumeProfileRequest),
        },
    )


def _check_free(address: str) -> None:
    """Refuse an address in use before gRPC tries it (and logs its own error)."""
    from candlewire.config import parse_listen

    host, port = parse_listen(address)
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host or "0.0.0.0", port))
        except OSError as error:
            raise ConfigError(
                f"grpc_listen (CANDLEWIRE_GRPC_LISTEN): cannot listen on {address}: "
                f"{error.strerror or error}"
            ) from None


class ApiServer:
    """Owns the ``grpc.aio`` server, its health servicer and its port."""

    def __init__(
        self,
        servicer: MarketDataServicer | None,
        address: str,
        *,
        gatekeeper: Gatekeeper | None = None,
        tls: CertificateFiles | None = None,
        tracing: grpc.aio.ServerInterceptor | None = None,
    ) -> None:
        """Without a servicer (an ingest-only process) it serves health and reflection.

        ``gatekeeper`` checks every call (authentication, limits, metrics);
        ``tls`` serves the port over TLS. :meth:`local_dispatcher` gives the
        HTTP faces of this process the same handlers behind the same policy.
        """
        self.health = HealthServicer()
        # Every handler behind the call policy, wrapped once per method (the
        # gatekeeper guards decoding itself; without one, the decode guard).
        policy: CallPolicy = gatekeeper if gatekeeper is not None else DecodeGuard()
        handlers: list[grpc.GenericRpcHandler] = []
        if servicer is not None:
            handlers.append(_handlers(servicer))
        handlers += collect_handlers(
            lambda server: health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        )
        handlers += collect_handlers(
            lambda server: enable_reflection(
                server,
                (
                    *((SERVICE_NAME,) if servicer is not None else ()),
                    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                ),
            )
        )
        self._handlers = PolicyHandlers(handlers, policy)
        # Tracing, when on, is the one interceptor: outermost, so refused calls are traced too.
        self._server = grpc.aio.server(
            options=server_options(), interceptors=(tracing,) if tracing is not None else None
        )
        self._server.add_generic_rpc_handlers((self._handlers,))
        _check_free(address)
        try:
            if tls is not None:
                self.port = self._server.add_secure_port(address, tls.grpc_credentials())
            else:
                self.port = self._server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if self.port == 0:
            raise ConfigError(
                f"grpc_listen (CANDLEWIRE_GRPC_LISTEN): cannot listen on {address} "
                "(address in use, or not an address of this host)"
            )
        self._address = address
        self.tls = tls is not None

    def local_dispatcher(self) -> LocalDispatcher:
        """The handlers of this server, behind its call policy, for in-process faces."""
        return LocalDispatcher(self._handlers)

    async def start(self) -> None:
        await self.health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._server.start()
        log.info(
            "gRPC listening on %s (port %d), %s",
            self._address,
            self.port,
            "TLS" if self.tls else "plaintext",
        )

    async def set_ready(self, ready: bool, dependencies: Mapping[str, bool] | None = None) -> None:
        """Readiness, and each dependency's state under its own health name
        (``DEPENDENCY_SERVICES``; one not in ``dependencies`` is unknown)."""
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        for name, service in DEPENDENCY_SERVICES.items():
            up = None if dependencies is None else dependencies.get(name)
            await self.health.set(
                service,
                health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
                if up is None
                else (serving if up else not_serving),
            )
        await self.health.set(SERVICE_NAME, serving if ready else not_serving)

    async def enter_shutdown(self) -> None:
        """Health NOT_SERVING for every service; no further changes."""
        await self.health.enter_graceful_shutdown()

    async def stop(self, grace: float) -> None:
        await self._server.stop(grace)

    async def wait(self) -> None:
        await self._server.wait_for_termination()
