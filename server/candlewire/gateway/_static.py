"""The built web page: files below one directory, and nothing else.

A URL path maps to a file below the directory only if every segment is a
plain name (no ``..``, no ``.``-prefixed names, no backslashes or NULs) and
the resolved file is still inside the directory (no escaping symlinks).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CONTENT_SECURITY_POLICY", "StaticFile", "StaticFiles"]

# The one inline <style> allowed is the attribution logo's that lightweight-charts
# injects (its licence asks for the attribution); the browser tests fail on any
# CSP violation, so a library upgrade that changes it is noticed.
_ATTRIBUTION_STYLE = "'sha256-3pRED1tOXas1FXFoPb9TGCjmYe9XQsmO9OV23khV2nY='"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; "
    f"style-src 'self' {_ATTRIBUTION_STYLE}; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
    ".json": b"application/json",
    ".map": b"application/json",
    ".txt": b"text/plain; charset=utf-8",
    ".woff2": b"font/woff2",
}


@dataclass(frozen=True, slots=True)
class StaticFile:
    """A file to answer with."""

    body: bytes
    content_type: bytes
    etag: bytes

    @property
    def is_html(self) -> bool:
        return self.content_type.startswith(b"text/html")


class StaticFiles:
    """Files below ``root``; ``/`` is ``index.html``."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _locate(self, url_path: str) -> Path | None:
        relative = url_path.lstrip("/") or "index.html"
        if relative.endswith("/"):
            relative += "index.html"
        parts = relative.split("/")
        for part in parts:
            if not part or part.startswith(".") or "\\" in part or "\x00" in part:
                return None
        candidate = self.root.joinpath(*parts)
        try:
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not resolved.is_relative_to(self.root) or not resolved.is_file():
            return None
        return resolved

    def _read(self, path: Path) -> StaticFile:
        stat = path.stat()
        etag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'.encode()
        content_type = _TYPES.get(path.suffix.lower(), b"application/octet-stream")
        with path.open("rb") as file:
            body = file.read()
        return StaticFile(body, content_type, etag)

    async def get(self, url_path: str) -> StaticFile | None:
        """The file for a URL path, or None (unknown, hidden or outside the root)."""
        path = self._locate(url_path)
        if path is None:
            return None
        try:
            return await asyncio.to_thread(self._read, path)
        except OSError:
            return None

    def exists(self) -> bool:
        """Whether the directory holds a page (``index.html``)."""
        return os.path.isfile(self.root / "index.html")
