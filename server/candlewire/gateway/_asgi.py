"""The ASGI application: grpc-web and Connect calls, CORS, the page.

Routing is by method: ``POST`` is a call (``/package.Service/Method``): a
Connect one when its content type is Connect's (``application/json``,
``application/proto``, ``application/connect+json``/``+proto``: see
:mod:`candlewire.gateway._connect`), grpc-web otherwise. ``OPTIONS`` is a
CORS preflight; ``GET`` of a method's path is a Connect GET call, any other
``GET``/``HEAD`` a file of the built page (or ``/metrics``).

A call goes to the dispatcher (the handlers in this process, or a channel to
a server elsewhere: :mod:`candlewire.gateway._dispatch`). Its request headers
become metadata and ``grpc-timeout`` the deadline. The response headers wait
for the first response message, so an immediate error is answered
trailers-only (status in the headers, no body); after that, each message is
written as one frame, and the status follows in the final trailers frame.
A stream's writes go through its outlet (:mod:`candlewire.gateway._outlet`):
in-process, the hub writes live updates to a waiting stream itself. ``await
send(...)`` returns only when the transport has taken the bytes, so a slow
browser holds up its stream, whose updates then wait in the hub's bounded
queue, instead of growing a buffer here. The browser going away cancels the
call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from typing import Any

import grpc

from candlewire.gateway._connect import (
    BodyTooLarge,
    ClientGone,
    ConnectFace,
    Finisher,
    is_connect_request,
)
from candlewire.gateway._cors import EXPOSED_HEADERS, CorsPolicy, Verdict
from candlewire.gateway._dispatch import Call, CallError, Dispatcher, Reply, peer_of
from candlewire.gateway._methods import Kind, Method
from candlewire.gateway._outlet import ResponseOutlet
from candlewire.gateway._static import CONTENT_SECURITY_POLICY, StaticFiles
from candlewire.gateway._wire import (
    FrameCache,
    Metadata,
    ProtocolError,
    WireFormat,
    decode_request,
    encode_message,
    encode_trailers,
    metadata_from_headers,
    metadata_headers,
    parse_timeout,
    status_headers,
    wire_format,
)

__all__ = ["AsgiApp", "GrpcWebApp", "Receive", "Scope", "Send"]

log = logging.getLogger("candlewire.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]
"""An operator route's handler (a venue's login, say): a plain ASGI application."""

_FRAME_OVERHEAD = 5
_ALLOW = b"GET, HEAD, POST, OPTIONS"
_DRAIN_BYTES = 1024 * 1024
_DRAIN_SECONDS = 5.0
_COMMON = ((b"x-content-type-options", b"nosniff"),)
_PAGE_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


async def _plain(
    send: Send, status: int, text: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *_COMMON,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _Response:
    """The response of one call: headers once, data frames, then the status."""

    def __init__(self, send: Send, wire: WireFormat, verdict: Verdict) -> None:
        self.send = send
        self.wire = wire
        self._verdict = verdict
        self.started = False
        self.finished = False

    def _headers(self, pairs: list[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
        headers = [(b"content-type", self.wire.content_type), (b"vary", b"origin"), *_COMMON]
        if self._verdict.headers:
            exposed = dict.fromkeys([*EXPOSED_HEADERS, *(name for name, _ in pairs)])
            headers += self._verdict.headers
            headers.append((b"access-control-expose-headers", ", ".join(exposed).encode()))
        headers += [(name.encode("latin-1"), value.encode("latin-1")) for name, value in pairs]
        return headers

    def outlet(self, encode: Callable[[bytes, Any], bytes], form: Any) -> ResponseOutlet:
        """From now on, everything this response writes goes through an
        outlet, after what the hub wrote to it directly."""
        outlet = ResponseOutlet(self.send, encode, form)
        self.send = outlet.send
        return outlet

    async def start(self, initial: Metadata) -> None:
        headers = self._headers(metadata_headers(initial))
        self.started = True
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})

    async def reply(self, reply: Reply) -> None:
        """A unary call's response: headers, then the message and the status in one write."""
        self.started = self.finished = True
        wire = self.wire
        body = wire.encode(encode_message(reply.message)) + wire.encode(
            encode_trailers(grpc.StatusCode.OK, "", reply.trailing)
        )
        await self.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": self._headers(metadata_headers(reply.initial)),
            }
        )
        await self.send({"type": "http.response.body", "body": body})

    async def finish(
        self, code: grpc.StatusCode, message: str, trailing: Metadata, initial: Metadata = ()
    ) -> None:
        """The status: in a trailers frame, or trailers-only if nothing was sent yet."""
        if self.finished:
            return
        self.finished = True
        if self.started:
            frame = self.wire.encode(encode_trailers(code, message, trailing))
            await self.send({"type": "http.response.body", "body": frame, "more_body": False})
            return
        pairs = metadata_headers(initial) + status_headers(code, message, trailing)
        headers = self._headers(pairs)
        headers.append((b"content-length", b"0"))
        self.started = True
        await self.send({"type": "http.response.start", "status": 200, "headers": headers})
        await self.send({"type": "http.response.body", "body": b""})


def _unimplemented(path: str, method: Method | None) -> str:
    if path.startswith("/grpc.reflection."):
        return (
            f"server reflection is served on the gRPC port, not over grpc-web: {path} "
            "(give the client the schema instead, e.g. buf curl --schema protos)"
        )
    why = "unknown method" if method is None else f"{method.kind.value} is not grpc-web"
    return f"{why}: {path}"


METRICS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class GrpcWebApp:
    """Serves grpc-web and Connect calls through ``dispatcher``, and the page in
    ``static`` (if any)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        cors: CorsPolicy,
        static: StaticFiles | None,
        max_request_bytes: int,
        metrics: Callable[[], bytes] | None = None,
        routes: Mapping[str, AsgiApp] | None = None,
    ) -> None:
        self._routes = dict(routes or {})
        self._metrics = metrics
        self._cors = cors
        self._static = static
        self._max_request_bytes = max_request_bytes
        self._dispatcher = dispatcher
        self._methods = dispatcher.methods
        self.frames = self._frames = FrameCache()
        self._connect = ConnectFace(dispatcher, self)
        self.closing = False
        self.started = asyncio.Event()
        self._ending = asyncio.Event()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def max_request_bytes(self) -> int:
        """The largest request message accepted, in bytes."""
        return self._max_request_bytes

    @property
    def active_calls(self) -> int:
        """Calls in flight."""
        return self._active

    async def drain(self, grace: float) -> None:
        """Let calls in flight finish for ``grace`` seconds, then end them (UNAVAILABLE)."""
        self.closing = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()
        self._ending.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self._idle.wait()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
                self.started.set()
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._routes.get(scope["path"])
        if route is not None:
            await route(scope, receive, send)
            return
        method = scope["method"]
        if method == "POST":
            if is_connect_request(_header(scope, b"content-type") or ""):
                await self._connect_call(scope, receive, send)
            else:
                await self._call(scope, receive, send)
        elif method == "OPTIONS":
            await self._preflight(scope, send)
        elif method == "GET" and self._connect.is_method(scope["path"]):
            await self._connect_call(scope, receive, send)
        elif method in ("GET", "HEAD"):
            await self._file(scope, send, head=method == "HEAD")
        else:
            await _plain(send, 405, "method not allowed\n", ((b"allow", _ALLOW),))

    def _verdict(self, scope: Scope) -> Verdict:
        origin, host = _header(scope, b"origin"), _header(scope, b"host")
        return self._cors.check(origin, scheme=scope.get("scheme", "http"), host=host)

    async def _preflight(self, scope: Scope, send: Send) -> None:
        origin = _header(scope, b"origin")
        requested = _header(scope, b"access-control-request-method")
        if origin is None or requested is None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 204,
                    "headers": [(b"allow", _ALLOW), *_COMMON],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        verdict = self._verdict(scope)
        vary = (b"vary", b"origin, access-control-request-method, access-control-request-headers")
        if not verdict.allowed or requested.strip().upper() not in ("POST", "GET"):
            await _plain(send, 403, "cross-origin request refused\n", (vary,))
            return
        if not verdict.headers:  # a same-origin preflight: still answer it
            verdict = Verdict(True, ((b"access-control-allow-origin", origin.encode("latin-1")),))
        headers = CorsPolicy.preflight_headers(
            verdict, _header(scope, b"access-control-request-headers") or ""
        )
        await send(
            {"type": "http.response.start", "status": 204, "headers": [*headers, vary, *_COMMON]}
        )
        await send({"type": "http.response.body", "body": b""})

    async def _file(self, scope: Scope, send: Send, *, head: bool) -> None:
        if scope["path"] == "/metrics" and self._metrics is not None:
            body = self._metrics()
            headers = [
                (b"content-type", METRICS_CONTENT_TYPE),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *_COMMON,
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if head else body})
            return
        found = await self._static.get(scope["path"]) if self._static is not None else None
        if found is None:
            await _plain(send, 404, "not found\n")
            return
        headers = [
            (b"content-type", found.content_type),
            (b"etag", found.etag),
            (b"cache-control", b"no-cache"),
            *_COMMON,
        ]
        if found.is_html:
            headers += _PAGE_HEADERS
        if _header(scope, b"if-none-match") == found.etag.decode():
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        headers.append((b"content-length", str(len(found.body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if head else found.body})

    def _body_limit(self, wire: WireFormat) -> int:
        framed = self._max_request_bytes + _FRAME_OVERHEAD
        return (framed + 2) // 3 * 4 + 64 if wire.text_request else framed

    async def read_body(self, scope: Scope, receive: Receive, limit: int) -> bytes:
        """The request body, up to ``limit`` bytes.

        An oversized body is read to its end and dropped (up to ``_DRAIN_BYTES``
        within ``_DRAIN_SECONDS``), so that clients which send the whole body
        before reading the response get the status rather than a reset.
        """
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await self._drain_body(receive, int(declared))
            raise BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            if message["type"] != "http.request":
                continue
            chunk = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            size += len(chunk)
            if size > limit:
                if more:
                    await self._drain_body(receive, size)
                raise BodyTooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def drain_body(self, receive: Receive) -> None:
        """Read and drop the rest of a request that is answered without it."""
        await self._drain_body(receive, 0)

    @staticmethod
    async def _drain_body(receive: Receive, size: int) -> None:
        if size > _DRAIN_BYTES:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_SECONDS):
                while size <= _DRAIN_BYTES:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    size += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        verdict = self._verdict(scope)
        if not verdict.allowed:
            await _plain(send, 403, "cross-origin request refused\n", ((b"vary", b"origin"),))
            return
        wire = wire_format(_header(scope, b"content-type") or "", _header(scope, b"accept") or "")
        if wire is None:
            await _plain(
                send,
                415,
                "expected application/grpc-web(+proto) or application/grpc-web-text(+proto),"
                " or for Connect application/json, application/proto,"
                " application/connect+json or application/connect+proto\n",
                verdict.headers,
            )
            return
        response = _Response(send, wire, verdict)
        path = scope["path"]
        method = self._methods.get(path)
        if method is None or not method.kind.grpc_web:
            # Answered before the body is read: a streaming client (server
            # reflection, say) may keep its request open until it hears back.
            await response.finish(grpc.StatusCode.UNIMPLEMENTED, _unimplemented(path, method), ())
            await self._drain_body(receive, 0)
            return
        try:
            body = await self.read_body(scope, receive, self._body_limit(wire))
        except ClientGone:
            return
        except BodyTooLarge:
            await response.finish(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"request message larger than {self._max_request_bytes} bytes",
                (),
            )
            return
        if self.closing:
            await response.finish(grpc.StatusCode.UNAVAILABLE, "the gateway is shutting down", ())
            return
        try:
            request = decode_request(body, wire)
            timeout_header = _header(scope, b"grpc-timeout")
            call = Call(
                path,
                metadata_from_headers(scope["headers"]),
                peer_of(scope.get("client")),
                parse_timeout(timeout_header) if timeout_header is not None else None,
            )
        except ProtocolError as error:
            await response.finish(error.code, error.message, ())
            return
        if method.kind is Kind.UNARY:
            await self._unary(call, request, response)
        else:
            await self.supervise(self._pump_stream(call, request, response), receive, response)

    async def _connect_call(self, scope: Scope, receive: Receive, send: Send) -> None:
        verdict = self._verdict(scope)
        if not verdict.allowed:
            await _plain(send, 403, "cross-origin request refused\n", ((b"vary", b"origin"),))
            return
        await self._connect(scope, receive, send, verdict)

    @contextlib.contextmanager
    def tracked(self) -> Iterator[None]:
        """Counts a call as in flight while the block runs (for :meth:`drain`)."""
        self._active += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._active -= 1
            if not self._active:
                self._idle.set()

    async def _unary(self, call: Call, request: bytes, response: _Response) -> None:
        """A unary call: short, so it is awaited here (no watcher of the client)."""
        with self.tracked():
            try:
                reply = await self._dispatcher.unary(call, request)
            except CallError as error:
                await response.finish(error.code, error.message, error.trailing, error.initial)
                return
            except Exception as error:
                log.error("grpc-web call failed", exc_info=error)
                await response.finish(grpc.StatusCode.INTERNAL, "the call failed", ())
                return
            await response.reply(reply)

    async def supervise(self, pump: Awaitable[None], receive: Receive, response: Finisher) -> None:
        """Run the call until it ends, the client goes away or the gateway ends it."""
        self._active += 1
        self._idle.clear()
        call = asyncio.ensure_future(pump)
        gone = asyncio.ensure_future(_until_disconnect(receive))
        ending = asyncio.ensure_future(self._ending.wait())
        try:
            await asyncio.wait({call, gone, ending}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (call, gone, ending):
                task.cancel()
            await asyncio.gather(call, gone, ending, return_exceptions=True)
            self._active -= 1
            if not self._active:
                self._idle.set()
        if gone.done() and not gone.cancelled():
            return  # nobody to answer
        error = None if call.cancelled() else call.exception()
        if error is not None:
            log.error("streaming call failed", exc_info=error)
        if not response.finished:
            code, message = (
                (grpc.StatusCode.UNAVAILABLE, "the gateway is shutting down")
                if ending.done() and not ending.cancelled()
                else (grpc.StatusCode.INTERNAL, "the call failed")
            )
            with contextlib.suppress(Exception):
                await response.finish(code, message, ())

    async def _pump_stream(self, call: Call, request: bytes, response: _Response) -> None:
        outlet = response.outlet(self._frames.frame, response.wire)
        send = response.send
        responses = self._dispatcher.stream(call, request, outlet)
        try:
            async for message in responses:
                if not response.started:
                    await response.start(responses.initial)
                await send(
                    {"type": "http.response.body", "body": outlet.frame(message), "more_body": True}
                )
                outlet.ready = True
        except CallError as error:
            await response.finish(error.code, error.message, error.trailing, error.initial)
            return
        finally:
            outlet.detach()
            await responses.aclose()
        await response.finish(grpc.StatusCode.OK, "", responses.trailing, responses.initial)
