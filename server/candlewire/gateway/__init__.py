"""The HTTP port: grpc-web and Connect, the web page, /metrics.

:class:`Gateway` serves, on one HTTP port (HTTP/1.1 and HTTP/2, on an embedded
Granian server), every unary and server-streaming method of
``marketdata.v1.MarketDataService`` and ``grpc.health.v1.Health`` in both
grpc-web wire modes (binary and base64 text) and the Connect protocol (JSON
or protobuf, GET for the reads without side effects), with CORS for the
allowed origins, and the built page of ``clients/web`` for everything that is
not a call. Inside ``candlewire serve`` calls run in-process on the gRPC
server's own handlers (:mod:`candlewire.gateway._dispatch`); on its own
(``python -m candlewire.gateway``) it forwards raw bytes over one channel.
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
