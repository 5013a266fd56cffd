"""Cross-origin rules: which browser origins may call the gateway.

Requests without an ``Origin`` header (curl, servers) and same-origin
requests (the page the gateway serves itself) are always allowed. Other
origins must be in the allow-list; ``*`` allows any origin but never with
credentials. Refused origins get no CORS headers, so the browser blocks the
response, and the gateway does not forward the call.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["ALLOWED_METHODS", "EXPOSED_HEADERS", "CorsPolicy", "Verdict", "normalize_origin"]

ALLOWED_METHODS = "GET, POST, OPTIONS"
EXPOSED_HEADERS = ("grpc-status", "grpc-message", "grpc-status-details-bin")
_ORIGIN = re.compile(r"^(https?)://([a-z0-9.\-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?$")
_DEFAULT_PORTS = {"http": ":80", "https": ":443"}
_HEADER_LIST = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~,\- ]*$")


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, default port dropped; ValueError if not an origin."""
    value = origin.strip().lower().rstrip("/")
    match = _ORIGIN.match(value)
    if match is None:
        raise ValueError(f"{origin!r} is not an origin (scheme://host[:port])")
    scheme, host, port = match.groups()
    if port == _DEFAULT_PORTS[scheme]:
        port = None
    return f"{scheme}://{host}{port or ''}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome for one request: whether it may proceed, and the headers to add."""

    allowed: bool
    headers: tuple[tuple[bytes, bytes], ...] = ()


class CorsPolicy:
    """Checks ``Origin`` against an allow-list of origins (or ``*``)."""

    def __init__(self, allowed_origins: Iterable[str]) -> None:
        origins = [o.strip() for o in allowed_origins if o.strip()]
        self.any_origin = "*" in origins
        self.origins = frozenset(normalize_origin(o) for o in origins if o != "*")

    def check(self, origin: str | None, *, scheme: str, host: str | None) -> Verdict:
        """The verdict for a request with this ``Origin``, arriving at ``scheme://host``."""
        if origin is None:
            return Verdict(True)
        try:
            normalized = normalize_origin(origin)
        except ValueError:
            return Verdict(False)  # "null" (sandboxed frames, file:) and junk
        if host is not None:
            try:
                if normalized == normalize_origin(f"{scheme}://{host}"):
                    return Verdict(True)  # same origin: no CORS headers needed
            except ValueError:
                pass
        if normalized in self.origins:
            headers = (
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-credentials", b"true"),
            )
            return Verdict(True, headers)
        if self.any_origin:
            return Verdict(True, ((b"access-control-allow-origin", origin.encode("latin-1")),))
        return Verdict(False)

    @staticmethod
    def preflight_headers(verdict: Verdict, requested_headers: str) -> list[tuple[bytes, bytes]]:
        """Headers answering an allowed preflight: GET, POST, and the headers asked for."""
        headers = [
            *verdict.headers,
            (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
            (b"access-control-max-age", b"7200"),
        ]
        if requested_headers and _HEADER_LIST.match(requested_headers):
            headers.append((b"access-control-allow-headers", requested_headers.encode("latin-1")))
        return headers
