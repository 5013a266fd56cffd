"""Building the Saxo feed's parts from its settings (the app and the CLI share this)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from candlewire.config import Settings, parse_listen
from candlewire.errors import ConfigError
from candlewire.feeds.saxo.feed import SaxoConfig, SaxoFeed
from candlewire.feeds.saxo.oauth import (
    ENVIRONMENTS,
    LoginFlow,
    OAuthClient,
    SaxoEndpoints,
    TokenKeeper,
)
from candlewire.feeds.saxo.routes import LOOPBACK, LoginRoutes
from candlewire.feeds.saxo.tokens import FileTokenStore, RedisTokenStore, TokenStore

__all__ = ["SaxoParts", "SaxoSettings", "build", "default_token_file", "feed", "from_settings"]


def default_token_file() -> str:
    """``$XDG_STATE_HOME/candlewire/saxo-tokens.json`` (``~/.local/state`` by default)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "candlewire" / "saxo-tokens.json")


@dataclass(frozen=True, slots=True)
class SaxoSettings:
    """The ``CANDLEWIRE_SAXO_*`` settings (see README, "Saxo FX")."""

    app_key: str
    app_secret: str = field(default="", repr=False)
    env: Literal["sim", "live"] = "sim"
    redirect_url: str = "http://localhost:8080/auth/saxo/callback"
    auth_url: str = ""
    rest_url: str = ""
    streaming_url: str = ""
    candle_price: Literal["mid", "bid", "ask"] = "mid"
    token_file: str = ""
    login_allow: tuple[str, ...] = LOOPBACK
    redis_url: str = ""
    redis_prefix: str = "cw:"

    def endpoints(self) -> SaxoEndpoints:
        base = ENVIRONMENTS[self.env]
        return SaxoEndpoints(
            (self.auth_url or base.auth_url).rstrip("/"),
            (self.rest_url or base.rest_url).rstrip("/"),
            (self.streaming_url or base.streaming_url).rstrip("/"),
        )


def from_settings(settings: Settings) -> SaxoSettings:
    """The Saxo part of the service's settings."""
    redirect = settings.saxo_redirect_url
    if not redirect:
        port = parse_listen(settings.http_listen)[1] if settings.http_listen else 8080
        redirect = f"http://localhost:{port}/auth/saxo/callback"
    return SaxoSettings(
        app_key=settings.saxo_app_key,
        app_secret=settings.saxo_app_secret.get_secret_value(),
        env=settings.saxo_env,
        redirect_url=redirect,
        auth_url=settings.saxo_auth_url,
        rest_url=settings.saxo_rest_url,
        streaming_url=settings.saxo_streaming_url,
        candle_price=settings.saxo_candle_price,
        token_file=settings.saxo_token_file,
        login_allow=settings.saxo_login_allow,
        redis_url=settings.redis_url,
        redis_prefix=settings.redis_prefix,
    )


@dataclass(frozen=True, slots=True)
class SaxoParts:
    store: TokenStore
    oauth: OAuthClient
    flow: LoginFlow
    keeper: TokenKeeper
    routes: LoginRoutes


def build(settings: SaxoSettings) -> SaxoParts:
    """Token store (Redis when configured, else the file), OAuth client, login flow, keeper."""
    if not settings.app_key:
        raise ConfigError(
            "saxo_app_key (--saxo-app-key / CANDLEWIRE_SAXO_APP_KEY): required with feed saxo"
        )
    endpoints = settings.endpoints()
    store: TokenStore
    if settings.redis_url:
        store = RedisTokenStore(
            settings.redis_url,
            key=f"{settings.redis_prefix}saxo:tokens",
            state_prefix=f"{settings.redis_prefix}saxo:login:",
        )
    else:
        store = FileTokenStore(settings.token_file or default_token_file())
    oauth = OAuthClient(endpoints.auth_url, settings.app_key, settings.app_secret)
    flow = LoginFlow(oauth, store, settings.redirect_url)
    keeper = TokenKeeper(oauth, store, settings.redirect_url)
    return SaxoParts(store, oauth, flow, keeper, LoginRoutes(flow, settings.login_allow))


def feed(
    symbols: list[str] | tuple[str, ...], settings: SaxoSettings, parts: SaxoParts
) -> SaxoFeed:
    return SaxoFeed(
        symbols,
        SaxoConfig(settings.endpoints(), candle_price=settings.candle_price),
        parts.keeper,
        routes=dict.fromkeys(parts.routes.paths, parts.routes),
    )
