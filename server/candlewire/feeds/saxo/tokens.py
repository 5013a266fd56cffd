"""Where the Saxo tokens live: on the server only, never in a page or a log line.

:class:`Tokens` hides its secrets from ``repr``; :class:`TokenStore` keeps
them and the pending login states:

* :class:`RedisTokenStore` (with a Redis URL): one key for the tokens, one
  short-lived key per pending login ``state``, so every process of a
  deployment sees a new login and the one lease holder's refreshes, and a
  callback may reach another process than the login did;
* :class:`FileTokenStore` (no Redis): a JSON file created with mode 0600
  (readable by the service user alone) and replaced atomically; pending
  states stay in memory.

Every save bumps :attr:`Tokens.version`; a reader notices a new login or a
refresh by the version.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from candlewire.errors import StoreUnavailable

__all__ = ["FileTokenStore", "RedisTokenStore", "TokenStore", "Tokens"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Tokens:
    """An access token and the refresh token that renews it (times: epoch seconds)."""

    access_token: str = field(repr=False)
    access_expires: float
    refresh_token: str = field(repr=False)
    refresh_expires: float
    code_verifier: str = field(default="", repr=False)
    """The PKCE verifier of the login, sent again with every refresh."""
    version: int = 0
    broken: bool = False
    """The refresh chain ended (refused refresh, ``_disconnect``): a new login is needed."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "access_token": self.access_token,
                "access_expires": self.access_expires,
                "refresh_token": self.refresh_token,
                "refresh_expires": self.refresh_expires,
                "code_verifier": self.code_verifier,
                "version": self.version,
                "broken": self.broken,
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Tokens:
        data: dict[str, Any] = json.loads(text)
        return cls(
            access_token=str(data["access_token"]),
            access_expires=float(data["access_expires"]),
            refresh_token=str(data["refresh_token"]),
            refresh_expires=float(data["refresh_expires"]),
            code_verifier=str(data.get("code_verifier", "")),
            version=int(data.get("version", 0)),
            broken=bool(data.get("broken", False)),
        )

    def usable(self, now: float | None = None) -> bool:
        """Not broken, and the refresh token (or the access token) is still valid."""
        now = time.time() if now is None else now
        return not self.broken and max(self.refresh_expires, self.access_expires) > now


class TokenStore(Protocol):
    async def load(self) -> Tokens | None:
        """The saved tokens, or None before the first login."""
        ...

    async def save(self, tokens: Tokens) -> Tokens:
        """Save ``tokens`` with the next version; return what was saved."""
        ...

    async def put_state(self, state: str, verifier: str, ttl: float) -> None:
        """Remember a pending login for ``ttl`` seconds."""
        ...

    async def take_state(self, state: str) -> str | None:
        """The verifier of a pending login, removed (a state is single-use); None if unknown."""
        ...

    async def close(self) -> None: ...


class _States:
    """Pending login states in memory, each until its deadline."""

    def __init__(self, limit: int = 64) -> None:
        self._states: dict[str, tuple[str, float]] = {}
        self._limit = limit

    def put(self, state: str, verifier: str, ttl: float) -> None:
        now = time.monotonic()
        self._states = {k: v for k, v in self._states.items() if v[1] > now}
        while len(self._states) >= self._limit:
            del self._states[next(iter(self._states))]
        self._states[state] = (verifier, now + ttl)

    def take(self, state: str) -> str | None:
        found = self._states.pop(state, None)
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]


class FileTokenStore:
    """Tokens in a file only the service user can read (mode 0600)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._states = _States()

    async def load(self) -> Tokens | None:
        return await asyncio.to_thread(self._load)

    def _load(self) -> Tokens | None:
        try:
            mode = self.path.stat().st_mode
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("the Saxo token file was readable by others; it is now mode 0600")
            os.chmod(self.path, 0o600)
        try:
            return Tokens.from_json(text)
        except (ValueError, KeyError, TypeError):
            log.warning("the Saxo token file is not readable; a new login is needed")
            return None

    async def save(self, tokens: Tokens) -> Tokens:
        return await asyncio.to_thread(self._save, tokens)

    def _save(self, tokens: Tokens) -> Tokens:
        current = self._load()
        saved = replace(tokens, version=(current.version if current else 0) + 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(saved.to_json())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)
        return saved

    async def put_state(self, state: str, verifier: str, ttl: float) -> None:
        self._states.put(state, verifier, ttl)

    async def take_state(self, state: str) -> str | None:
        return self._states.take(state)

    async def close(self) -> None:
        return None


_SAVE = """
local current = redis.call('GET', KEYS[1])
local version = 0
if current then version = cjson.decode(current)['version'] or 0 end
local tokens = cjson.decode(ARGV[1])
tokens['version'] = version + 1
local text = cjson.encode(tokens)
redis.call('SET', KEYS[1], text)
return text
"""


class RedisTokenStore:
    """Tokens in Redis (``key``), pending states under ``state_prefix`` with a TTL."""

    def __init__(self, url: str, key: str, state_prefix: str) -> None:
        from redis.asyncio import Redis
        from redis.asyncio.cluster import RedisCluster

        self._key = key
        self._state_prefix = state_prefix
        self._redis: Any
        if url.startswith(("redis+cluster://", "rediss+cluster://")):
            self._redis = RedisCluster.from_url(url.replace("+cluster", "", 1))
        else:
            self._redis = Redis.from_url(url)
        self._save = self._redis.register_script(_SAVE)

    async def _call(self, coroutine: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await coroutine
        except (RedisError, OSError) as error:
            raise StoreUnavailable(f"Redis: {type(error).__name__}") from None

    async def load(self) -> Tokens | None:
        raw = await self._call(self._redis.get(self._key))
        if raw is None:
            return None
        try:
            return Tokens.from_json(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("the Saxo tokens in Redis are not readable; a new login is needed")
            return None

    async def save(self, tokens: Tokens) -> Tokens:
        raw = await self._call(self._save(keys=[self._key], args=[tokens.to_json()]))
        return Tokens.from_json(raw)

    async def put_state(self, state: str, verifier: str, ttl: float) -> None:
        await self._call(
            self._redis.set(self._state_prefix + state, verifier, px=max(1, int(ttl * 1000)))
        )

    async def take_state(self, state: str) -> str | None:
        raw = await self._call(self._redis.getdel(self._state_prefix + state))
        return None if raw is None else bytes(raw).decode()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._redis.aclose()
