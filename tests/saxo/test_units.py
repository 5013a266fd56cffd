"""Units of the Saxo feed without sockets: rate-limit headers, tokens, endpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from candlewire.feeds.saxo.http import RateLimiter, service_group
from candlewire.feeds.saxo.oauth import code_challenge
from candlewire.feeds.saxo.setup import SaxoSettings
from candlewire.feeds.saxo.streaming import authorize_url, connect_url
from candlewire.feeds.saxo.tokens import FileTokenStore, Tokens


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_limit_headers_block_the_exhausted_service_group() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    headers = {
        "X-RateLimit-Session-Limit": "120",
        "X-RateLimit-Session-Remaining": "0",
        "X-RateLimit-Session-Reset": "7",
        "X-RateLimit-AppDay-Remaining": "9999",
        "X-RateLimit-AppDay-Reset": "80000",
    }
    assert limiter.note("trade", headers, refused=False) == 7
    assert limiter.delay("trade") == 7 and limiter.delay("ref") == 0
    clock.now += 5
    assert limiter.delay("trade") == 2
    # A 429 without an exhausted dimension waits for Retry-After, else a second.
    assert limiter.note("ref", {"Retry-After": "3"}, refused=True) == 3
    assert limiter.note("port", {"X-RateLimit-AppDay-Reset": "80000"}, refused=True) == 1
    assert limiter.limited == 2
    assert service_group("/trade/v1/prices/subscriptions") == "trade"


def test_pkce_challenge_is_rfc7636() -> None:
    # RFC 7636, appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert code_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_tokens_hide_their_secrets() -> None:
    tokens = Tokens("AT-secret", 1.0, "RT-secret", 2.0, code_verifier="V-secret")
    assert "secret" not in repr(tokens) and "secret" not in str(tokens)
    assert Tokens.from_json(tokens.to_json()) == tokens


async def test_token_file_is_private_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "state" / "tokens.json"
    store = FileTokenStore(path)
    assert await store.load() is None
    first = await store.save(Tokens("a", 1.0, "r", 2.0))
    second = await store.save(Tokens("b", 1.0, "s", 2.0))
    assert (first.version, second.version) == (1, 2)
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["access_token"] == "b"
    path.chmod(0o644)
    assert (await store.load()) == second
    assert path.stat().st_mode & 0o777 == 0o600  # put right


def test_endpoints_and_streaming_urls() -> None:
    sim = SaxoSettings(app_key="k").endpoints()
    assert sim.streaming_url == "wss://sim-streaming.saxobank.com/sim/oapi/streaming/ws"
    assert sim.rest_url == "https://gateway.saxobank.com/sim/openapi"
    live = SaxoSettings(app_key="k", env="live", rest_url="http://127.0.0.1:1/x/").endpoints()
    assert live.auth_url == "https://live.logonvalidation.net"
    assert live.rest_url == "http://127.0.0.1:1/x"
    assert connect_url(sim.streaming_url, "c1", 42) == (
        "wss://sim-streaming.saxobank.com/sim/oapi/streaming/ws/connect"
        "?contextId=c1&sendHeartbeats=true&messageid=42"
    )
    assert authorize_url(sim.streaming_url, "c1") == (
        "https://sim-streaming.saxobank.com/sim/oapi/streaming/ws/authorize?contextId=c1"
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"feed": "saxo"}, "saxo_app_key"),
        ({"feed": "saxo", "saxo_app_key": "k", "symbols": "EUR/US"}, "not an FX pair"),
        ({"feed": "saxo", "saxo_app_key": "k", "saxo_streaming_url": "https://x"}, "ws://"),
        ({"feed": "saxo", "saxo_app_key": "k", "saxo_login_allow": "10.0.0.300"}, "network"),
    ],
)
def test_saxo_settings_are_checked(settings: dict[str, str], message: str) -> None:
    from candlewire.config import load
    from candlewire.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load(**settings)


async def test_an_expired_refresh_token_means_login_required_without_asking_saxo() -> None:
    from candlewire.feeds.saxo.errors import LoginRequired
    from candlewire.feeds.saxo.oauth import OAuthClient

    clock = Clock()
    # An unreachable auth URL: the check happens before any request.
    oauth = OAuthClient("http://127.0.0.1:9", "key", clock=clock)
    expired = Tokens("AT-x", clock.now - 10, "RT-x", clock.now - 1)
    with pytest.raises(LoginRequired, match="refresh token expired") as raised:
        await oauth.refresh(expired, "http://localhost/cb")
    assert "RT-x" not in str(raised.value) and "AT-x" not in str(raised.value)
