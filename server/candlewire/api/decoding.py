"""Requests that do not decode end with INVALID_ARGUMENT, on every method of the port.

``grpc.aio`` runs a method's request deserializer before the handler; when it
raises (bytes that are not the request message), the call ends ``UNKNOWN``
("Unexpected DecodeError") and a traceback is logged for every such request.
:func:`guard` gives a handler (the service's, health's, reflection's) a
deserializer that cannot raise: bytes that do not decode become an
:class:`Undecodable` marker, and the wrapped handler ends the call with
``INVALID_ARGUMENT`` naming the message type before the method runs. Every
handler of the port is wrapped so, once (:mod:`candlewire.api.policy`): by
:class:`DecodeGuard` alone, or by the gatekeeper, which guards decoding
itself.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from google.protobuf.message import DecodeError

__all__ = ["DecodeGuard", "Undecodable", "guard", "guarded", "refuse"]

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class Undecodable:
    """What a guarded deserializer returns for bytes that are not its message."""

    __slots__ = ("description",)

    def __init__(self, description: str) -> None:
        self.description = description


def guarded(deserializer: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """``deserializer``, returning :class:`Undecodable` instead of raising."""
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", "the request message")

    def decode(data: bytes) -> Any:
        try:
            return deserializer(data)
        except (DecodeError, ValueError, TypeError) as error:
            detail = str(error).rsplit(": ", 1)[-1] if str(error) else type(error).__name__
            return Undecodable(f"the request is not a valid {name}: {detail}")

    return decode


async def refuse(context: Context, request: Undecodable) -> None:
    """End the call with INVALID_ARGUMENT naming the message type."""
    log.debug("refused an undecodable request: %s", request.description)
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.description)


def _unary_request(behavior: Callable[..., Any], streaming: bool) -> Callable[..., Any]:
    if streaming and inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            if isinstance(request, Undecodable):
                await refuse(context, request)
            async for response in behavior(request, context):
                yield response

        return stream

    async def unary(request: Any, context: Context) -> Any:
        if isinstance(request, Undecodable):
            await refuse(context, request)
        result = behavior(request, context)
        return await result if inspect.isawaitable(result) else result

    return unary


def _stream_request(behavior: Callable[..., Any]) -> Callable[..., Any]:
    async def checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Undecodable):
                await refuse(context, request)
            yield request

    if inspect.isasyncgenfunction(behavior):

        async def stream(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
            async for response in behavior(checked(requests, context), context):
                yield response

        return stream

    async def unary(requests: AsyncIterator[Any], context: Context) -> Any:
        result = behavior(checked(requests, context), context)
        return await result if inspect.isawaitable(result) else result

    return unary


def guard(handler: Handler) -> Handler:
    """``handler`` with a deserializer that cannot raise (see module docstring)."""
    deserializer = handler.request_deserializer
    if deserializer is None:
        return handler
    decode = guarded(deserializer)
    serialize = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _unary_request(handler.unary_unary, streaming=False), decode, serialize
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _unary_request(handler.unary_stream, streaming=True), decode, serialize
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _stream_request(handler.stream_unary), decode, serialize
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _stream_request(handler.stream_stream), decode, serialize
        )
    return handler


class DecodeGuard:
    """The call policy of a port with no gatekeeper: :func:`guard` alone
    (a :class:`~candlewire.api.policy.CallPolicy`)."""

    def wrap(self, method: str, handler: Handler) -> Handler:
        return guard(handler)
