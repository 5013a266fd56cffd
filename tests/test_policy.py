"""The call policy is applied where handlers are registered, once per method."""

from __future__ import annotations

from typing import Any

import grpc

from candlewire.api.policy import PolicyHandlers
from candlewire.app import App

SERVICE = "marketdata.v1.MarketDataService"


class CountingPolicy:
    def __init__(self) -> None:
        self.wrapped: list[str] = []

    def wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> Any:
        self.wrapped.append(method)
        return grpc.unary_unary_rpc_method_handler(handler.unary_unary)


def _echo(request: bytes, context: Any) -> bytes:
    return request


def test_each_method_is_wrapped_once_and_unknown_paths_are_not_kept() -> None:
    policy = CountingPolicy()
    generic = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "GetPrice": grpc.unary_unary_rpc_method_handler(_echo),
            "ListSymbols": grpc.unary_unary_rpc_method_handler(_echo),
        },
    )
    handlers = PolicyHandlers([generic], policy)
    first = handlers.handler(f"/{SERVICE}/GetPrice")
    assert first is not None and first.unary_unary is _echo
    assert handlers.handler(f"/{SERVICE}/GetPrice") is first
    assert handlers.handler(f"/{SERVICE}/ListSymbols") is not first
    for n in range(100):
        assert handlers.handler(f"/{SERVICE}/Nope{n}") is None
    assert policy.wrapped == [f"/{SERVICE}/GetPrice", f"/{SERVICE}/ListSymbols"]


async def test_the_grpc_port_and_the_http_faces_call_the_same_wrapped_handlers(app: App) -> None:
    """The in-process faces get the very handler objects the gRPC port serves."""
    assert app.api is not None
    dispatcher = app.api.local_dispatcher()
    for method in ("GetPrice", "GetCandles", "SubscribeCandles"):
        path = f"/{SERVICE}/{method}"
        served = app.api._handlers.handler(path)
        assert served is not None
        assert dispatcher.handler(path) is served
