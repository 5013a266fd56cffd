"""The options of a client, declared once, and their defaults from the environment.

:class:`ClientOptions` lists every keyword option that
:class:`~candlewire_client.aio.CandlewireClient` and
:class:`~candlewire_client.blocking.Client` take besides ``target`` and
``decimals``. The server address and the credentials come from the
environment when they are not given, as they do for the command line:

==========================  =========================================
``CANDLEWIRE_TARGET``       ``target`` (else ``localhost:50051``)
``CANDLEWIRE_API_KEY``      ``api_key`` (sent as ``x-api-key``)
``CANDLEWIRE_BEARER_TOKEN`` ``bearer_token`` (``authorization: Bearer``)
==========================  =========================================

An empty variable counts as unset. An argument always wins; ``api_key=""``
or ``bearer_token=""`` sends no credential whatever the environment says.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, TypedDict

from candlewire_client.retry import RetryPolicy

__all__ = [
    "DEFAULT_TARGET",
    "ENV_API_KEY",
    "ENV_BEARER_TOKEN",
    "ENV_TARGET",
    "ClientOptions",
    "check_options",
    "credential",
    "target_from",
]

DEFAULT_TARGET = "localhost:50051"
"""Where the client connects when neither ``target`` nor ``CANDLEWIRE_TARGET`` says."""

ENV_TARGET = "CANDLEWIRE_TARGET"
ENV_API_KEY = "CANDLEWIRE_API_KEY"
ENV_BEARER_TOKEN = "CANDLEWIRE_BEARER_TOKEN"


class ClientOptions(TypedDict, total=False):
    """Keyword options of :class:`CandlewireClient` and :class:`Client`.

    Every key is optional; the constructors take them as keyword arguments
    (``Client(target, api_key="...", timeout=5)``), and a dict of them can be
    passed on with ``**options``.
    """

    tls: bool
    """Connect with TLS (system roots); implied by any of the three PEM options."""
    root_certificates: bytes | None
    """PEM root certificates replacing the system roots (a private CA)."""
    private_key: bytes | None
    """PEM private key of the client (mutual TLS)."""
    certificate_chain: bytes | None
    """PEM certificate chain of the client (mutual TLS)."""
    api_key: str | None
    """Sent as ``x-api-key``; ``None``: ``CANDLEWIRE_API_KEY``; ``""``: none."""
    bearer_token: str | None
    """Sent as ``authorization: Bearer``; ``None``: ``CANDLEWIRE_BEARER_TOKEN``; ``""``: none."""
    metadata: Iterable[tuple[str, str]]
    """More ``(key, value)`` pairs sent with every call (lower-case keys, not ``-bin``)."""
    timeout: float | None
    """Deadline of each unary call in seconds (default 10; ``None``: none)."""
    keepalive: float
    """Seconds between keepalive pings, at least 10 (default 20)."""
    retry: RetryPolicy | None
    """Retry policy of unary calls and the default of subscriptions."""
    options: Iterable[tuple[str, Any]]
    """Extra gRPC channel arguments."""


_KNOWN = frozenset(ClientOptions.__annotations__)


def check_options(options: Mapping[str, object], owner: str) -> None:
    """Refuse unknown option names as a misspelt keyword argument would be refused."""
    unknown = sorted(set(options) - _KNOWN)
    if unknown:
        raise TypeError(f"{owner}() got an unexpected keyword argument {unknown[0]!r}")


def _env(name: str, environ: Mapping[str, str] | None) -> str | None:
    value = (os.environ if environ is None else environ).get(name, "")
    return value or None


def target_from(target: str | None, environ: Mapping[str, str] | None = None) -> str:
    """``target``, else ``CANDLEWIRE_TARGET``, else :data:`DEFAULT_TARGET`."""
    return target or _env(ENV_TARGET, environ) or DEFAULT_TARGET


def credential(
    value: str | None, variable: str, environ: Mapping[str, str] | None = None
) -> str | None:
    """A credential argument: ``None`` reads ``variable``; ``""`` means none."""
    if value is None:
        return _env(variable, environ)
    return value or None
