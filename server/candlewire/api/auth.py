"""Who is calling, and what they may call: credentials, scopes and principals.

Authentication is on as soon as an API keys file or a JWKS URL is configured;
without either (the embedded quick start) every call is let through as the
``open`` principal and the start-up log says so loudly.

A credential comes in ``x-api-key`` or ``authorization: Bearer <token>``: a
token that starts with ``cwk_`` (or any token when no JWKS URL is set) is an
API key, anything else a JWT. A call without a credential is the
``anonymous`` principal when anonymous scopes are configured (the browser
page's read-only access, limited per client IP), else UNAUTHENTICATED.

Scopes: each method of ``marketdata.v1.MarketDataService`` needs the scope of
:data:`METHOD_SCOPES`; a method missing from the table needs
:data:`DEFAULT_SCOPE` (a test checks that every method of the service is in
the table). The scope ``read`` grants every scope of the table. Health, and
reflection unless configured otherwise, need no credential at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from candlewire.api.keys import KEY_PREFIX, ApiKey, KeyRing
from candlewire.errors import PermissionDenied, Unauthenticated
from candlewire_protos.marketdata.v1 import marketdata_pb2 as pb

__all__ = [
    "DEFAULT_SCOPE",
    "METHOD_SCOPES",
    "OPEN_PREFIXES",
    "READ_SCOPE",
    "REFLECTION_PREFIXES",
    "SCOPES",
    "Authenticator",
    "JwtVerifier",
    "Principal",
    "scope_of",
]

log = logging.getLogger(__name__)

_SERVICE = "/" + pb.DESCRIPTOR.services_by_name["MarketDataService"].full_name + "/"

METHOD_SCOPES: dict[str, str] = {
    _SERVICE + "GetPrice": "prices",
    _SERVICE + "GetRecentTicks": "prices",
    _SERVICE + "BatchGetPrices": "prices",
    _SERVICE + "GetCandles": "candles",
    _SERVICE + "ListSymbols": "symbols",
    _SERVICE + "SubscribeCandles": "streams",
    # Trades read like candles (history of the market), their stream like the candles' one.
    _SERVICE + "GetTrades": "candles",
    _SERVICE + "GetVolumeProfile": "candles",
    _SERVICE + "SubscribeTrades": "streams",
}
"""Method path -> the scope it needs."""

READ_SCOPE = "read"
"""Grants every scope of :data:`METHOD_SCOPES` (and :data:`DEFAULT_SCOPE`)."""

DEFAULT_SCOPE = READ_SCOPE
"""The scope of a method of the service that :data:`METHOD_SCOPES` does not name."""

SCOPES = frozenset({READ_SCOPE, *METHOD_SCOPES.values()})
"""Every scope this version knows."""

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
"""Methods that never need a credential (Kubernetes probes carry none)."""

REFLECTION_PREFIXES = (
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
)


def scope_of(method: str) -> str | None:
    """The scope ``method`` needs; None for a method open to everyone."""
    if method.startswith(OPEN_PREFIXES):
        return None
    return METHOD_SCOPES.get(method, DEFAULT_SCOPE)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one call.

    ``kind`` is ``key``, ``jwt``, ``anonymous`` or ``open`` (authentication
    off); ``name`` is the key's name or the token's subject, never a secret;
    ``rate`` (requests per second) and ``streams`` bound it, None for none.
    """

    kind: str
    name: str
    scopes: frozenset[str]
    rate: float | None
    streams: int | None
    subject: str = field(default="", compare=False)
    """What its limits are counted against: ``<kind>:<name>``."""

    def __post_init__(self) -> None:
        if not self.subject:
            object.__setattr__(self, "subject", f"{self.kind}:{self.name}")

    def allows(self, scope: str) -> bool:
        if self.kind == "open" or scope in self.scopes:
            return True
        return READ_SCOPE in self.scopes and (scope in SCOPES or scope == DEFAULT_SCOPE)

    def check(self, method: str, scope: str) -> None:
        if not self.allows(scope):
            raise PermissionDenied(
                f"{method.rsplit('/', 1)[-1]} needs the scope {scope!r}, "
                f"which the credential of {self.name!r} does not have",
                scope,
            )


OPEN = Principal("open", "open", frozenset({READ_SCOPE}), None, None)


class JwtVerifier:
    """Verifies bearer JWTs against the keys of a JWKS URL.

    The key set is fetched with httpx and cached for ``cache_seconds``; a
    token naming a key id the cache does not have fetches it again, at most
    once per ``min_refetch`` seconds (so forged key ids cannot make us hammer
    the identity provider). Signature, ``exp`` (required), ``nbf``, issuer and
    audience are checked by PyJWT; scopes come from ``scopes_claim`` (a
    space-separated string, as OAuth's ``scope``, or a list, as ``scp``).
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str | None,
        audience: str | None,
        scopes_claim: str = "scope",
        algorithms: Iterable[str] = ("RS256", "ES256", "PS256", "EdDSA"),
        cache_seconds: float = 300.0,
        min_refetch: float = 10.0,
        leeway: float = 30.0,
    ) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer or None
        self.audience = audience or None
        self.scopes_claim = scopes_claim
        self.algorithms = list(algorithms)
        self.cache_seconds = cache_seconds
        self.min_refetch = min_refetch
        self.leeway = leeway
        self._keys: dict[str, Any] = {}
        self._fetched = -float("inf")
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def _fetch(self) -> None:
        import httpx
        import jwt

        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.get(self.jwks_url)
            response.raise_for_status()
            document = response.json()
        keys: dict[str, Any] = {}
        for raw in document.get("keys", []):
            try:
                key = jwt.PyJWK.from_dict(raw)
            except jwt.PyJWTError:
                continue  # a key of a type we do not use
            keys[str(raw.get("kid", ""))] = key
        self._keys = keys
        self._fetched = time.monotonic()
        self.fetches += 1

    async def _key(self, kid: str) -> Any:
        now = time.monotonic()
        stale = now - self._fetched > self.cache_seconds
        if kid in self._keys and not stale:
            return self._keys[kid]
        async with self._lock:
            now = time.monotonic()
            if stale or (kid not in self._keys and now - self._fetched >= self.min_refetch):
                try:
                    await self._fetch()
                except Exception as error:  # any failure of the fetch
                    log.warning("JWKS %s could not be fetched: %s", self.jwks_url, error)
                    if not self._keys:
                        raise Unauthenticated(
                            "the token's signing keys cannot be fetched right now",
                            "JWKS_UNAVAILABLE",
                        ) from None
        key = self._keys.get(kid)
        if key is None:
            raise Unauthenticated("the token is signed by an unknown key", "TOKEN_INVALID")
        return key

    async def verify(self, token: str) -> Principal:
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the bearer token is not a JWT", "TOKEN_INVALID") from None
        key = await self._key(str(header.get("kid", "")))
        required = ["exp"]
        if self.issuer is not None:
            required.append("iss")
        if self.audience is not None:
            required.append("aud")
        try:
            claims: Mapping[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired", "TOKEN_EXPIRED") from None
        except jwt.PyJWTError as error:
            raise Unauthenticated(
                f"the token is not valid: {type(error).__name__}", "TOKEN_INVALID"
            ) from None
        raw = claims.get(self.scopes_claim, "")
        scopes = raw.split() if isinstance(raw, str) else [str(s) for s in raw or ()]
        subject = str(claims.get("sub", "?"))[:64]
        return Principal("jwt", subject, frozenset(scopes), None, None)


class Authenticator:
    """Turns a call's credentials into a :class:`Principal`."""

    def __init__(
        self,
        *,
        keys: KeyRing | None = None,
        jwt: JwtVerifier | None = None,
        anonymous_scopes: Iterable[str] = (),
        key_rate: float | None = None,
        key_streams: int | None = None,
        anonymous_rate: float | None = None,
        anonymous_streams: int | None = None,
    ) -> None:
        self.keys = keys
        self.jwt = jwt
        self.enabled = keys is not None or jwt is not None
        self._principals: dict[ApiKey, Principal] = {}
        self.key_rate = key_rate
        self.key_streams = key_streams
        scopes = frozenset(anonymous_scopes)
        self.anonymous = (
            Principal("anonymous", "anonymous", scopes, anonymous_rate, anonymous_streams)
            if scopes
            else None
        )

    async def authenticate(self, api_key: str | None, bearer: str | None) -> Principal:
        """The principal of a call; raises Unauthenticated."""
        if not self.enabled:
            return OPEN
        if (
            api_key is None
            and bearer
            and self.jwt is not None
            and not bearer.startswith(KEY_PREFIX)
        ):
            principal = await self.jwt.verify(bearer)
            return Principal(
                "jwt", principal.name, principal.scopes, self.key_rate, self.key_streams
            )
        return self.authenticate_now(api_key, bearer)

    def generation(self) -> int:
        """Changes when a credential's principal may have (the keys file was replaced)."""
        return self.keys.generation() if self.keys is not None else 0

    @property
    def recheck_interval(self) -> float:
        """How long an API key's principal may be used before :meth:`generation` is asked."""
        return self.keys.reload_interval if self.keys is not None else 60.0

    def authenticate_now(self, api_key: str | None, bearer: str | None) -> Principal:
        """:meth:`authenticate` of an API key (or none), which needs no waiting."""
        if not self.enabled:
            return OPEN
        if api_key is None and bearer is not None:
            if bearer == "":
                raise Unauthenticated(
                    "authorization must be 'Bearer <key or token>'", "CREDENTIAL_INVALID"
                )
            api_key = bearer
        if api_key is None:
            if self.anonymous is not None:
                return self.anonymous
            raise Unauthenticated(
                "a credential is required: send an API key in x-api-key, "
                "or authorization: Bearer <key or token>",
                "CREDENTIAL_MISSING",
            )
        entry = self.keys.lookup(api_key) if self.keys is not None else None
        if entry is None:
            raise Unauthenticated("the API key is not valid", "API_KEY_INVALID")
        principal = self._principals.get(entry)
        if principal is None:
            if len(self._principals) > 4096:
                self._principals.clear()
            principal = self._principals[entry] = Principal(
                "key",
                entry.name,
                entry.scopes,
                entry.rate if entry.rate is not None else self.key_rate,
                entry.streams if entry.streams is not None else self.key_streams,
            )
        return principal
