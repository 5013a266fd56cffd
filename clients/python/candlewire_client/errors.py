"""The client's exception tree: one class per family of gRPC status codes.

::

    CandlewireError                  any failed call (code, details, field_violations)
    ├── InvalidArgumentError         INVALID_ARGUMENT, FAILED_PRECONDITION (also a ValueError)
    ├── NotFoundError                NOT_FOUND: for example an unknown symbol
    ├── OutOfRangeError              OUT_OF_RANGE: a resume token whose data expired
    ├── ResourceExhaustedError       RESOURCE_EXHAUSTED: a limit; see retry_delay
    ├── UnavailableError             UNAVAILABLE: server down, restarting or without data yet
    ├── DeadlineExceededError        DEADLINE_EXCEEDED: the call's timeout passed
    ├── AuthError                    UNAUTHENTICATED, PERMISSION_DENIED
    ├── CallCancelledError           CANCELLED by the server or a proxy
    └── ServerError                  INTERNAL, UNKNOWN, UNIMPLEMENTED, DATA_LOSS, ABORTED

Errors raised before anything is sent (a bad interval string, a time that is
not ISO 8601) are :class:`InvalidArgumentError` too, with the argument named in
``field_violations``; their ``code`` is ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "AuthError",
    "CallCancelledError",
    "CandlewireError",
    "DeadlineExceededError",
    "FieldViolation",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "ResourceExhaustedError",
    "ServerError",
    "UnavailableError",
    "from_rpc_error",
]

_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field, from ``google.rpc.BadRequest`` (``series[2].interval``)."""

    field: str
    description: str


class CandlewireError(Exception):
    """A call failed. ``code`` is the gRPC status code and ``details`` its message.

    ``field_violations`` lists the invalid request fields the server named
    (``google.rpc.BadRequest``), and ``retry_delay`` is the delay in seconds the
    server asked for before a retry (``google.rpc.RetryInfo``), if any.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        *,
        field_violations: Iterable[FieldViolation] = (),
        retry_delay: float | None = None,
    ) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.field_violations = tuple(field_violations)
        self.retry_delay = retry_delay

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (type(self), self.code, self.details, self.field_violations, self.retry_delay),
        )


def _rebuild(
    cls: type[CandlewireError],
    code: grpc.StatusCode,
    details: str,
    violations: tuple[FieldViolation, ...],
    retry_delay: float | None,
) -> CandlewireError:
    return cls(code, details, field_violations=violations, retry_delay=retry_delay)


class InvalidArgumentError(CandlewireError, ValueError):
    """A request field is invalid; ``field_violations`` names it."""

    @classmethod
    def local(cls, field: str, description: str) -> InvalidArgumentError:
        """An argument refused by the client before anything was sent."""
        return cls(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field}: {description}",
            field_violations=[FieldViolation(field, description)],
        )


class NotFoundError(CandlewireError):
    """The symbol (or other named thing) is not served by this deployment."""


class OutOfRangeError(CandlewireError):
    """A position is no longer retained: a resume token or page of expired data.

    Retrying does not help; start a new subscription (without a resume token).
    """


class ResourceExhaustedError(CandlewireError):
    """A limit was hit (streams per server, a subscriber falling behind).

    ``retry_delay`` is the server's advice in seconds, when it gave one.
    """


class UnavailableError(CandlewireError):
    """The server cannot be reached, is shutting down, or has no data for the request yet."""


class DeadlineExceededError(CandlewireError):
    """The call did not finish within its timeout."""


class AuthError(CandlewireError):
    """The credentials were missing or invalid (UNAUTHENTICATED), or not allowed
    (PERMISSION_DENIED)."""


class CallCancelledError(CandlewireError):
    """The server or a proxy cancelled the call (a local cancellation raises
    ``asyncio.CancelledError`` instead)."""


class ServerError(CandlewireError):
    """The server failed (INTERNAL, UNKNOWN, DATA_LOSS) or does not implement the call."""


_CLASSES: dict[grpc.StatusCode, type[CandlewireError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRangeError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAUTHENTICATED: AuthError,
    grpc.StatusCode.PERMISSION_DENIED: AuthError,
    grpc.StatusCode.CANCELLED: CallCancelledError,
}


def _status_details(
    trailing_metadata: Iterable[tuple[str, str | bytes]] | None,
) -> tuple[list[FieldViolation], float | None]:
    violations: list[FieldViolation] = []
    retry_delay: float | None = None
    for key, value in trailing_metadata or ():
        if key != _DETAILS_KEY or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except DecodeError:
            continue
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(
                    FieldViolation(v.field, v.description) for v in bad.field_violations
                )
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                retry_delay = info.retry_delay.ToNanoseconds() / 1e9
    return violations, retry_delay


def from_rpc_error(error: grpc.RpcError) -> CandlewireError:
    """The :class:`CandlewireError` of a failed gRPC call (sync or asyncio).

    The ``google.rpc.Status`` in the ``grpc-status-details-bin`` trailer is
    parsed for ``BadRequest`` field violations and ``RetryInfo``; malformed
    details are ignored rather than hiding the error itself.
    """
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN
    details = ""
    trailing: Any = None
    if isinstance(error, grpc.Call | grpc.aio.AioRpcError):
        code = error.code()
        details = error.details() or ""
        trailing = error.trailing_metadata()
    violations, retry_delay = _status_details(trailing)
    cls = _CLASSES.get(code, ServerError)
    return cls(code, details or code.name, field_violations=violations, retry_delay=retry_delay)
