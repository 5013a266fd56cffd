"""Errors of the Saxo feed, in the service's exception tree.

::

    CandlewireError
    ├── ConfigError               a configured symbol is not a Saxo FX spot instrument;
    │                             the app key is missing
    ├── SaxoError                 Saxo answered something this client cannot use: an
    │                             unexpected 4xx, a malformed payload or frame. Not retried
    │                             by the request that got it; the stream reconnects.
    ├── LoginRequired             no usable refresh token (none yet, expired, revoked, or
    │                             Saxo sent ``_disconnect``): an operator must log in again
    │                             (``/auth/saxo/login`` or ``candlewire saxo login``)
    └── DependencyUnavailable
        └── SaxoUnavailable       network error, timeout, 5xx, 429 beyond patience: retried
                                  with backoff by the feed.

No message of these errors ever holds a token, a code or the app secret:
they are built from status codes and Saxo's ``ErrorCode`` fields only.
"""

from __future__ import annotations

from candlewire.errors import CandlewireError, DependencyUnavailable

__all__ = ["LoginRequired", "SaxoError", "SaxoUnavailable"]


class SaxoError(CandlewireError):
    """Saxo answered something this client cannot use.

    ``status`` is the HTTP status when there was one; ``code`` Saxo's
    ``ErrorCode`` when the answer carried one.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class SaxoUnavailable(DependencyUnavailable):
    """Saxo cannot be reached right now (retried with backoff)."""


class LoginRequired(CandlewireError):
    """The refresh chain is broken: the feed waits for an operator to log in."""
