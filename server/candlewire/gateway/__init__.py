"""grpc-web gateway: the browser's way into the gRPC API, and the web page.

:class:`Gateway` serves, on one HTTP port (HTTP/1.1 and HTTP/2), every unary
and server-streaming method of ``marketdata.v1.MarketDataService`` and
``grpc.health.v1.Health`` in both grpc-web wire modes (binary and base64
text), forwarded as raw bytes over one gRPC channel, with CORS for the
allowed origins, and the built page of ``clients/web`` for everything that is
not a call. Run it on its own with ``python -m candlewire.gateway``.
"""

from candlewire.gateway._cors import normalize_origin
from candlewire.gateway._methods import Kind, Method, MethodTable
from candlewire.gateway._server import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_STATIC_DIR,
    Gateway,
    channel_options,
)

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_STATIC_DIR",
    "Gateway",
    "Kind",
    "Method",
    "MethodTable",
    "channel_options",
    "normalize_origin",
]
