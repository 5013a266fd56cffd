"""Retry and reconnect policy: jittered, capped exponential backoff.

A subscription retries without limit by default (it is meant to run for
days); unary calls retry a few times within their deadline. Which errors are
worth a retry is decided by :func:`is_retryable`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

from candlewire_client.errors import CandlewireError

__all__ = ["RetryPolicy", "is_retryable"]

_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
    }
)
# Transport failures that some proxies and gRPC versions report as INTERNAL or UNKNOWN.
_TRANSPORT_HINTS = ("RST_STREAM", "Socket closed", "Connection reset", "GOAWAY", "Stream removed")


def is_retryable(error: CandlewireError) -> bool:
    """Whether a retry (with the same request) can succeed.

    UNAVAILABLE (server down or restarting, connection lost), RESOURCE_EXHAUSTED
    (a stream that fell behind, too many streams), CANCELLED by the server and
    ABORTED are; so are INTERNAL/UNKNOWN errors that describe a broken
    transport. A RESOURCE_EXHAUSTED raised locally for an oversized message is
    not, nor is anything about the request itself (INVALID_ARGUMENT, NOT_FOUND,
    OUT_OF_RANGE, UNAUTHENTICATED, PERMISSION_DENIED ...).
    """
    if error.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in error.details:
        return False
    if error.code in _RETRYABLE:
        return True
    if error.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        return any(hint in error.details for hint in _TRANSPORT_HINTS)
    return False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the client waits between attempts.

    The n-th consecutive failure waits ``initial * multiplier ** (n - 1)``
    seconds, capped at ``maximum``, times a random factor in
    ``[1 - jitter, 1 + jitter]`` (and never more than ``maximum``, nor less
    than a delay the server asked for with RetryInfo). A subscription that
    stayed connected for ``reset_after`` seconds counts as healthy: its next
    failure starts again from ``initial``. ``max_attempts`` bounds the
    consecutive reconnects of a subscription (``None``: no bound);
    ``unary_attempts`` is the number of tries of a unary call (1: no retry),
    all within the call's deadline.
    """

    initial: float = 0.25
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    reset_after: float = 10.0
    max_attempts: int | None = None
    unary_attempts: int = 3

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError("RetryPolicy needs 0 < initial <= maximum")
        if self.multiplier < 1 or not 0 <= self.jitter < 1:
            raise ValueError("RetryPolicy needs multiplier >= 1 and 0 <= jitter < 1")
        if self.max_attempts is not None and self.max_attempts < 0:
            raise ValueError("RetryPolicy.max_attempts must not be negative")
        if self.unary_attempts < 1:
            raise ValueError("RetryPolicy.unary_attempts must be at least 1")

    def delay(self, attempt: int, server_delay: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt`` (1 for the first retry)."""
        exponent = min(max(attempt - 1, 0), 64)
        base = min(self.maximum, self.initial * self.multiplier**exponent)
        delay = min(self.maximum, base * random.uniform(1 - self.jitter, 1 + self.jitter))
        if server_delay is not None:
            delay = max(delay, server_delay)
        return delay
