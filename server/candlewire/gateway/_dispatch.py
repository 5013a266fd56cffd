"""How the HTTP faces reach the handlers: in this process, or over a gRPC channel.

A face (grpc-web, Connect) turns an HTTP request into a :class:`Call` and the
request message's bytes, and hands them to a :class:`Dispatcher`; it gets
back the response message's bytes (unary) or an iterator of them (server
streaming), and a :class:`CallError` for any other status. Faces never see a
handler, a channel or a context.

- :class:`LocalDispatcher` (``candlewire serve``) calls the very handlers the
  gRPC server registered, behind the same call policy (the gatekeeper:
  authentication, scopes, limits, metrics; or the decode guard), with a
  :class:`LocalContext` standing in for ``grpc.aio``'s. Nothing is framed,
  parsed or scheduled twice, and validation, errors and limits are the gRPC
  port's by construction: there is one handler core.
- :class:`ChannelDispatcher` (``python -m candlewire.gateway --grpc-target``)
  forwards raw bytes over a ``grpc.aio`` channel to a server elsewhere.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeAlias

import grpc

from candlewire.api.outlet import Outlet
from candlewire.api.policy import PolicyHandlers
from candlewire.gateway._methods import Kind, MethodTable
from candlewire.gateway._wire import Metadata

__all__ = [
    "Call",
    "CallError",
    "ChannelDispatcher",
    "Dispatcher",
    "LocalContext",
    "LocalDispatcher",
    "Reply",
    "Responses",
    "collect_handlers",
]

log = logging.getLogger("candlewire.gateway")

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class CallError(Exception):
    """A call that ended with a status other than OK."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        trailing: Metadata = (),
        initial: Metadata = (),
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.trailing = trailing
        self.initial = initial

    def __repr__(self) -> str:
        return f"CallError({self.code.name}, {self.message!r})"


@dataclass(slots=True)
class Call:
    """One call as a face received it."""

    path: str
    """``/package.Service/Method``"""
    metadata: list[tuple[str, str | bytes]]
    """The request's metadata (credentials, ``x-forwarded-for``, custom keys)."""
    peer: str
    """The HTTP client as gRPC names peers: ``ipv4:10.0.0.7:51234``, ``ipv6:[::1]:80``."""
    timeout: float | None = None
    """Seconds the caller allows (``grpc-timeout``, ``connect-timeout-ms``)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A unary call's response message and metadata."""

    message: bytes
    initial: Metadata = ()
    trailing: Metadata = ()


class Responses(Protocol):
    """A server stream's response messages; raises :class:`CallError` for a status
    other than OK. ``initial`` is known once the first message (or the end) is
    read, ``trailing`` at the end. :meth:`aclose` ends the call early."""

    initial: Metadata
    trailing: Metadata

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class Dispatcher(Protocol):
    """Runs calls for the HTTP faces."""

    methods: MethodTable

    async def unary(self, call: Call, request: bytes) -> Reply:
        """The call's reply; raises :class:`CallError`."""
        ...

    def stream(self, call: Call, request: bytes, outlet: Outlet | None = None) -> Responses:
        """The call's responses (the call starts when they are first read).

        ``outlet``: the response, for a handler that writes live updates
        without its task (see :mod:`candlewire.api.outlet`); a dispatcher
        that cannot use it yields every message."""
        ...


def peer_of(client: tuple[str, int] | None) -> str:
    """gRPC's name for an HTTP client address (ASGI's ``scope["client"]``)."""
    if not client:
        return "unknown"
    host, port = client[0], client[1]
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


# --- in this process -------------------------------------------------------------------


class _Aborted(Exception):
    """Raised through the handler by :meth:`LocalContext.abort`."""

    def __init__(self, error: CallError) -> None:
        super().__init__(error)
        self.error = error


class LocalContext:
    """What a handler (and the call policy around it) may ask of its call.

    The subset of ``grpc.aio.ServicerContext`` that Candlewire's handlers,
    the gatekeeper, the decode guard and the health service use; anything
    else is an AttributeError, found by the tests that run every method
    through this face.
    """

    __slots__ = (
        "_code",
        "_deadline",
        "_details",
        "_metadata",
        "_peer",
        "_trailing",
        "_writes",
        "initial",
        "outlet",
    )

    def __init__(
        self,
        metadata: Sequence[tuple[str, str | bytes]],
        peer: str,
        deadline: float | None = None,
        writes: asyncio.Queue[Any] | None = None,
        outlet: Outlet | None = None,
    ) -> None:
        self._metadata = tuple(metadata)
        self._peer = peer
        self._deadline = deadline
        self._code: grpc.StatusCode | None = None
        self._details = ""
        self._trailing: Metadata = ()
        self._writes = writes
        self.initial: Metadata = ()
        self.outlet = outlet
        """Where a stream handler may write live updates itself (see
        :mod:`candlewire.api.outlet`)."""

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Metadata = ()
    ) -> NoReturn:
        self._code = code
        self._details = details
        raise _Aborted(CallError(code, details, tuple(trailing_metadata) or self._trailing))

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        await self.abort(status.code, status.details, status.trailing_metadata)

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def details(self) -> str:
        return self._details

    def set_details(self, details: str) -> None:
        self._details = details

    def set_trailing_metadata(self, metadata: Metadata) -> None:
        self._trailing = tuple(metadata)

    def trailing_metadata(self) -> Metadata:
        return self._trailing

    async def send_initial_metadata(self, metadata: Metadata) -> None:
        self.initial = tuple(metadata)

    def time_remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    async def write(self, message: Any) -> None:
        """A response of a handler that writes them (the health service's Watch)."""
        if self._writes is None:
            raise RuntimeError("write() on a unary call")
        await self._writes.put(message)

    def status(self) -> CallError | None:
        """A status the handler set without aborting (OK when None)."""
        code = self._code
        if code is None or code is grpc.StatusCode.OK:
            return None
        return CallError(code, self._details, self._trailing, self.initial)


def _unexpected(path: str, error: BaseException) -> CallError:
    log.error("handler of %s failed", path, exc_info=error)
    return CallError(grpc.StatusCode.UNKNOWN, f"Unexpected {type(error).__name__}")


def _deadline_exceeded() -> CallError:
    return CallError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


class _Collector:
    """Stands in for a ``grpc.aio.Server`` to take the generic handlers
    that a ``add_*Servicer_to_server`` function registers."""

    def __init__(self) -> None:
        self.handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self.handlers.extend(handlers)

    def add_registered_method_handlers(
        self, service: str, handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.handlers.append(grpc.method_handlers_generic_handler(service, dict(handlers)))


def collect_handlers(register: Callable[[Any], None]) -> list[grpc.GenericRpcHandler]:
    """The handlers ``register(server)`` adds to a server."""
    collector = _Collector()
    register(collector)
    return collector.handlers


class _LocalResponses:
    """A server stream run in this process.

    An async iterator over the handler's own generator (through the
    call policy's), not one more generator around it: each live update
    passes through one fewer frame. A deadline runs it in a generator
    under ``asyncio.timeout_at`` instead.
    """

    __slots__ = (
        "_call",
        "_context",
        "_dispatcher",
        "_encode",
        "_iterator",
        "_outlet",
        "_request",
        "_source",
        "initial",
        "trailing",
    )

    def __init__(
        self, dispatcher: LocalDispatcher, call: Call, request: bytes, outlet: Outlet | None
    ) -> None:
        self._dispatcher = dispatcher
        self._call = call
        self._request = request
        self._outlet = outlet
        self._iterator: AsyncIterator[bytes] | None = None
        self._source: AsyncIterator[Any] | None = None
        self._encode: Callable[[Any], bytes] | None = None
        self._context: LocalContext | None = None
        self.initial: Metadata = ()
        self.trailing: Metadata = ()

    def __aiter__(self) -> AsyncIterator[bytes]:
        if self._iterator is None:
            self._start()
            self._iterator = self if self._call.timeout is None else self._timed()
        return self._iterator

    def _start(self) -> None:
        call = self._call
        handler = self._dispatcher.handler(call.path)
        deadline = None
        if call.timeout is not None:
            deadline = asyncio.get_running_loop().time() + call.timeout
        behavior: Callable[..., Any] | None = handler.unary_stream
        if behavior is None:
            raise CallError(grpc.StatusCode.UNIMPLEMENTED, f"not a server stream: {call.path}")
        decode = handler.request_deserializer
        self._encode = handler.response_serializer
        request = decode(self._request) if decode is not None else self._request
        if inspect.isasyncgenfunction(behavior):
            context = LocalContext(call.metadata, call.peer, deadline, outlet=self._outlet)
            self._source = behavior(request, context)
        else:
            writes: asyncio.Queue[Any] = asyncio.Queue(maxsize=16)
            context = LocalContext(call.metadata, call.peer, deadline, writes)
            self._source = _written(behavior(request, context), writes)
        self._context = context

    async def __anext__(self) -> bytes:
        source, context = self._source, self._context
        assert source is not None and context is not None
        try:
            message = await source.__anext__()
        except StopAsyncIteration:
            self.initial = context.initial
            self.trailing = context.trailing_metadata()
            failed = context.status()
            if failed is not None:
                raise failed from None
            raise
        except _Aborted as aborted:
            raise aborted.error from None
        except (CallError, asyncio.CancelledError):
            raise
        except Exception as error:
            raise _unexpected(self._call.path, error) from None
        self.initial = context.initial
        encode = self._encode
        # (the service's handlers yield encoded bytes: no serializer call)
        return message if encode is None or type(message) is bytes else encode(message)

    async def _timed(self) -> AsyncIterator[bytes]:
        assert self._context is not None
        try:
            async with asyncio.timeout(self._call.timeout):
                while True:
                    try:
                        message = await self.__anext__()
                    except StopAsyncIteration:
                        return
                    yield message
        except TimeoutError:
            raise _deadline_exceeded() from None

    async def aclose(self) -> None:
        """End the call (the client went away): CANCELLED, as gRPC calls it."""
        context = self._context
        if context is not None and context.code() is None:
            context.set_code(grpc.StatusCode.CANCELLED)
        iterator, source = self._iterator, self._source
        if iterator is not None and iterator is not self and hasattr(iterator, "aclose"):
            await iterator.aclose()
        if source is not None and hasattr(source, "aclose"):
            await source.aclose()


_END = object()


async def _written(run: Awaitable[Any], writes: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    """The messages a writing handler puts in ``writes``, until it returns."""

    async def body() -> None:
        try:
            await run
        finally:
            await writes.put(_END)

    task = asyncio.ensure_future(body())
    try:
        while (message := await writes.get()) is not _END:
            yield message
        await task  # its error, if any
    finally:
        task.cancel()


class LocalDispatcher:
    """Calls the gRPC server's own handlers, behind its call policy, in this process."""

    def __init__(self, handlers: PolicyHandlers, methods: MethodTable | None = None) -> None:
        """``handlers``: the gRPC server's, already behind its call policy."""
        self.methods = methods or MethodTable()
        self._handlers: dict[str, Handler] = {}
        for path in self.methods:
            found = handlers.handler(path)
            if found is not None:
                self._handlers[path] = found

    def handler(self, path: str) -> Handler:
        found = self._handlers.get(path)
        if found is None:
            raise CallError(grpc.StatusCode.UNIMPLEMENTED, f"unknown method: {path}")
        return found

    async def unary(self, call: Call, request: bytes) -> Reply:
        handler = self.handler(call.path)
        behavior: Callable[..., Any] | None = handler.unary_unary
        if behavior is None:
            raise CallError(grpc.StatusCode.UNIMPLEMENTED, f"not a unary method: {call.path}")
        decode = handler.request_deserializer
        context = LocalContext(call.metadata, call.peer)
        try:
            decoded = decode(request) if decode is not None else request
            if call.timeout is None:
                result = await behavior(decoded, context)
            else:
                async with asyncio.timeout(call.timeout):
                    result = await behavior(decoded, context)
        except _Aborted as aborted:
            raise aborted.error from None
        except TimeoutError:
            raise _deadline_exceeded() from None
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise _unexpected(call.path, error) from None
        failed = context.status()
        if failed is not None:
            raise failed
        encode = handler.response_serializer
        message = result if encode is None else encode(result)
        return Reply(message, context.initial, context.trailing_metadata())

    def stream(self, call: Call, request: bytes, outlet: Outlet | None = None) -> Responses:
        return _LocalResponses(self, call, request, outlet)


# --- over a channel --------------------------------------------------------------------


def _metadata(value: Any) -> Metadata:
    return tuple(value) if value is not None else ()


def _failed(error: grpc.aio.AioRpcError) -> CallError:
    return CallError(
        error.code(),
        error.details() or "",
        _metadata(error.trailing_metadata()),
        _metadata(error.initial_metadata()),
    )


def _forwarded(call: Call) -> list[tuple[str, str | bytes]]:
    """The metadata with ``x-forwarded-for`` extended by the HTTP client's address.

    The gRPC server takes the client's address from it only because the
    gateway is a trusted proxy; what a browser wrote there stays to the left
    of the peer address, so it cannot choose its own address.
    """
    forwarded = [str(v) for k, v in call.metadata if k == "x-forwarded-for"]
    peer = call.peer
    if peer.startswith(("ipv4:", "ipv6:")):
        address = peer[5:].rpartition(":")[0]
        forwarded.append(address.strip("[]"))
    kept = [(k, v) for k, v in call.metadata if k != "x-forwarded-for"]
    if forwarded:
        kept.append(("x-forwarded-for", ", ".join(forwarded)))
    return kept


class _ChannelResponses:
    __slots__ = ("_call", "initial", "trailing")

    def __init__(self, call: grpc.aio.UnaryStreamCall[bytes, bytes]) -> None:
        self._call = call
        self.initial: Metadata = ()
        self.trailing: Metadata = ()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._read()

    async def _read(self) -> AsyncIterator[bytes]:
        call = self._call
        try:
            try:
                message = await call.read()
                self.initial = _metadata(await call.initial_metadata())
                while isinstance(message, bytes):
                    yield message
                    message = await call.read()
                code = await call.code()
            except grpc.aio.AioRpcError as error:
                raise _failed(error) from None
            self.trailing = _metadata(await call.trailing_metadata())
            if code is not grpc.StatusCode.OK:
                raise CallError(code, await call.details() or "", self.trailing, self.initial)
        finally:
            call.cancel()

    async def aclose(self) -> None:
        self._call.cancel()


class ChannelDispatcher:
    """Forwards calls, as raw bytes, over ``channel``."""

    def __init__(self, channel: grpc.aio.Channel, methods: MethodTable | None = None) -> None:
        self.methods = methods or MethodTable()
        self._unary: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {
            path: channel.unary_unary(path, request_serializer=None, response_deserializer=None)
            for path, method in self.methods.items()
            if method.kind is Kind.UNARY
        }
        self._streaming: dict[str, grpc.aio.UnaryStreamMultiCallable[bytes, bytes]] = {
            path: channel.unary_stream(path, request_serializer=None, response_deserializer=None)
            for path, method in self.methods.items()
            if method.kind is Kind.SERVER_STREAMING
        }

    async def unary(self, call: Call, request: bytes) -> Reply:
        multi = self._unary.get(call.path)
        if multi is None:
            raise CallError(grpc.StatusCode.UNIMPLEMENTED, f"unknown method: {call.path}")
        rpc = multi(request, metadata=_forwarded(call), timeout=call.timeout)
        try:
            reply: bytes = await rpc
            return Reply(
                reply,
                _metadata(await rpc.initial_metadata()),
                _metadata(await rpc.trailing_metadata()),
            )
        except grpc.aio.AioRpcError as error:
            raise _failed(error) from None
        finally:
            rpc.cancel()

    def stream(self, call: Call, request: bytes, outlet: Outlet | None = None) -> Responses:
        multi = self._streaming.get(call.path)
        if multi is None:
            raise CallError(grpc.StatusCode.UNIMPLEMENTED, f"unknown method: {call.path}")
        return _ChannelResponses(multi(request, metadata=_forwarded(call), timeout=call.timeout))
