"""API keys: the keys file, its reloading, and new keys.

The file (``CANDLEWIRE_API_KEYS_FILE``) is JSON and holds no key, only the
SHA-256 of each::

    {"keys": [
      {"name": "desk-fx", "hash": "sha256:9f86d0...", "scopes": ["prices", "streams"],
       "rate": 50, "streams": 10}
    ]}

``scopes`` defaults to ``["read"]`` (every method of the service), ``rate``
(unary requests per second, with a burst of one second's worth) and
``streams`` (concurrent streams) to the service's per-key defaults. A key is
``cwk_`` and 43 random URL-safe characters (256 bits), so a fast hash is the
right one: there is nothing to guess, and a slow hash would cost every call.
A presented key is hashed and looked up; the comparison is of digests, so its
timing says nothing about the key.

:class:`KeyRing` checks the file's identity (inode, size, modification time)
at most once per ``reload_interval`` seconds on the calling path (a ``stat``)
and reloads it when it changed; a file that no longer parses keeps the keys
it had and is reported once per change.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from candlewire.errors import ConfigError

__all__ = [
    "KEY_PREFIX",
    "ApiKey",
    "KeyRing",
    "add_key",
    "hash_key",
    "new_key",
    "read_keys",
]

log = logging.getLogger(__name__)

KEY_PREFIX = "cwk_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_SCOPE = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One entry of the keys file (``rate``/``streams`` None: the service's defaults)."""

    name: str
    digest: str
    scopes: frozenset[str]
    rate: float | None = None
    streams: int | None = None


def hash_key(key: str) -> str:
    """The keys file's form of ``key``: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def new_key() -> str:
    """A new random key."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _entry(raw: Any, index: int) -> ApiKey:
    where = f"keys[{index}]"
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where} is not an object")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{where}.name must be 1-64 letters, digits, '.', '_', '@' or '-'")
    digest = raw.get("hash")
    if not isinstance(digest, str) or not _HASH.match(digest):
        raise ValueError(f"{where}.hash must be sha256:<64 hex digits>")
    scopes = raw.get("scopes", ["read"])
    if not isinstance(scopes, list) or not all(
        isinstance(s, str) and _SCOPE.match(s) for s in scopes
    ):
        raise ValueError(f"{where}.scopes must be a list of scope names")
    rate = raw.get("rate")
    if rate is not None and (
        isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0
    ):
        raise ValueError(f"{where}.rate must be a positive number (requests per second)")
    streams = raw.get("streams")
    if streams is not None and (
        isinstance(streams, bool) or not isinstance(streams, int) or streams < 0
    ):
        raise ValueError(f"{where}.streams must be a whole number >= 0")
    unknown = set(raw) - {"name", "hash", "scopes", "rate", "streams", "created"}
    if unknown:
        raise ValueError(f"{where} has unknown fields: {', '.join(sorted(unknown))}")
    return ApiKey(name, digest, frozenset(scopes), None if rate is None else float(rate), streams)


def _parse(text: str) -> list[ApiKey]:
    document = json.loads(text)
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError('expected {"keys": [...]}')
    keys = [_entry(raw, i) for i, raw in enumerate(document["keys"])]
    names = [k.name for k in keys]
    if len(set(names)) != len(names):
        raise ValueError("key names must be distinct")
    return keys


def read_keys(path: Path) -> list[ApiKey]:
    """The keys in ``path``; raises OSError or ValueError (never showing a hash)."""
    return _parse(path.read_text(encoding="utf-8"))


def _identity(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class KeyRing:
    """The keys of one file, by digest; reloaded when the file changes."""

    def __init__(self, path: Path | str, *, reload_interval: float = 1.0) -> None:
        """Read the file now: a ConfigError names the setting if it cannot be read."""
        self.path = Path(path)
        self.reload_interval = reload_interval
        self._identity = _identity(self.path)
        try:
            keys = read_keys(self.path)
        except (OSError, ValueError, UnicodeDecodeError) as error:
            raise ConfigError(
                f"api_keys_file (CANDLEWIRE_API_KEYS_FILE): cannot use {self.path}: "
                f"{_reason(error)}"
            ) from None
        self._by_digest = {k.digest: k for k in keys}
        self._known: dict[str, ApiKey] = {}
        """Keys presented recently and found: the hash is computed once per key."""
        self._checked = time.monotonic()
        self.reloads = 0
        self.reload_errors = 0
        log.info("API keys: %d loaded from %s", len(keys), self.path)

    def __len__(self) -> int:
        return len(self._by_digest)

    @property
    def names(self) -> list[str]:
        return sorted(k.name for k in self._by_digest.values())

    def generation(self) -> int:
        """A number that changes when the keys are replaced; the file is
        looked at (a ``stat``) at most once per ``reload_interval``."""
        now = time.monotonic()
        if now - self._checked >= self.reload_interval:
            self._checked = now
            self.check()
        return self.reloads

    def lookup(self, key: str) -> ApiKey | None:
        """The entry of ``key``, or None."""
        self.generation()
        found = self._known.get(key)
        if found is None:
            found = self._by_digest.get(hash_key(key))
            if found is not None:  # only valid keys: a guessing client cannot grow it
                if len(self._known) >= 1024:
                    self._known.clear()
                self._known[key] = found
        return found

    def check(self) -> bool:
        """Reload the file if it changed; whether the keys were replaced."""
        identity = _identity(self.path)
        if identity == self._identity:
            return False
        self._identity = identity
        try:
            keys = read_keys(self.path)
        except (OSError, ValueError, UnicodeDecodeError) as error:
            self.reload_errors += 1
            log.error(
                "API keys: %s changed but cannot be used (%s); keeping the %d keys loaded",
                self.path,
                _reason(error),
                len(self._by_digest),
            )
            return False
        self._by_digest = {k.digest: k for k in keys}
        self._known = {}
        self.reloads += 1
        log.info("API keys: %d loaded from %s (changed)", len(keys), self.path)
        return True


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError):
        return error.strerror or type(error).__name__
    if isinstance(error, json.JSONDecodeError):
        return f"not JSON (line {error.lineno}, column {error.colno})"
    return str(error) or type(error).__name__


def add_key(
    path: Path | str,
    name: str,
    *,
    scopes: Sequence[str] = ("read",),
    rate: float | None = None,
    streams: int | None = None,
) -> str:
    """Create a key named ``name`` in ``path`` (created if missing); return the key.

    The file is replaced atomically (written beside it, then renamed), so a
    server reloading it never reads half a file. Raises ValueError for a
    name already there or an invalid entry, OSError when it cannot be written.
    """
    path = Path(path)
    document: dict[str, Any] = {"keys": []}
    if path.exists():
        text = path.read_text(encoding="utf-8")
        if text.strip():
            _parse(text)  # refuse to extend a file the server would not load
            document = json.loads(text)
    key = new_key()
    entry: dict[str, Any] = {"name": name, "hash": hash_key(key), "scopes": list(scopes)}
    if rate is not None:
        entry["rate"] = rate
    if streams is not None:
        entry["streams"] = streams
    entry["created"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if any(raw.get("name") == name for raw in document["keys"]):
        raise ValueError(f"a key named {name!r} already exists in {path}")
    document["keys"].append(entry)
    _parse(json.dumps(document))  # the new entry is valid
    _write_atomically(path, json.dumps(document, indent=2) + "\n")
    return key


def _write_atomically(path: Path, text: str) -> None:
    directory = path.resolve().parent
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o777)
        else:
            os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        _unlink(temporary)
        raise


def _unlink(name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name)
