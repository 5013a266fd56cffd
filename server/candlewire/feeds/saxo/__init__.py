"""The Saxo Bank OpenAPI FX feed.

* :mod:`~candlewire.feeds.saxo.frames`: the streaming binary frame format (pure);
* :mod:`~candlewire.feeds.saxo.schemas`: wire formats, named as Saxo names them,
  and their translation into domain types (the one place that knows both);
* :mod:`~candlewire.feeds.saxo.streaming`: the pure message processor
  (snapshots, deltas, control messages) and the streaming endpoints;
* :mod:`~candlewire.feeds.saxo.oauth`: login (authorization code with PKCE)
  and the token lifecycle; :mod:`~candlewire.feeds.saxo.tokens`: where tokens live;
* :mod:`~candlewire.feeds.saxo.http`: the REST client and its rate limiter;
* :mod:`~candlewire.feeds.saxo.feed`: :class:`SaxoFeed`;
* :mod:`~candlewire.feeds.saxo.errors`: its errors.
"""

from candlewire.feeds.saxo.errors import LoginRequired, SaxoError, SaxoUnavailable
from candlewire.feeds.saxo.feed import SaxoConfig, SaxoFeed
from candlewire.feeds.saxo.oauth import (
    ENVIRONMENTS,
    LoginFlow,
    LoginRejected,
    OAuthClient,
    SaxoEndpoints,
    TokenKeeper,
)
from candlewire.feeds.saxo.tokens import FileTokenStore, RedisTokenStore, Tokens, TokenStore

__all__ = [
    "ENVIRONMENTS",
    "FileTokenStore",
    "LoginFlow",
    "LoginRejected",
    "LoginRequired",
    "OAuthClient",
    "RedisTokenStore",
    "SaxoConfig",
    "SaxoEndpoints",
    "SaxoError",
    "SaxoFeed",
    "SaxoUnavailable",
    "TokenKeeper",
    "TokenStore",
    "Tokens",
]
