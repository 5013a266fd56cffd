"""The call policy, applied to each method's handler once, where it is registered.

A policy (:class:`~candlewire.api.gatekeeper.Gatekeeper`: authentication,
scopes, limits, metrics; or :class:`~candlewire.api.decoding.DecodeGuard`
alone) wraps a method's handler in the checks every call of it passes.
:class:`PolicyHandlers` serves a server's handlers wrapped that way, each
wrapped once and kept by method path.

Why not a ``grpc.aio`` server interceptor, the textbook place for it: with
one, grpc.aio runs ``intercept_service`` and its continuation as coroutines
on every call just to find the handler, which here is always the same
wrapped handler. Wrapping at registration leaves grpc.aio's own look-up (a
dictionary, no coroutine) and puts the policy inside the handler, where it
already was. The HTTP faces of the process
(:class:`~candlewire.gateway._dispatch.LocalDispatcher`) take the same
wrapped handlers, so both faces pass the same checks by construction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import grpc

__all__ = ["CallPolicy", "PolicyHandlers", "call_metadata"]

if TYPE_CHECKING:
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

_METADATA: ContextVar[Sequence[tuple[str, Any]] | None] = ContextVar(
    "candlewire_call_metadata", default=None
)


def call_metadata(context: Context) -> Sequence[tuple[str, Any]]:
    """The call's metadata: the tuple grpc.aio made to look up its handler
    (:meth:`PolicyHandlers.service` keeps it in the call's own task), or the
    context's.

    ``context.invocation_metadata()`` converts gRPC core's metadata into
    Python strings again on every call; a handler looked up by grpc.aio has
    had it converted once already, in the same task, just before it runs.
    """
    found = _METADATA.get()
    if found is not None:
        return found
    asked: Any = context.invocation_metadata()
    return asked or ()


class CallPolicy(Protocol):
    def wrap(self, method: str, handler: Handler) -> Handler:
        """``handler`` of ``method`` (a path, ``/package.Service/Method``),
        passing every call through this policy first."""
        ...


class _Details:
    __slots__ = ("invocation_metadata", "method")

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata: tuple[tuple[str, str], ...] = ()


class PolicyHandlers(grpc.GenericRpcHandler):
    """``handlers``, each method's wrapped by ``policy`` once."""

    def __init__(self, handlers: Iterable[grpc.GenericRpcHandler], policy: CallPolicy) -> None:
        self._handlers = tuple(handlers)
        self._policy = policy
        self._wrapped: dict[str, Handler] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        # grpc.aio looks the handler up in the task that then runs it, and
        # each call has a task (and so a context) of its own.
        _METADATA.set(handler_call_details.invocation_metadata)
        return self._lookup(handler_call_details)

    def handler(self, method: str) -> Handler | None:
        """The wrapped handler of ``method``, or None for an unknown path."""
        return self._lookup(_Details(method))  # type: ignore[arg-type]

    def _lookup(self, handler_call_details: grpc.HandlerCallDetails) -> Handler | None:
        method: str = handler_call_details.method
        found = self._wrapped.get(method)
        if found is not None:
            return found
        for generic in self._handlers:
            handler = generic.service(handler_call_details)
            if handler is not None:
                # Only known paths are kept: unknown ones cannot grow the table.
                found = self._wrapped[method] = self._policy.wrap(method, handler)
                return found
        return None
