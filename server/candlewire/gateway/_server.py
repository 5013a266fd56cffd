"""The HTTP port's lifecycle: an embedded Granian server, and the dispatcher.

Granian (its HTTP/1.1 and HTTP/2 in Rust, hyper underneath) serves the ASGI
application in this process's event loop: cleartext HTTP/2 with prior
knowledge, or either protocol over TLS by ALPN. Chosen on this workload
against Hypercorn, Uvicorn and Granian's own RSGI (``bench/http_servers.py``):
4-6 times Hypercorn's requests/s on each protocol. Its ASGI ``send`` waits
while the client does not read (backpressure), ``receive`` reports a
vanished client as ``http.disconnect``, it takes over no signal handler, and
its logging is routed into the process's.

In ``candlewire serve`` the faces call the gRPC server's handlers in-process
(a :class:`~candlewire.gateway._dispatch.LocalDispatcher`); standing alone
(``python -m candlewire.gateway``) the gateway forwards over one channel.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
from granian.constants import HTTPModes, Interfaces, SSLProtocols
from granian.http import HTTP1Settings, HTTP2Settings
from granian.log import LogLevels
from granian.server.embed import Server

from candlewire.api.tls import CertificateFiles
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


def _reserve(host: str, port: int) -> socket.socket:
    """A bound, not listening socket on ``host:port`` (``port`` 0: a free one).

    The port is checked free first (a plain bind fails when anything listens
    there), then held with ``SO_REUSEPORT`` until the HTTP server, which
    binds its own listener with the same option, listens on it: so port 0
    works and the bound port is known.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port != 0:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


# Granian configures logging when a server is made: incrementally, so that
# nothing of the process's logging is replaced; its records go to ours.
_LOGGING: dict[str, Any] = {
    "version": 1,
    "incremental": True,
    "formatters": {},
    "handlers": {},
    "loggers": {
        "_granian": {"propagate": True},
        "granian.access": {"propagate": False},
    },
}


class Gateway:
    """grpc-web and Connect for ``dispatcher`` (in-process handlers) or the
    gRPC server at ``grpc_target`` (forwarded), plus the page.

    ``static_dir=None`` serves no files. ``allowed_origins`` lists the other
    origins whose pages may call the API (``*`` for any); the page served
    here is same-origin and needs no entry. ``max_request_bytes`` bounds a
    request message. A connection still sending its request line and
    headers after ``idle_timeout`` seconds is closed (one that sends nothing
    at all is not: Granian has no such timer). ``tls`` serves HTTPS from
    certificate files, following their rotation. ``routes`` maps exact paths to operator
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
        tls: CertificateFiles | None = None,
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
        self.tls = tls
        self.metrics = metrics
        self.routes = dict(routes or {})
        """Operator routes: exact path -> ASGI handler, served before the page and the API."""
        self._port: int | None = None
        self._channel: grpc.aio.Channel | None = None
        self._app: GrpcWebApp | None = None
        self._server: Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._watching: asyncio.Task[None] | None = None
        self.certificate_reloads = 0
        """Rotations of the certificate files the HTTP port serves since start."""
        self.rotated = asyncio.Event()
        """Set once the HTTP port serves rotated certificate files."""
        self._closed = False

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        if self._port is None:
            raise RuntimeError("the gateway is not started")
        return self._port

    @property
    def frames_encoded(self) -> int:
        """grpc-web data frames made (a message shared by streams is framed once)."""
        return self._app.frames.encoded if self._app is not None else 0

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
        reserved = _reserve(host, port)
        try:
            self._port = reserved.getsockname()[1]
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
            self._server = server = self._granian(host, self._port)
            self._serving = serving = asyncio.create_task(server.serve(), name="gateway-http")
            # serve() binds and listens before it first waits.
            for _ in range(3):
                await asyncio.sleep(0)
        finally:
            reserved.close()
        if serving.done():
            if self._channel is not None:
                await self._channel.close()
            serving.result()  # raises what stopped the server
            raise RuntimeError("the HTTP server stopped at start-up")
        if self.tls is not None:
            self._watching = asyncio.create_task(self._watch_certificates(), name="gateway-tls")
        scheme = "https" if self.tls is not None else "http"
        log.info(
            "HTTP on %s://%s:%d (grpc-web, Connect%s)",
            scheme,
            host,
            self._port,
            f" -> {self.grpc_target}" if self.grpc_target is not None else "; in-process",
        )

    def _granian(self, host: str, port: int) -> Server:
        """Granian, embedded in this event loop: HTTP/1.1 and HTTP/2 (h2c with
        prior knowledge, or ALPN over TLS), served by its Rust runtime."""
        tls = self.tls
        idle_ms = max(1, int(self.idle_timeout * 1000))
        server = Server(
            self._app,
            address=host,
            port=port,
            interface=Interfaces.ASGINL,
            http=HTTPModes.auto,
            websockets=False,
            runtime_threads=1,
            backlog=1024,
            # A connection's request line and headers must arrive within the
            # idle timeout: idle keep-alive connections and ones that trickle
            # their headers are closed.
            http1_settings=HTTP1Settings(header_read_timeout=idle_ms, keep_alive=True),
            http2_settings=HTTP2Settings(
                keep_alive_interval=30_000, keep_alive_timeout=10, max_concurrent_streams=1000
            ),
            log_level=LogLevels.error,
            log_dictconfig=_LOGGING,
            ssl_cert=tls.cert_file if tls is not None else None,
            ssl_key=tls.key_file if tls is not None else None,
            ssl_ca=tls.client_ca_file if tls is not None else None,
            ssl_client_verify=tls is not None and tls.mutual,
            ssl_protocol_min=SSLProtocols.tls12,
        )
        # On a certificate rotation the new worker starts before the old
        # one stops accepting; in-flight calls end when the old one is gone.
        server.respawn_interval = 0.5
        server.workers_kill_timeout = int(self.shutdown_grace + 3)
        return server

    async def _watch_certificates(self) -> None:
        """Serve rotated certificate files: Granian reads them when its
        worker starts, so a change respawns the worker (new connections get
        the new certificate; open ones end, and clients reconnect)."""
        tls, server = self.tls, self._server
        assert tls is not None and server is not None
        seen = tls.reloads
        while True:
            await asyncio.sleep(max(tls.check_interval, 0.05))
            await asyncio.to_thread(tls.refresh)
            if tls.reloads == seen:
                continue
            seen = tls.reloads
            old = list(server.wrks)
            server.reload()  # type: ignore[no-untyped-call]
            async with asyncio.timeout(self.shutdown_grace + 10):
                # Granian respawns on its own schedule and signals nothing: look.
                while any(  # noqa: ASYNC110
                    worker in server.wrks or worker.is_alive()  # type: ignore[no-untyped-call]
                    for worker in old
                ):
                    await asyncio.sleep(0.05)
            self.certificate_reloads += 1
            self.rotated.set()
            log.info("HTTP port: serving the rotated certificate")

    def close(self) -> None:
        """Stop accepting: refuse new calls now and close the listener."""
        if self._app is not None:
            self._app.closing = True
        if self._watching is not None:
            self._watching.cancel()
        if self._server is not None and not self._server.interrupt_signal:
            self._server.stop()  # type: ignore[no-untyped-call]

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
