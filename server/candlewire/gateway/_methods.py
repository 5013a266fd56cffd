"""Which gRPC methods the gateway serves, from the generated descriptors.

The kind of each method (unary or server streaming) is read from the
protobuf descriptors of the generated modules, so the gateway needs no code
per method: a method added to ``marketdata.proto`` is served once the Python
code is regenerated. Client and bidirectional streaming cannot be carried by
grpc-web and are listed as such.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import cast

from google.protobuf.descriptor import FileDescriptor
from grpc_health.v1 import health_pb2

from candlewire_protos.marketdata.v1 import marketdata_pb2

__all__ = ["DEFAULT_FILES", "Kind", "Method", "MethodTable"]

DEFAULT_FILES: tuple[FileDescriptor, ...] = (
    marketdata_pb2.DESCRIPTOR,
    cast(FileDescriptor, health_pb2.DESCRIPTOR),
)
"""The files whose services the gateway exposes: MarketDataService and Health."""


class Kind(enum.Enum):
    """How requests and responses flow."""

    UNARY = "unary"
    SERVER_STREAMING = "server_streaming"
    CLIENT_STREAMING = "client_streaming"
    BIDI_STREAMING = "bidi_streaming"

    @property
    def grpc_web(self) -> bool:
        """Whether grpc-web can carry the method (one request message)."""
        return self in (Kind.UNARY, Kind.SERVER_STREAMING)


@dataclass(frozen=True, slots=True)
class Method:
    """One method, named by its HTTP path ``/package.Service/Method``."""

    path: str
    kind: Kind


class MethodTable(Mapping[str, Method]):
    """The methods of the services declared in ``files``, by path."""

    def __init__(self, files: Iterable[FileDescriptor] = DEFAULT_FILES) -> None:
        methods: dict[str, Method] = {}
        for file in files:
            for service in file.services_by_name.values():
                for method in service.methods:
                    path = f"/{service.full_name}/{method.name}"
                    if method.client_streaming and method.server_streaming:
                        kind = Kind.BIDI_STREAMING
                    elif method.client_streaming:
                        kind = Kind.CLIENT_STREAMING
                    elif method.server_streaming:
                        kind = Kind.SERVER_STREAMING
                    else:
                        kind = Kind.UNARY
                    methods[path] = Method(path, kind)
        self._methods = methods

    def __getitem__(self, path: str) -> Method:
        return self._methods[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._methods)

    def __len__(self) -> int:
        return len(self._methods)
