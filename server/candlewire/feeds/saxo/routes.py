"""The operator login routes, served on the HTTP port by the gateway.

* ``GET /auth/saxo/login``: starts a login (:meth:`LoginFlow.start`) and
  redirects the browser to Saxo's sign-in page;
* ``GET /auth/saxo/callback?code=...&state=...``: where Saxo sends the browser
  back; completes the login and answers a short page that holds no token.

They are for operators only: a request is served when its peer address is in
``allow`` (default: loopback only, so an operator reaches them through an SSH
tunnel or ``kubectl port-forward``); anyone else gets 404, as if the routes
did not exist. ``X-Forwarded-For`` is not trusted. Answers are never cached
(``Cache-Control: no-store``) and the callback URL (which carries the code)
is not logged.
"""

from __future__ import annotations

import html
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from candlewire.errors import CandlewireError
from candlewire.feeds.saxo.errors import LoginRequired
from candlewire.feeds.saxo.oauth import LoginFlow, LoginRejected

__all__ = ["CALLBACK_PATH", "LOGIN_PATH", "LOOPBACK", "LoginRoutes", "parse_networks"]

log = logging.getLogger(__name__)

LOGIN_PATH = "/auth/saxo/login"
CALLBACK_PATH = "/auth/saxo/callback"
LOOPBACK = ("127.0.0.0/8", "::1/128")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``10.0.0.0/8``, ``192.168.1.7`` ... (ValueError for a malformed one)."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values)


class LoginRoutes:
    """An ASGI application for the two login paths."""

    paths = (LOGIN_PATH, CALLBACK_PATH)

    def __init__(self, flow: LoginFlow, allow: Iterable[str] = LOOPBACK) -> None:
        self.flow = flow
        self.allow = parse_networks(allow)

    def allowed(self, client: Any) -> bool:
        if not client:
            return False
        try:
            address = ipaddress.ip_address(str(client[0]))
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.allow)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.allowed(scope.get("client")):
            await _page(send, 404, "Not found.")
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _page(send, 405, "Method not allowed.", ((b"allow", b"GET, HEAD"),))
            return
        path = scope["path"]
        if path == LOGIN_PATH:
            try:
                url = await self.flow.start()
            except CandlewireError as error:
                await _page(send, 503, f"Cannot start a Saxo login: {error}")
                return
            await _page(send, 302, "Continue at Saxo.", ((b"location", url.encode()),))
            return
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        if "error" in query:
            reason = query["error"] if query["error"].isidentifier() else "refused"
            await _page(send, 400, f"Saxo did not log in ({reason}).")
            return
        try:
            await self.flow.complete(query.get("state", ""), query.get("code", ""))
        except LoginRejected as error:
            await _page(send, 400, f"Login failed: {error}. Start again at {LOGIN_PATH}.")
            return
        except LoginRequired as error:
            await _page(send, 400, f"Login failed: {error}. Start again at {LOGIN_PATH}.")
            return
        except CandlewireError as error:
            await _page(send, 503, f"Login failed, Saxo unavailable: {error}.")
            return
        await _page(send, 200, "Saxo login complete. The feed resumes by itself; close this page.")


async def _page(
    send: Send, status: int, text: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = (
        "<!doctype html><meta charset=utf-8><title>Candlewire: Saxo login</title>"
        f"<p>{html.escape(text)}</p>\n"
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"referrer-policy", b"no-referrer"),
                (b"x-content-type-options", b"nosniff"),
                (b"content-security-policy", b"default-src 'none'"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
