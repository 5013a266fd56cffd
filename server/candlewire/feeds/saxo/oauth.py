"""Saxo's OAuth2 authorization-code flow with PKCE, and the token lifecycle.

Login (developer.saxo/openapi/learn/oauth-authorization-code-grant-pkce):

1. :meth:`LoginFlow.start` makes a ``state`` (single-use, expires after
   ``state_ttl``) and a PKCE verifier, remembers both in the token store and
   returns Saxo's ``/authorize`` URL (``response_type=code``, ``client_id``,
   ``redirect_uri``, ``state``, ``code_challenge`` = base64url(SHA-256(verifier)),
   ``code_challenge_method=S256``);
2. Saxo redirects the operator's browser to the redirect URL with ``code``
   and ``state``; :meth:`LoginFlow.complete` takes the state (an unknown,
   expired or reused one is refused) and exchanges the code at ``/token``
   (``grant_type=authorization_code``, the verifier; the app secret too when
   one is configured). Saxo answers HTTP 201 with an access token (about 20
   minutes) and a refresh token (about an hour).

Lifecycle (:class:`TokenKeeper`): the feed refreshes ahead of expiry
(``grant_type=refresh_token``) and after a ``401``, saves every new pair to
the store, and re-authorises its streaming socket. A refused refresh (HTTP
400/401, ``invalid_grant``), an expired refresh token or Saxo's
``_disconnect`` breaks the chain: :class:`~candlewire.feeds.saxo.errors.LoginRequired`
until an operator logs in again, which the keeper notices in the store by
itself.

Only the process that runs the feed refreshes (with Redis: the ingestion
lease holder); the others read the store. Tokens, codes and the secret never
enter a log line or an error message: errors carry the HTTP status and
Saxo's short ``error`` code only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx

from candlewire.feeds.saxo.errors import LoginRequired, SaxoError, SaxoUnavailable
from candlewire.feeds.saxo.schemas import TokenResponse, parse_model
from candlewire.feeds.saxo.tokens import Tokens, TokenStore

__all__ = [
    "ENVIRONMENTS",
    "LoginFlow",
    "LoginRejected",
    "OAuthClient",
    "SaxoEndpoints",
    "TokenKeeper",
    "code_challenge",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SaxoEndpoints:
    auth_url: str
    """Authorization server: ``{auth_url}/authorize`` and ``{auth_url}/token``."""
    rest_url: str
    """OpenAPI gateway: ``{rest_url}/ref/v1/...``, ``{rest_url}/trade/v1/...``."""
    streaming_url: str
    """Streaming: ``{streaming_url}/connect`` (websocket), ``.../authorize`` (PUT)."""


ENVIRONMENTS = {
    "sim": SaxoEndpoints(
        "https://sim.logonvalidation.net",
        "https://gateway.saxobank.com/sim/openapi",
        "wss://sim-streaming.saxobank.com/sim/oapi/streaming/ws",
    ),
    "live": SaxoEndpoints(
        "https://live.logonvalidation.net",
        "https://gateway.saxobank.com/openapi",
        "wss://live-streaming.saxobank.com/oapi/streaming/ws",
    ),
}


class LoginRejected(SaxoError):
    """A callback that cannot complete a login: unknown, expired or reused state, no code."""


def code_challenge(verifier: str) -> str:
    """PKCE S256: base64url(SHA-256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


_ERROR_CODE = re.compile(r"^[A-Za-z_]{1,40}$")


class OAuthClient:
    """Saxo's token endpoint."""

    def __init__(
        self,
        auth_url: str,
        app_key: str,
        app_secret: str = "",
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.auth_url = auth_url.rstrip("/")
        self.app_key = app_key
        self._secret = app_secret
        self._timeout = timeout
        self._transport = transport
        self._clock = clock

    def authorize_url(self, redirect_url: str, state: str, challenge: str) -> str:
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.app_key,
                "redirect_uri": redirect_url,
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{self.auth_url}/authorize?{query}"

    async def exchange(self, code: str, verifier: str, redirect_url: str) -> Tokens:
        """Trade an authorization code for tokens."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_url,
            "client_id": self.app_key,
            "code_verifier": verifier,
        }
        return await self._token(form, verifier)

    async def refresh(self, tokens: Tokens, redirect_url: str) -> Tokens:
        """A new pair from the refresh token; LoginRequired when Saxo refuses it."""
        if tokens.refresh_expires <= self._clock():
            raise LoginRequired("the Saxo refresh token expired")
        form = {
            "grant_type": "refresh_token",
            "refresh_token": tokens.refresh_token,
            "redirect_uri": redirect_url,
            "client_id": self.app_key,
        }
        if tokens.code_verifier:
            form["code_verifier"] = tokens.code_verifier
        return await self._token(form, tokens.code_verifier)

    async def _token(self, form: dict[str, str], verifier: str) -> Tokens:
        if self._secret:
            form["client_secret"] = self._secret
        sent = self._clock()
        try:
            async with httpx.AsyncClient(
                timeout=self._timeout, transport=self._transport
            ) as client:
                response = await client.post(f"{self.auth_url}/token", data=form)
        except httpx.HTTPError as error:
            raise SaxoUnavailable(f"Saxo token endpoint: {type(error).__name__}") from None
        status = response.status_code
        if status in (200, 201):
            try:
                body = response.json()
            except ValueError:
                raise SaxoError("Saxo token endpoint: answer is not JSON", status=status) from None
            answer = parse_model(TokenResponse, body, "Saxo token endpoint")
            return Tokens(
                access_token=answer.access_token,
                access_expires=sent + answer.expires_in,
                refresh_token=answer.refresh_token,
                refresh_expires=sent + answer.refresh_token_expires_in,
                code_verifier=verifier,
            )
        code = _error_code(response)
        if status in (400, 401, 403):
            raise LoginRequired(f"Saxo refused the token request (HTTP {status} {code})")
        if status == 429 or status >= 500:
            raise SaxoUnavailable(f"Saxo token endpoint: HTTP {status}")
        raise SaxoError(f"Saxo token endpoint: HTTP {status} {code}", status=status)


def _error_code(response: httpx.Response) -> str:
    """Saxo's short ``error`` code, if it looks like one (never free text)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    value = body.get("error") if isinstance(body, dict) else None
    return value if isinstance(value, str) and _ERROR_CODE.match(value) else ""


class LoginFlow:
    """Starts and completes operator logins (see the module docstring)."""

    def __init__(
        self,
        oauth: OAuthClient,
        store: TokenStore,
        redirect_url: str,
        *,
        state_ttl: float = 600.0,
    ) -> None:
        self.oauth = oauth
        self.store = store
        self.redirect_url = redirect_url
        self.state_ttl = state_ttl

    async def start(self) -> str:
        """A new login: the URL to open at Saxo."""
        state = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64)
        await self.store.put_state(state, verifier, self.state_ttl)
        return self.oauth.authorize_url(self.redirect_url, state, code_challenge(verifier))

    async def complete(self, state: str, code: str) -> Tokens:
        """Finish the login Saxo redirected back with; save and return the tokens."""
        if not state:
            raise LoginRejected("the callback has no state")
        verifier = await self.store.take_state(state)
        if verifier is None:
            raise LoginRejected("unknown, expired or already used state")
        if not code:
            raise LoginRejected("the callback has no code")
        tokens = await self.oauth.exchange(code, verifier, self.redirect_url)
        saved = await self.store.save(tokens)
        log.info("Saxo login completed (version %d)", saved.version)
        return saved


class TokenKeeper:
    """The feed's view of the tokens: current, refreshed ahead of expiry, or login required."""

    def __init__(
        self,
        oauth: OAuthClient,
        store: TokenStore,
        redirect_url: str,
        *,
        refresh_margin: float = 120.0,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.oauth = oauth
        self.store = store
        self.redirect_url = redirect_url
        self.refresh_margin = refresh_margin
        self.poll_interval = poll_interval
        self._clock = clock
        self._tokens: Tokens | None = None
        self._lock = asyncio.Lock()
        self.refreshes = 0
        """Refreshes done by this process."""
        self.login_required: str | None = None
        """Why a login is needed (None while the chain holds)."""

    @property
    def tokens(self) -> Tokens | None:
        return self._tokens

    async def current(self) -> Tokens:
        """Usable tokens (refreshed first if the access token is about to expire)."""
        tokens = self._tokens
        if tokens is None or tokens.broken:
            tokens = await self.store.load()
            if tokens is None:
                self._require("no Saxo login yet")
            assert tokens is not None
            if not tokens.usable(self._clock()):
                self._require(
                    "the Saxo login expired" if not tokens.broken else "Saxo login required"
                )
            self._tokens = tokens
        if self.refresh_due(tokens) <= 0:
            tokens = await self.refresh(tokens)
        self.login_required = None
        return tokens

    def refresh_due(self, tokens: Tokens | None = None) -> float:
        """Seconds until the access token should be refreshed."""
        tokens = tokens or self._tokens
        if tokens is None:
            return 0.0
        lifetime = tokens.access_expires - self._clock()
        return lifetime - min(self.refresh_margin, max(0.0, lifetime) / 4 + 1)

    async def refresh(self, used: Tokens | None = None) -> Tokens:
        """A new access token: someone else's newer save if there is one, else a refresh.

        ``used`` is the pair that failed or is about to expire; when the store
        already holds a newer version (a new login, or another process), that
        one is taken instead of refreshing again.
        """
        async with self._lock:
            stored = await self.store.load()
            if (
                stored is not None
                and used is not None
                and stored.version > used.version
                and stored.usable(self._clock())
                and stored.access_expires - self._clock() > self.refresh_margin / 2
            ):
                self._tokens = stored
                return stored
            base = stored if stored is not None and not stored.broken else used
            if base is None:
                self._require("no Saxo login yet")
            assert base is not None
            try:
                fresh = await self.oauth.refresh(base, self.redirect_url)
            except LoginRequired as error:
                await self.break_chain(str(error), base)
                raise
            saved = await self.store.save(fresh)
            self._tokens = saved
            self.refreshes += 1
            log.info("Saxo access token refreshed (version %d)", saved.version)
            return saved

    async def break_chain(self, reason: str, tokens: Tokens | None = None) -> None:
        """Mark the stored tokens unusable until a new login (unless one already happened)."""
        current = tokens or self._tokens
        stored = await self.store.load()
        if stored is not None and (current is None or stored.version <= current.version):
            await self.store.save(
                Tokens(
                    access_token="",
                    access_expires=0.0,
                    refresh_token="",
                    refresh_expires=0.0,
                    broken=True,
                )
            )
        self._tokens = None
        self.login_required = reason
        log.warning("Saxo login required: %s", reason)

    async def wait_for_login(self) -> Tokens:
        """Poll the store until a usable login appears."""
        while True:
            try:
                return await self.current()
            except LoginRequired:
                await asyncio.sleep(self.poll_interval)

    def _require(self, reason: str) -> None:
        self.login_required = reason
        self._tokens = None
        raise LoginRequired(reason)
