"""The one place where errors become gRPC status codes.

Invalid fields carry ``google.rpc.BadRequest`` details naming the field, and
limits carry ``google.rpc.RetryInfo`` where a retry delay applies, in the
standard ``grpc-status-details-bin`` trailer.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from candlewire.errors import (
    CandlewireError,
    DataExpired,
    DependencyUnavailable,
    InvalidArgument,
    LimitExceeded,
    NoData,
    ShuttingDown,
    StoreUnavailable,
    UnknownSymbol,
)

__all__ = ["abort", "status_of", "translate_errors", "translate_stream_errors"]

log = logging.getLogger(__name__)

S = TypeVar("S")
Q = TypeVar("Q")
R = TypeVar("R")

_CODES: list[tuple[type[CandlewireError], int]] = [
    (InvalidArgument, code_pb2.INVALID_ARGUMENT),
    (UnknownSymbol, code_pb2.NOT_FOUND),
    (DataExpired, code_pb2.OUT_OF_RANGE),
    (LimitExceeded, code_pb2.RESOURCE_EXHAUSTED),
    (NoData, code_pb2.UNAVAILABLE),
    (ShuttingDown, code_pb2.UNAVAILABLE),
    (DependencyUnavailable, code_pb2.UNAVAILABLE),
]


def _pack(message: error_details_pb2.BadRequest | error_details_pb2.RetryInfo) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _message(error: CandlewireError) -> str:
    """What the caller reads. A dependency's error names its host, port or
    reply: that stays in this process's log (and readiness reasons), and the
    caller gets a generic message."""
    if isinstance(error, StoreUnavailable):
        log.info("answering UNAVAILABLE: %s", error)
        return "the data store is unavailable; retry shortly"
    if isinstance(error, DependencyUnavailable):
        log.info("answering UNAVAILABLE: %s", error)
        return "a service this server depends on is unavailable; retry shortly"
    return str(error)


def status_of(error: CandlewireError) -> status_pb2.Status:
    """The google.rpc.Status a service error is reported as."""
    code = next((c for kind, c in _CODES if isinstance(error, kind)), code_pb2.INTERNAL)
    status = status_pb2.Status(code=code, message=_message(error))
    if isinstance(error, InvalidArgument | UnknownSymbol):
        description = error.description if isinstance(error, InvalidArgument) else str(error)
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=description
        )
        status.details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    if isinstance(error, LimitExceeded) and error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(error.retry_after * 1e9))
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status


async def abort(
    context: grpc.aio.ServicerContext[object, object], error: CandlewireError
) -> NoReturn:
    """End the call with the status of ``error``."""
    await context.abort_with_status(rpc_status.to_status(status_of(error)))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


Context = grpc.aio.ServicerContext[object, object]


def translate_errors(
    method: Callable[[S, Q, Context], Awaitable[R]],
) -> Callable[[S, Q, Context], Awaitable[R]]:
    """Decorate a unary handler: service errors become their status."""

    @functools.wraps(method)
    async def handler(self: S, request: Q, context: Context) -> R:
        try:
            return await method(self, request, context)
        except CandlewireError as error:
            await abort(context, error)

    return handler


def translate_stream_errors(
    method: Callable[[S, Q, Context], AsyncIterator[R]],
) -> Callable[[S, Q, Context], AsyncIterator[R]]:
    """Decorate a server-streaming handler: service errors become their status."""

    @functools.wraps(method)
    async def handler(self: S, request: Q, context: Context) -> AsyncIterator[R]:
        try:
            async for item in method(self, request, context):
                yield item
        except CandlewireError as error:
            await abort(context, error)

    return handler
