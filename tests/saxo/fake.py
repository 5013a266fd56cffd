"""A local Saxo Bank OpenAPI for tests: OAuth, REST and the streaming websocket, on loopback.

:class:`FakeSaxo` serves, on free local ports, what the Saxo feed uses, as
Saxo documents it (developer.saxo/openapi/learn):

* the authorization server: ``GET /authorize`` (redirects to the
  ``redirect_uri`` with ``code`` and ``state``, as Saxo does after a sign-in)
  and ``POST /token`` (``authorization_code`` with PKCE S256 checked, and
  ``refresh_token``; HTTP 201 with ``expires_in`` and
  ``refresh_token_expires_in``; ``400 invalid_grant`` otherwise);
* the gateway: ``GET /ref/v1/instruments`` (keyword search, with near
  misses), ``GET /ref/v1/instruments/details/{Uic}/{AssetType}``,
  ``POST /trade/v1/prices/subscriptions`` (201 with a snapshot) and
  ``DELETE /trade/v1/prices/subscriptions/{ContextId}/{ReferenceId}``, each
  answering 401 without a valid bearer token and carrying
  ``X-RateLimit-*`` headers;
* streaming: the websocket ``/connect?contextId=...[&messageid=...]`` with
  binary frames (several per websocket message), ``PUT /authorize`` on the same
  port to re-authorise an open socket, which is otherwise closed with code
  1002 when its token expires. A reconnect with ``messageid`` gets what it
  missed (or ``_resetsubscriptions`` when that is no longer kept).

Tests drive the market (:meth:`FakeSaxo.quote`) and the faults.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from candlewire.feeds.saxo.frames import FORMAT_JSON, encode

WAIT = 10.0
FAKE_LOG = "fake.saxo"
"""The fake's own log (it may show tokens: it is Saxo)."""

# UIC, Decimals, Format: as Saxo lists these FX spot pairs.
INSTRUMENTS = {
    "EURUSD": (21, 4, "AllowDecimalPips", "USD", "Euro/US Dollar"),
    # Shown without decimal pips here, so its precision differs from the provisional one.
    "GBPUSD": (31, 4, "Normal", "USD", "British Pound/US Dollar"),
    "USDJPY": (42, 2, "AllowDecimalPips", "JPY", "US Dollar/Japanese Yen"),
}


def iso(ns: int, digits: int = 6) -> str:
    """Saxo's UTC time format."""
    seconds, nanos = divmod(ns, 1_000_000_000)
    head = datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{head}.{str(nanos).zfill(9)[:digits]}Z"


@dataclass
class Sent:
    """A quote the fake published."""

    symbol: str
    time: int
    bid: Decimal
    ask: Decimal
    market: str


@dataclass
class _Sub:
    context: str
    reference: str
    symbol: str
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Context:
    id: str
    next_id: int = 1
    history: list[tuple[int, bytes]] = field(default_factory=list)
    socket: ServerConnection | None = None
    token_expires: float = 0.0
    watchdog: asyncio.Task[None] | None = None
    heartbeats: bool = False


class FakeSaxo:
    """Saxo, locally. ``async with FakeSaxo() as saxo``."""

    def __init__(
        self,
        *,
        access_ttl: int = 1200,
        refresh_ttl: int = 3600,
        app_key: str = "test-app-key",
        history: int = 1000,
        inactivity_timeout: int = 30,
    ) -> None:
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl
        self.app_key = app_key
        self.history_limit = history
        self.inactivity_timeout = inactivity_timeout
        self.codes: dict[str, tuple[str, str]] = {}  # code -> (challenge, redirect)
        self.access: dict[str, float] = {}  # token -> expiry (epoch s)
        self.refresh: dict[str, float] = {}
        self.revoked: set[str] = set()
        self.subs: dict[tuple[str, str], _Sub] = {}
        self.contexts: dict[str, _Context] = {}
        self.prices: dict[str, dict[str, Any]] = {}  # symbol -> current Quote fields
        self.times: dict[str, int] = {}
        self.sent: list[Sent] = []
        self.requests: list[tuple[str, str, int]] = []  # method, path, status
        self.token_requests: list[dict[str, str]] = []
        self.connections: list[dict[str, str]] = []  # query of each websocket connection
        self.authorizations = 0
        self.expired_closes = 0
        self.faults: list[list[Any]] = []  # [path prefix, status, headers, requests to let pass]
        self.early: dict[str, list[tuple[str, str, int]]] = {}
        """Per symbol: quotes streamed after the next subscription's snapshot, before its reply."""
        self.rate_remaining = 120
        self.refuse_streaming = 0
        """When set, the streaming handshake answers this HTTP status (an outage)."""
        self.refused = 0
        self.changed = asyncio.Event()
        """Set whenever the fake served or sent something."""
        self._http: asyncio.Server | None = None
        self._front: asyncio.Server | None = None
        self._ws: Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self.rest_url = ""
        self.auth_url = ""
        self.streaming_url = ""
        self._ws_port = 0

    # --- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> FakeSaxo:
        self._http = await asyncio.start_server(self._serve_http, "127.0.0.1", 0)
        port = self._http.sockets[0].getsockname()[1]
        self._ws = await serve(
            self._serve_ws,
            "127.0.0.1",
            0,
            process_request=self._handshake,
            compression=None,
            logger=logging.getLogger(FAKE_LOG),
        )
        self._ws_port = self._ws.sockets[0].getsockname()[1]
        self._front = await asyncio.start_server(self._serve_front, "127.0.0.1", 0)
        front = self._front.sockets[0].getsockname()[1]
        self.rest_url = f"http://127.0.0.1:{port}/sim/openapi"
        self.auth_url = f"http://127.0.0.1:{port}/sim"
        self.streaming_url = f"ws://127.0.0.1:{front}/sim/oapi/streaming/ws"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for context in self.contexts.values():
            if context.watchdog is not None:
                context.watchdog.cancel()
        assert self._ws is not None and self._http is not None and self._front is not None
        self._ws.close()
        await self._ws.wait_closed()
        for server in (self._http, self._front):
            server.close()
        for writer in list(self._writers):
            writer.close()
        for pump in list(self._pumps):
            pump.cancel()
        await self._http.wait_closed()
        await self._front.wait_closed()

    def _touch(self) -> None:
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], what: str, within: float = WAIT) -> None:
        try:
            async with asyncio.timeout(within):
                while not predicate():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}") from None

    # --- the operator's browser ----------------------------------------------------------

    def sign_in(self, authorize_url: str) -> str:
        """What Saxo does once the operator signed in: the redirect URL (code, state)."""
        query = {k: v[0] for k, v in parse_qs(urlsplit(authorize_url).query).items()}
        assert query["response_type"] == "code"
        assert query["client_id"] == self.app_key
        assert query["code_challenge_method"] == "S256"
        code = secrets.token_urlsafe(16)
        self.codes[code] = (query["code_challenge"], query["redirect_uri"])
        separator = "&" if "?" in query["redirect_uri"] else "?"
        return (
            query["redirect_uri"] + separator + urlencode({"code": code, "state": query["state"]})
        )

    def issue(self) -> tuple[str, str]:
        access = "AT-" + secrets.token_urlsafe(24)
        refresh = "RT-" + secrets.token_urlsafe(24)
        now = time.time()
        self.access[access] = now + self.access_ttl
        self.refresh[refresh] = now + self.refresh_ttl
        return access, refresh

    def all_secrets(self) -> list[str]:
        """Every token and code issued (to assert none leaks)."""
        return [*self.access, *self.refresh, *self.codes]

    # --- faults -----------------------------------------------------------------------------

    def fail_next(
        self,
        path_prefix: str,
        status: int,
        headers: dict[str, str] | None = None,
        *,
        after: int = 0,
    ) -> None:
        """Answer a request to ``path_prefix`` with ``status``, after letting ``after`` pass."""
        self.faults.append([path_prefix, status, headers or {}, after])

    def expire_access_tokens(self) -> None:
        """Every access token expires now (REST answers 401; sockets close unless re-authorised)."""
        for token in self.access:
            self.access[token] = 0.0
        for context in self.contexts.values():
            context.token_expires = 0.0
            self._arm(context)

    def revoke_refresh_tokens(self) -> None:
        self.revoked.update(self.refresh)

    async def drop(self) -> None:
        """Cut every streaming socket without a close frame."""
        for context in self.contexts.values():
            if context.socket is not None:
                context.socket.transport.abort()
        await asyncio.sleep(0)

    async def control(self, reference: str, body: dict[str, Any]) -> None:
        payload = [{"ReferenceId": reference, **body}]
        for context in list(self.contexts.values()):
            await self._send(context, [(reference, payload)])

    async def heartbeat(self, reason: str = "NoNewData") -> None:
        for context in list(self.contexts.values()):
            beats = [
                {"OriginatingReferenceId": s.reference, "Reason": reason}
                for s in self.subs.values()
                if s.context == context.id
            ]
            await self._send(
                context, [("_heartbeat", [{"ReferenceId": "_heartbeat", "Heartbeats": beats}])]
            )

    async def connection_heartbeat(self) -> None:
        """``_connectionheartbeat`` on sockets opened with ``sendHeartbeats=true``."""
        frame = encode(0, "_connectionheartbeat", _json([{"ReferenceId": "_connectionheartbeat"}]))
        for context in self.contexts.values():
            if context.socket is not None and context.heartbeats:
                with contextlib.suppress(ConnectionClosed):
                    await context.socket.send(frame)
        self.changed.set()

    async def reset_subscriptions(self, targets: Iterable[str] = ()) -> None:
        await self.control("_resetsubscriptions", {"TargetReferenceIds": list(targets)})

    async def disconnect(self) -> None:
        await self.control("_disconnect", {})

    # --- the market -------------------------------------------------------------------------

    async def quote(
        self,
        symbol: str,
        bid: str,
        ask: str,
        at: int,
        *,
        market: str = "Open",
        price_type: str = "Tradable",
        size: str = "1000000",
        digits: int = 6,
        send: bool = True,
    ) -> None:
        """Set a price and stream it (only the changed fields) to every subscriber."""
        await self.quotes(
            [(symbol, bid, ask, at)],
            market=market,
            price_type=price_type,
            size=size,
            digits=digits,
            send=send,
        )

    async def quotes(
        self,
        rows: Iterable[tuple[str, str, str, int]],
        *,
        market: str = "Open",
        price_type: str = "Tradable",
        size: str = "1000000",
        digits: int = 6,
        send: bool = True,
    ) -> None:
        """Several price changes, delivered in one websocket message per context."""
        per_context: dict[str, list[tuple[str, Any]]] = {}
        for symbol, bid, ask, at in rows:
            full = {
                "Bid": Decimal(bid),
                "Ask": Decimal(ask),
                "Mid": (Decimal(bid) + Decimal(ask)) / 2,
                "BidSize": Decimal(size),
                "AskSize": Decimal(size),
                "MarketState": market,
                "PriceTypeBid": price_type,
                "PriceTypeAsk": price_type,
                "ErrorCode": "None",
                "DelayedByMinutes": 0,
            }
            self.prices[symbol] = full
            self.times[symbol] = at
            self.sent.append(Sent(symbol, at, Decimal(bid), Decimal(ask), market))
            for sub in self.subs.values():
                if sub.symbol != symbol:
                    continue
                delta = {k: v for k, v in full.items() if sub.state.get(k) != v}
                sub.state.update(full)
                payload = {"Quote": delta, "LastUpdated": iso(at, digits)}
                per_context.setdefault(sub.context, []).append((sub.reference, payload))
        if not send:
            return
        for context_id, frames in per_context.items():
            await self._send(self.contexts[context_id], frames)

    async def _send(self, context: _Context, frames: list[tuple[str, Any]]) -> None:
        message = b""
        for reference, payload in frames:
            ident = context.next_id
            context.next_id += 1
            message += encode(ident, reference, _json(payload), FORMAT_JSON)
            context.history.append((ident, encode(ident, reference, _json(payload))))
        del context.history[: -self.history_limit]
        if context.socket is not None:
            with contextlib.suppress(ConnectionClosed):
                await context.socket.send(message)
        self._touch()

    # --- streaming --------------------------------------------------------------------------

    def _valid(self, authorization: str | None) -> float | None:
        """The expiry of a valid bearer token, or None."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        token = authorization[7:].strip()
        expires = self.access.get(token)
        if expires is None or expires <= time.time():
            return None
        return expires

    def _handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if not url.path.endswith("/connect"):
            return connection.respond(404, "unknown path\n")
        if self.refuse_streaming:
            self.refused += 1
            self.changed.set()
            return connection.respond(self.refuse_streaming, "unavailable\n")
        if self._valid(request.headers.get("Authorization")) is None:
            return connection.respond(401, "Unauthorized\n")
        return None

    async def _serve_ws(self, conn: ServerConnection) -> None:
        assert conn.request is not None
        query = {k: v[0] for k, v in parse_qs(urlsplit(conn.request.path).query).items()}
        self.connections.append(query)
        expires = self._valid(conn.request.headers.get("Authorization")) or 0.0
        context = self.contexts.setdefault(query["contextId"], _Context(query["contextId"]))
        if context.socket is not None:
            context.socket.transport.abort()
        context.socket = conn
        context.heartbeats = query.get("sendHeartbeats") == "true"
        context.token_expires = expires
        self._arm(context)
        self._touch()
        try:
            if "messageid" in query:
                last = int(query["messageid"])
                kept = [ident for ident, _ in context.history]
                if kept and (last + 1 < kept[0]):
                    await self._send(
                        context,
                        [
                            (
                                "_resetsubscriptions",
                                [{"ReferenceId": "_resetsubscriptions", "TargetReferenceIds": []}],
                            )
                        ],
                    )
                else:
                    missed = b"".join(frame for ident, frame in context.history if ident > last)
                    if missed:
                        await conn.send(missed)
            await conn.wait_closed()
        finally:
            if context.socket is conn:
                context.socket = None
            self._touch()

    def _arm(self, context: _Context) -> None:
        """Close the socket with 1002 when its token expires, unless re-authorised first."""
        if context.watchdog is not None:
            context.watchdog.cancel()
        context.watchdog = asyncio.get_running_loop().create_task(self._expire(context))

    async def _expire(self, context: _Context) -> None:
        await asyncio.sleep(max(0.0, context.token_expires - time.time()))
        socket = context.socket
        if socket is not None:
            self.expired_closes += 1
            await socket.close(1002, "token expired")
            self._touch()

    async def _serve_front(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """The streaming host: PUT /authorize here, websocket upgrades passed to the ws server."""
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method = head.split(b" ", 1)[0]
            if method == b"GET":
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._ws_port)
                up_writer.write(head)
                pumps = [
                    asyncio.create_task(_pump(reader, up_writer)),
                    asyncio.create_task(_pump(up_reader, writer)),
                ]
                self._pumps.update(pumps)
                try:
                    await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for pump in pumps:
                        pump.cancel()
                        self._pumps.discard(pump)
                    up_writer.close()
                return
            status, body, extra = await self._answer_head(head, reader)
            _respond(writer, status, body, extra)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer_head(
        self, head: bytes, reader: asyncio.StreamReader
    ) -> tuple[int, Any, dict[str, str]]:
        method, target, headers = _parse_head(head)
        length = int(headers.get("content-length", "0"))
        if length:
            await reader.readexactly(length)
        url = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if method == "PUT" and url.path.endswith("/authorize"):
            expires = self._valid(headers.get("authorization"))
            context = self.contexts.get(query.get("contextId", query.get("contextid", "")))
            if expires is None:
                return 401, None, {}
            if context is None:
                return 404, {"ErrorCode": "ContextNotFound"}, {}
            context.token_expires = expires
            self._arm(context)
            self.authorizations += 1
            self._touch()
            return 202, None, {}
        return 404, None, {}

    # --- HTTP (authorization server and gateway) --------------------------------------------

    async def _serve_http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                method, target, headers = _parse_head(head)
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                status, answer, extra = await self._answer(method, target, headers, body)
                self.requests.append((method, urlsplit(target).path, status))
                _respond(writer, status, answer, extra)
                await writer.drain()
                self._touch()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        url = urlsplit(target)
        path = url.path
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if path == "/sim/authorize" and method == "GET":
            return 302, None, {"Location": self.sign_in(f"{self.auth_url}/authorize?{url.query}")}
        if path == "/sim/token" and method == "POST":
            return self._token({k: v[0] for k, v in parse_qs(body.decode()).items()})
        if not path.startswith("/sim/openapi/"):
            return 404, None, {}
        route = path[len("/sim/openapi") :]
        for index, (prefix, status, extra, after) in enumerate(self.faults):
            if route.startswith(prefix):
                if after:
                    self.faults[index][3] -= 1
                    break
                del self.faults[index]
                return status, {"ErrorCode": "Fault", "Message": "injected"}, extra
        if self._valid(headers.get("authorization")) is None:
            return 401, None, {}
        limits = {
            "X-RateLimit-Session-Limit": "120",
            "X-RateLimit-Session-Remaining": str(self.rate_remaining),
            "X-RateLimit-Session-Reset": "60",
            "X-RateLimit-AppDay-Limit": "10000000",
            "X-RateLimit-AppDay-Remaining": "9999999",
            "X-RateLimit-AppDay-Reset": "80000",
        }
        if route == "/ref/v1/instruments" and method == "GET":
            keyword = query.get("Keywords", "").upper()
            data: list[dict[str, Any]] = [
                {
                    "Identifier": uic,
                    "Symbol": symbol,
                    "AssetType": "FxSpot",
                    "Description": description,
                    "CurrencyCode": currency,
                    "SummaryType": "Instrument",
                }
                for symbol, (uic, _, _, currency, description) in INSTRUMENTS.items()
                if keyword in symbol
            ]
            if data:  # a near miss, as a keyword search returns
                data.append(
                    {
                        "Identifier": 9000 + data[0]["Identifier"],
                        "Symbol": data[0]["Symbol"] + "X",
                        "AssetType": "FxForwards",
                        "Description": "forward",
                        "CurrencyCode": "USD",
                    }
                )
            return 200, {"Data": data}, limits
        if route.startswith("/ref/v1/instruments/details/") and method == "GET":
            uic = int(route.split("/")[5])
            for symbol, (known, decimals, fmt, currency, description) in INSTRUMENTS.items():
                if known == uic:
                    return (
                        200,
                        {
                            "Uic": uic,
                            "Symbol": symbol,
                            "AssetType": "FxSpot",
                            "CurrencyCode": currency,
                            "Description": description,
                            "Format": {
                                "Decimals": decimals,
                                "Format": fmt,
                                "OrderDecimals": decimals,
                            },
                        },
                        limits,
                    )
            return 404, {"ErrorCode": "NotFound"}, limits
        if route == "/trade/v1/prices/subscriptions" and method == "POST":
            request = json.loads(body)
            uic = request["Arguments"]["Uic"]
            symbol = next(s for s, v in INSTRUMENTS.items() if v[0] == uic)
            self.contexts.setdefault(request["ContextId"], _Context(request["ContextId"]))
            sub = _Sub(request["ContextId"], request["ReferenceId"], symbol)
            snapshot_state = dict(self.prices.get(symbol, {}))
            snapshot = {
                "Uic": uic,
                "AssetType": "FxSpot",
                "LastUpdated": iso(self.times.get(symbol, 0)),
                "Quote": snapshot_state,
            }
            self.subs[(sub.context, sub.reference)] = sub
            sub.state = dict(snapshot_state)
            # Saxo may stream deltas before it answers the request.
            for bid, ask, at in self.early.pop(symbol, []):
                await self.quote(symbol, bid, ask, at)
            return (
                201,
                {
                    "ContextId": sub.context,
                    "ReferenceId": sub.reference,
                    "Format": "application/json",
                    "InactivityTimeout": self.inactivity_timeout,
                    "RefreshRate": 0,
                    "State": "Active",
                    "Snapshot": snapshot,
                },
                limits,
            )
        if route.startswith("/trade/v1/prices/subscriptions/") and method == "DELETE":
            _, _, _, _, _, context_id, reference = route.split("/")
            found = self.subs.pop((context_id, reference), None)
            return (202 if found else 404), None, limits
        return 404, None, limits

    def _token(self, form: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        self.token_requests.append(dict(form))
        if form.get("client_id") != self.app_key:
            return 401, {"error": "invalid_client"}, {}
        grant = form.get("grant_type")
        if grant == "authorization_code":
            found = self.codes.pop(form.get("code", ""), None)
            if found is None:
                return 400, {"error": "invalid_grant"}, {}
            challenge, redirect = found
            verifier = form.get("code_verifier", "")
            digest = (
                base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
                .rstrip(b"=")
                .decode()
            )
            if digest != challenge or form.get("redirect_uri") != redirect:
                return 400, {"error": "invalid_grant"}, {}
        elif grant == "refresh_token":
            token = form.get("refresh_token", "")
            expires = self.refresh.get(token)
            if expires is None or expires <= time.time() or token in self.revoked:
                return 400, {"error": "invalid_grant"}, {}
            self.revoked.add(token)  # refresh tokens are single-use
        else:
            return 400, {"error": "unsupported_grant_type"}, {}
        access, refresh = self.issue()
        return (
            201,
            {
                "access_token": access,
                "token_type": "Bearer",
                "expires_in": self.access_ttl,
                "refresh_token": refresh,
                "refresh_token_expires_in": self.refresh_ttl,
                "base_uri": None,
            },
            {},
        )


def _json(payload: Any) -> bytes:
    # Decimals go out as JSON numbers written exactly as the decimal.
    return _dumps(payload).encode()


def _dumps(value: Any) -> str:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dumps(v) for v in value) + "]"
    return json.dumps(value)


_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    302: "Found",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


def _respond(writer: asyncio.StreamWriter, status: int, body: Any, extra: dict[str, str]) -> None:
    payload = b"" if body is None else _json(body)
    head = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
        "Content-Type: application/json; charset=utf-8",
        f"Content-Length: {len(payload)}",
        *(f"{k}: {v}" for k, v in extra.items()),
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
