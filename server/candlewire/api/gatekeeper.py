"""The policy every call passes: authentication, scopes, rate limits, metrics, access log.

:class:`Gatekeeper` is the one place of this policy: it wraps each method's
handler once (:mod:`candlewire.api.policy`), and the gRPC port and the HTTP
faces of the process call the same wrapped handlers, so it applies to every
face alike (the standalone gateway forwards the browser's credentials as
metadata to a server that applies it).

Per call, in order: the client address (:class:`ClientAddress`: the peer,
or from ``x-forwarded-for`` when the peer is a trusted proxy such as the
gateway), the failed-authentication limit of that address, the credential
(:mod:`candlewire.api.auth`), the method's scope, the principal's rate (unary
calls) or concurrent streams (server streams), and the address's own limits.
Refusals are UNAUTHENTICATED, PERMISSION_DENIED or RESOURCE_EXHAUSTED with
``google.rpc.RetryInfo``, chosen in :mod:`candlewire.api.status` like every
other status of the API.

A unary call with an API key (or none) and limits in memory is admitted
without a coroutine, and what is decided for a credential from a connection
(the principal, the address, the rates that apply) is kept as a ticket, so
that its next calls only take their rates; a ticket is checked against the
keys file as often as the file is (see :mod:`candlewire.api.keys`).
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
import time
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from candlewire.api.auth import REFLECTION_PREFIXES, Authenticator, Principal, scope_of
from candlewire.api.decoding import Undecodable, guard, guarded, refuse
from candlewire.api.limits import Limiter, MemoryLimiter, Slot
from candlewire.api.outlet import COUNT_EVERY, outlet_of
from candlewire.api.policy import call_metadata
from candlewire.api.status import abort
from candlewire.errors import CandlewireError, LimitExceeded, PermissionDenied, Unauthenticated
from candlewire.obs import RPC_BUCKETS, Metrics

__all__ = ["ClientAddress", "Gatekeeper", "LimitSettings"]

log = logging.getLogger(__name__)
access = logging.getLogger("candlewire.access")

if TYPE_CHECKING:
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_OK = grpc.StatusCode.OK
_NAMES = {code: code.name for code in grpc.StatusCode}


class ClientAddress:
    """The client's address of a call.

    The peer's address, unless the peer is a trusted proxy (a network of
    ``trusted``, or a Unix socket): then the right-most address of
    ``x-forwarded-for`` that is not itself a trusted proxy. Anything a client
    writes into ``x-forwarded-for`` before the first trusted proxy is
    ignored, so it cannot choose its own address.
    """

    def __init__(self, trusted: Iterable[str]) -> None:
        self._trusted: list[_Network] = [ipaddress.ip_network(t, strict=False) for t in trusted]
        self._cache: dict[str, bool] = {}
        self._resolved: dict[str | tuple[str, str], tuple[str, str]] = {}

    def trusted(self, address: str) -> bool:
        found = self._cache.get(address)
        if found is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                found = False
            else:
                found = any(ip in network for network in self._trusted)
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[address] = found
        return found

    @staticmethod
    def of_peer(peer: str) -> str | None:
        """The address in a gRPC peer string (None for a Unix socket)."""
        kind, _, rest = peer.partition(":")
        if kind == "ipv4":
            return rest.rpartition(":")[0]
        if kind == "ipv6":
            return rest.rpartition(":")[0].strip("[]")
        return None

    def resolve(self, peer: str, forwarded: str | None) -> str:
        return self.resolve_pair(peer, forwarded)[0]

    def resolve_pair(self, peer: str, forwarded: str | None) -> tuple[str, str]:
        """The address, and its limits' subject (``ip:<address>``); cached per connection."""
        found = self._resolved.get(peer if forwarded is None else (peer, forwarded))
        if found is None:
            if len(self._resolved) > 10_000:
                self._resolved.clear()
            address = self._resolve(peer, forwarded)
            found = (address, "ip:" + address)
            self._resolved[peer if forwarded is None else (peer, forwarded)] = found
        return found

    def _resolve(self, peer: str, forwarded: str | None) -> str:
        address = self.of_peer(peer)
        if address is not None and not self.trusted(address):
            return address
        if forwarded:
            hops = [h.strip() for h in forwarded.split(",") if h.strip()]
            for hop in reversed(hops):
                if not self.trusted(hop):
                    return hop[:64]
            if hops:
                return hops[0][:64]
        return address if address is not None else "local"


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Per-address limits (0 or None: none) and the failed-authentication limit."""

    ip_rate: float = 0.0
    ip_streams: int = 0
    auth_failures_per_minute: int = 10
    burst_seconds: float = 1.0


def _credentials(metadata: Sequence[tuple[str, Any]]) -> tuple[str | None, str | None, str | None]:
    api_key = bearer = forwarded = None
    for key, value in metadata:
        if key == "x-api-key":
            api_key = str(value).strip()
        elif key == "authorization":
            scheme, _, token = str(value).strip().partition(" ")
            # another scheme is not a credential we take: "" is refused
            bearer = token.strip() if scheme.lower() == "bearer" else ""
        elif key == "x-forwarded-for":
            forwarded = str(value) if forwarded is None else f"{forwarded}, {value}"
    return api_key or None, bearer, forwarded


@dataclass(frozen=True, slots=True)
class _Admitted:
    principal: Principal
    address: str
    slots: Sequence[Slot]


_TicketKey: TypeAlias = tuple[Sequence[tuple[str, Any]], str, str | None]
"""A call's metadata, peer and scope."""


@dataclass(slots=True)
class _Ticket:
    """What :meth:`Gatekeeper._ticket` decided for one credential from one
    connection and a scope, kept so that its next calls only take their rates."""

    generation: int
    recheck: float
    admitted: _Admitted
    limits: tuple[tuple[str, float, float, str], ...]
    """(subject, interval, tolerance, refusal) of each rate to take."""


class Gatekeeper:
    """Authentication, scopes, limits, metrics and the access log of every call."""

    def __init__(
        self,
        authenticator: Authenticator,
        *,
        limiter: Limiter | None = None,
        limits: LimitSettings | None = None,
        trusted_proxies: Iterable[str] = ("127.0.0.0/8", "::1/128"),
        metrics: Metrics | None = None,
        reflection_open: bool = True,
        access_log: bool = False,
    ) -> None:
        self.authenticator = authenticator
        self.limiter: Limiter = limiter or MemoryLimiter()
        self.limits = limits or LimitSettings()
        self.addresses = ClientAddress(trusted_proxies)
        self.metrics = metrics
        self.reflection_open = reflection_open
        self.access_log = access_log
        self._failures = MemoryLimiter()
        self._memory = self.limiter if isinstance(self.limiter, MemoryLimiter) else None
        self._blocked: dict[str, float] = {}
        self._tickets: dict[_TicketKey, _Ticket] = {}

    # --- the policy -----------------------------------------------------------------------

    def _refuse_rate(self, what: str, retry_after: float) -> LimitExceeded:
        if self.metrics is not None:
            self.metrics.rejected.labels("rate_limited").inc()
        return LimitExceeded(f"{what}: retry in {retry_after:.3f}s", retry_after=retry_after)

    async def _failed(self, address: str, error: Unauthenticated) -> CandlewireError:
        """Count a failed authentication of ``address``; the error to answer with."""
        if self.metrics is not None:
            self.metrics.rejected.labels("unauthenticated").inc()
        per_minute = self.limits.auth_failures_per_minute
        if per_minute <= 0:
            return error
        rate, burst = per_minute / 60.0, float(per_minute)
        subject = "authfail:" + address
        wait = max(
            self._failures.hit_now(subject, rate, burst),
            await self.limiter.hit(subject, rate, burst)
            if not isinstance(self.limiter, MemoryLimiter)
            else 0.0,
        )
        if wait > 0:
            self._blocked[address] = time.monotonic() + wait
            if len(self._blocked) > 10_000:
                now = time.monotonic()
                self._blocked = {a: t for a, t in self._blocked.items() if t > now}
            return self._refuse_rate("too many failed authentications from this address", wait)
        return error

    async def admit(
        self, method: str, metadata: Sequence[tuple[str, Any]], peer: str, *, stream: bool
    ) -> _Admitted:
        """Check one call; raise the CandlewireError to answer with."""
        api_key, bearer, forwarded = _credentials(metadata)
        address = self.addresses.resolve(peer, forwarded)
        blocked = self._blocked.get(address)
        if blocked is not None:
            left = blocked - time.monotonic()
            if left > 0:
                raise self._refuse_rate("too many failed authentications from this address", left)
            del self._blocked[address]
        try:
            principal = await self.authenticator.authenticate(api_key, bearer)
        except Unauthenticated as error:
            raise await self._failed(address, error) from None
        scope = scope_of(method)
        if scope is not None:
            try:
                principal.check(method, scope)
            except PermissionDenied:
                if self.metrics is not None:
                    self.metrics.rejected.labels("permission_denied").inc()
                raise
        subject = principal.subject
        if principal.kind == "anonymous":
            subject = "anonymous:" + address
        slots: list[Slot] = []
        limiter = self.limiter
        try:
            if stream:
                if principal.streams is not None:
                    slot = await limiter.acquire(subject, principal.streams)
                    if slot is None:
                        raise self._stream_limit(f"{principal.streams} streams per credential")
                    slots.append(slot)
                if self.limits.ip_streams > 0 and principal.kind != "anonymous":
                    slot = await limiter.acquire("ip:" + address, self.limits.ip_streams)
                    if slot is None:
                        raise self._stream_limit(f"{self.limits.ip_streams} streams per address")
                    slots.append(slot)
            else:
                burst = self.limits.burst_seconds
                if principal.rate is not None:
                    wait = await limiter.hit(
                        subject, principal.rate, max(1.0, principal.rate * burst)
                    )
                    if wait > 0:
                        raise self._refuse_rate(
                            f"rate limit of {principal.rate:g} requests/s exceeded", wait
                        )
                if self.limits.ip_rate > 0 and principal.kind != "anonymous":
                    rate = self.limits.ip_rate
                    wait = await limiter.hit("ip:" + address, rate, max(1.0, rate * burst))
                    if wait > 0:
                        raise self._refuse_rate(
                            f"rate limit of {rate:g} requests/s per address exceeded", wait
                        )
        except BaseException:
            for slot in slots:
                await limiter.release(slot)
            raise
        return _Admitted(principal, address, slots)

    def _ticket(self, key: _TicketKey, old: _Ticket | None, now: float) -> _Ticket | None:
        """The ticket of ``key``: ``old`` if the keys have not changed since it
        was made, else a new one; None for a call :meth:`admit` must take.

        A unary call with an API key (or none) and limits in memory needs no
        waiting: what is decided for its metadata from its connection for its
        scope (who the principal is, the client address, which rates apply)
        is kept as a ticket, so that the next calls only take their rates.
        Only credentials that pass get one.
        """
        if self._memory is None:
            return None
        generation = self.authenticator.generation()
        if old is not None and old.generation == generation:
            old.recheck = now + self.authenticator.recheck_interval
            return old
        metadata, peer, scope = key
        decided = self._decide(*_credentials(metadata), peer, scope)
        if decided is None:
            self._tickets.pop(key, None)
            return None
        ticket = _Ticket(generation, now + self.authenticator.recheck_interval, *decided)
        if len(self._tickets) >= 4096:
            self._tickets.clear()  # metadata that changes on every call must not grow it
        self._tickets[key] = ticket
        return ticket

    def _decide(
        self,
        api_key: str | None,
        bearer: str | None,
        forwarded: str | None,
        peer: str,
        scope: str | None,
    ) -> tuple[_Admitted, tuple[tuple[str, float, float, str], ...]] | None:
        """What a ticket holds for a credential that needs no waiting and is
        allowed ``scope``; None for any other (answered by :meth:`admit`)."""
        if bearer is not None and (api_key is not None or self.authenticator.jwt is not None):
            return None
        address, ip_subject = self.addresses.resolve_pair(peer, forwarded)
        try:
            principal = self.authenticator.authenticate_now(api_key, bearer)
        except Unauthenticated:
            return None  # counted and answered by admit()
        if scope is not None and not principal.allows(scope):
            return None
        burst = self.limits.burst_seconds
        limits: list[tuple[str, float, float, str]] = []
        if principal.rate is not None:
            rate = principal.rate
            subject = "anonymous:" + address if principal.kind == "anonymous" else principal.subject
            refusal = f"rate limit of {rate:g} requests/s exceeded"
            limits.append((subject, 1.0 / rate, (max(1.0, rate * burst) - 1.0) / rate, refusal))
        rate = self.limits.ip_rate
        if rate > 0 and principal.kind != "anonymous":
            refusal = f"rate limit of {rate:g} requests/s per address exceeded"
            limits.append((ip_subject, 1.0 / rate, (max(1.0, rate * burst) - 1.0) / rate, refusal))
        return _Admitted(principal, address, ()), tuple(limits)

    def _stream_limit(self, what: str) -> LimitExceeded:
        if self.metrics is not None:
            self.metrics.rejected.labels("stream_limit").inc()
        return LimitExceeded(f"concurrent stream limit reached ({what})", retry_after=1.0)

    # --- the wrapped handlers -------------------------------------------------------------

    def _is_open(self, method: str) -> bool:
        return scope_of(method) is None or (
            self.reflection_open and method.startswith(REFLECTION_PREFIXES)
        )

    def wrap(self, method: str, handler: Handler) -> Handler:
        """``handler`` behind this policy (:class:`~candlewire.api.policy.CallPolicy`)."""
        # Undecodable requests end with INVALID_ARGUMENT (api.decoding): for
        # unary requests the check is in this wrapper (one frame less per call).
        decode = handler.request_deserializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._unary(method, handler.unary_unary, decode is not None),
                guarded(decode) if decode is not None else None,
                handler.response_serializer,
            )
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            return grpc.unary_stream_rpc_method_handler(
                self._stream(method, handler.unary_stream, decode is not None),
                guarded(decode) if decode is not None else None,
                handler.response_serializer,
            )
        handler = guard(handler)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method, handler.unary_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if self._is_open(method):
            return handler  # client streams: reflection, open unless configured otherwise
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._streaming(method, handler.stream_stream),
                handler.request_deserializer,
                handler.response_serializer,
            )
        assert handler.stream_unary is not None
        return grpc.stream_unary_rpc_method_handler(
            self._unary(method, handler.stream_unary),
            handler.request_deserializer,
            handler.response_serializer,
        )

    def _streaming(self, method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        """A streaming behavior: an async generator, or a coroutine that writes
        to its context (as the health service's Watch)."""
        if inspect.isasyncgenfunction(behavior):
            return self._stream(method, behavior)
        return self._unary(method, behavior)

    async def _admit_or_abort(
        self, method: str, metadata: Sequence[tuple[str, Any]], context: Context, *, stream: bool
    ) -> _Admitted:
        try:
            return await self.admit(method, metadata, context.peer(), stream=stream)
        except CandlewireError as error:
            await abort(context, error)

    def _finish(
        self,
        method: str,
        context: Context,
        started: float,
        error: BaseException | None,
        admitted: _Admitted | None,
    ) -> None:
        found: Any = None if error is None else context.code()
        if error is None:
            code = _OK  # handlers end other calls by raising (context.abort)
        elif isinstance(error, asyncio.CancelledError) and found is None:
            code = grpc.StatusCode.CANCELLED
        else:
            code = found or grpc.StatusCode.UNKNOWN
        name = _NAMES.get(code) or str(code)
        elapsed = time.perf_counter() - started
        if self.metrics is not None:
            self.metrics.rpc.observe(method, name, elapsed)
            if name == "INVALID_ARGUMENT":
                self.metrics.rejected.labels("invalid_argument").inc()
        if self.access_log:
            access.info(
                "%s %s %.1fms",
                method,
                name,
                elapsed * 1000,
                extra={
                    "rpc_method": method,
                    "rpc_code": name,
                    "duration_ms": round(elapsed * 1000, 3),
                    "principal": None if admitted is None else admitted.principal.name,
                    "client": None if admitted is None else admitted.address,
                },
            )

    def _unary(
        self, method: str, behavior: Callable[..., Any], checks: bool = False
    ) -> Callable[..., Any]:
        open_method = self._is_open(method)
        scope = scope_of(method)
        # An OK call without the access log is only counted, here: no _finish call.
        ok = self.metrics.rpc.cell(method, "OK") if self.metrics is not None else None
        access_log = self.access_log
        clock, monotonic = time.perf_counter, time.monotonic
        tickets, memory = self._tickets, self._memory

        async def unary(request: Any, context: Context) -> Any:
            started = clock()
            admitted = None
            try:
                if not open_method:
                    metadata = call_metadata(context)
                    key = (metadata, context.peer(), scope)
                    now = monotonic()
                    try:
                        ticket = tickets.get(key)
                        if ticket is None or now >= ticket.recheck:
                            ticket = self._ticket(key, ticket, now)
                        if ticket is not None and not (
                            self._blocked and ticket.admitted.address in self._blocked
                        ):
                            if ticket.limits:
                                assert memory is not None  # tickets are for limits in memory
                                wait, refusal = memory.take_all(ticket.limits, now)
                                if wait > 0:
                                    raise self._refuse_rate(refusal, wait)
                            admitted = ticket.admitted
                    except CandlewireError as error:
                        await abort(context, error)
                    if admitted is None:
                        admitted = await self._admit_or_abort(
                            method, metadata, context, stream=False
                        )
                if checks and isinstance(request, Undecodable):
                    await refuse(context, request)
                result = behavior(request, context)
                if not isinstance(result, bytes) and hasattr(result, "__await__"):
                    result = await result
            except BaseException as error:
                self._finish(method, context, started, error, admitted)
                raise
            if access_log:
                self._finish(method, context, started, None, admitted)
            elif ok is not None:
                elapsed = clock() - started
                ok.count += 1
                ok.total += elapsed
                ok.buckets[bisect_left(RPC_BUCKETS, elapsed)] += 1
            return result

        return unary

    def _stream(
        self, method: str, behavior: Callable[..., Any], checks: bool = False
    ) -> Callable[..., Any]:
        open_method = self._is_open(method)

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            started = time.perf_counter()
            admitted = None
            gauge = messages = None
            if self.metrics is not None:
                gauge, messages = self.metrics.stream(method)
            error: BaseException | None = None
            try:
                if not open_method:
                    admitted = await self._admit_or_abort(
                        method, call_metadata(context), context, stream=True
                    )
                if checks and isinstance(request, Undecodable):
                    await refuse(context, request)
                if gauge is not None:
                    gauge.inc()
                    # What the face writes without this generator, it counts.
                    outlet = outlet_of(context)
                    if outlet is not None and messages is not None:
                        outlet.tally = messages.inc
                # Messages are counted in batches: the counter takes a lock.
                unsaid = 0
                try:
                    async for response in behavior(request, context):
                        yield response
                        unsaid += 1
                        if unsaid == COUNT_EVERY and messages is not None:
                            messages.inc(unsaid)
                            unsaid = 0
                finally:
                    if gauge is not None:
                        gauge.dec()
                    if unsaid and messages is not None:
                        messages.inc(unsaid)
            except BaseException as raised:
                error = raised
                raise
            finally:
                if admitted is not None:
                    for slot in admitted.slots:
                        await self.limiter.release(slot)
                if self.metrics is not None or self.access_log:
                    self._finish(method, context, started, error, admitted)

        return stream
