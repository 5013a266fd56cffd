"""The gateway's lifecycle: a Hypercorn server and one gRPC channel.

Hypercorn serves HTTP/1.1 and HTTP/2 (cleartext with prior knowledge, or
over TLS when a reverse proxy does not terminate it), awaits the transport
on every ``send`` (backpressure), reports a vanished client as
``http.disconnect``, and shuts down on a trigger without touching signal
handlers, so :class:`Gateway` can be embedded in the service's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import cast

import grpc
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.typing import ASGIFramework

from candlewire.gateway import _h2fix
from candlewire.gateway._asgi import AsgiApp, GrpcWebApp
from candlewire.gateway._cors import CorsPolicy
from candlewire.gateway._dispatch import ChannelDispatcher, Dispatcher
from candlewire.gateway._static import StaticFiles

__all__ = ["DEFAULT_MAX_REQUEST_BYTES", "DEFAULT_STATIC_DIR", "Gateway", "channel_options"]

log = logging.getLogger("candlewire.gateway")

DEFAULT_STATIC_DIR = Path(__file__).resolve().parent / "static"
"""The built page shipped in the package (``npm run build`` in ``clients/web``)."""

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024
"""Requests of this API are small: a watchlist of 1000 symbols is ~12 KiB."""

_MiB = 1024 * 1024


def channel_options() -> list[tuple[str, int]]:
    """Options of the upstream channel.

    Responses of up to 16 MiB (the server's send limit); pings every 30 s
    (the server accepts one per 10 s) so a dead upstream is noticed; quick
    reconnects (at most 2 s apart) so browsers resume soon after a restart.
    """
    return [
        ("grpc.max_receive_message_length", 16 * _MiB),
        ("grpc.max_send_message_length", 1 * _MiB),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
        ("grpc.enable_retries", 0),
    ]


class _Config(Config):
    """Hypercorn's settings, with an SSL context made (and reloaded) by its owner."""

    ssl_context: ssl.SSLContext | None = None

    @property
    def ssl_enabled(self) -> bool:
        return self.ssl_context is not None

    def create_ssl_context(self) -> ssl.SSLContext | None:
        return self.ssl_context


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Gateway:
    """grpc-web in front of the gRPC server at ``grpc_target``, plus the page.

    ``static_dir=None`` serves no files. ``allowed_origins`` lists the other
    origins whose pages may call the API (``*`` for any); the page served
    here is same-origin and needs no entry. ``max_request_bytes`` bounds a
    request message. A connection without a request in progress (idle
    between requests, or still sending its headers) is closed after
    ``idle_timeout`` seconds. ``routes`` maps exact paths to operator
    handlers (plain ASGI applications, such as a venue's login), served before
    the API and the page; each decides itself who may use it.

    Shutdown has two steps so the owner can interleave them with the gRPC
    server's: :meth:`close` stops accepting (at once: new calls are refused
    with UNAVAILABLE and the listener closes), :meth:`wait_closed` lets calls
    in flight end (they end when the gRPC server ends them) for up to
    ``shutdown_grace`` seconds, ends the rest with UNAVAILABLE, and closes the
    channel. :meth:`stop` does both.
    """

    def __init__(
        self,
        grpc_target: str | None = None,
        *,
        dispatcher: Dispatcher | None = None,
        static_dir: Path | str | None = DEFAULT_STATIC_DIR,
        allowed_origins: Iterable[str] = (),
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        shutdown_grace: float = 5.0,
        idle_timeout: float = 20.0,
        grpc_credentials: grpc.ChannelCredentials | None = None,
        ssl_context: ssl.SSLContext | None = None,
        metrics: Callable[[], bytes] | None = None,
        routes: Mapping[str, AsgiApp] | None = None,
    ) -> None:
        if (grpc_target is None) == (dispatcher is None):
            raise ValueError("give either grpc_target or dispatcher")
        if idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        if max_request_bytes < 1:
            raise ValueError("max_request_bytes must be positive")
        if shutdown_grace < 0:
            raise ValueError("shutdown_grace must not be negative")
        self.grpc_target = grpc_target
        self.dispatcher = dispatcher
        self.static = StaticFiles(Path(static_dir)) if static_dir is not None else None
        self.cors = CorsPolicy(allowed_origins)  # raises ValueError for a malformed origin
        self.max_request_bytes = max_request_bytes
        self.shutdown_grace = shutdown_grace
        self.idle_timeout = idle_timeout
        self.grpc_credentials = grpc_credentials
        self.ssl_context = ssl_context
        self.metrics = metrics
        self.routes = dict(routes or {})
        """Operator routes: exact path -> ASGI handler, served before the page and the API."""
        self._port: int | None = None
        self._channel: grpc.aio.Channel | None = None
        self._app: GrpcWebApp | None = None
        self._config: Config | None = None
        self._shutdown = asyncio.Event()
        self._serving: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        if self._port is None:
            raise RuntimeError("the gateway is not started")
        return self._port

    @property
    def active_calls(self) -> int:
        """grpc-web calls in flight."""
        return self._app.active_calls if self._app is not None else 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` and serve until :meth:`stop`."""
        if self._serving is not None:
            raise RuntimeError("the gateway is already started")
        if self.static is not None and not self.static.exists():
            log.warning("no web page in %s (cd clients/web && npm run build)", self.static.root)
        _h2fix.install()
        sock = _listen(host, port)
        self._port = sock.getsockname()[1]
        dispatcher = self.dispatcher
        if dispatcher is None:
            assert self.grpc_target is not None
            if self.grpc_credentials is not None:
                self._channel = grpc.aio.secure_channel(
                    self.grpc_target, self.grpc_credentials, options=channel_options()
                )
            else:
                self._channel = grpc.aio.insecure_channel(
                    self.grpc_target, options=channel_options()
                )
            dispatcher = ChannelDispatcher(self._channel)
        self._app = GrpcWebApp(
            dispatcher,
            cors=self.cors,
            static=self.static,
            max_request_bytes=self.max_request_bytes,
            metrics=self.metrics,
            routes=self.routes,
        )
        config = _Config()
        config.ssl_context = self.ssl_context
        config.bind = [f"fd://{sock.detach()}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("candlewire.gateway.http")
        config.graceful_timeout = self.shutdown_grace + 2.0
        # Hypercorn's idle timer runs from a connection's start until a
        # request's headers are complete, and again between requests: it
        # closes both idle keep-alive connections and ones that trickle their
        # headers. (Its read_timeout would also end a streaming response whose
        # client sends nothing, so it stays off.)
        config.keep_alive_timeout = self.idle_timeout
        config.include_server_header = False
        self._config = config
        self._serving = serving = asyncio.create_task(
            serve(cast(ASGIFramework, self._app), config, shutdown_trigger=self._shutdown.wait),
            name="gateway-http",
        )
        started = asyncio.ensure_future(self._app.started.wait())
        await asyncio.wait({serving, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if serving.done():
            if self._channel is not None:
                await self._channel.close()
            serving.result()  # raises what stopped Hypercorn
            raise RuntimeError("the HTTP server stopped at start-up")
        scheme = "https" if self.ssl_context is not None else "http"
        log.info(
            "HTTP on %s://%s:%d (grpc-web%s)",
            scheme,
            host,
            self._port,
            f" -> {self.grpc_target}" if self.grpc_target is not None else ", in-process",
        )

    def close(self) -> None:
        """Stop accepting: refuse new calls now and close the listener."""
        if self._app is not None:
            self._app.closing = True
        self._shutdown.set()

    async def wait_closed(self) -> None:
        """Wait for calls in flight (ending the rest after the grace), then release everything."""
        if self._closed:
            return
        self.close()
        try:
            if self._app is not None:
                await self._app.drain(self.shutdown_grace)
            if self._serving is not None:
                await self._serving
        finally:
            self._closed = True
            if self._channel is not None:
                await self._channel.close()

    async def stop(self) -> None:
        """:meth:`close`, then :meth:`wait_closed`."""
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        target = self.grpc_target or "in-process"
        return f"Gateway({target!r}, port={self._port})"
