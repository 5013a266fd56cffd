"""Saxo streaming: the pure message processor and the socket's HTTP/websocket edges.

:class:`PriceStream` has no I/O (so tests and ``bench/saxo.py`` drive it
with recorded bytes): it takes each websocket message, splits it into
frames (:mod:`~candlewire.feeds.saxo.frames`), remembers the last message id
(for ``messageid=`` on reconnect), merges price payloads into one
:class:`~candlewire.feeds.saxo.schemas.PriceBook` per subscription and
returns a :class:`Batch`: the quotes that changed, one tick per bid/ask
change in arrival order, and the control messages for the feed to act on.

Deltas of a subscription whose HTTP reply has not arrived yet (Saxo may
stream before it answers) are buffered and applied after its snapshot
(:meth:`PriceStream.expect`, :meth:`PriceStream.subscribed`). Messages of
reference ids no longer subscribed (an old subscription after a reset) are
dropped. Payloads in a format other than JSON are skipped and counted.

Endpoints (developer.saxo/openapi/learn/plain-websocket-streaming): the
websocket is ``{streaming_url}/connect?contextId=...`` (with
``&messageid=<last>`` to resume: Saxo sends what was missed, or
``_resetsubscriptions`` when it cannot), authorised with an
``Authorization: Bearer`` header; an open socket is re-authorised by
``PUT {streaming_url}/authorize?contextId=...`` (same host over HTTPS) with the
new token, otherwise Saxo closes it when the token expires.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from candlewire.domain import MarketState, Quote
from candlewire.feeds.saxo.errors import SaxoError
from candlewire.feeds.saxo.frames import FORMAT_JSON, Frame, decode
from candlewire.feeds.saxo.schemas import (
    CONTROL_CONNECTION_HEARTBEAT,
    CONTROL_DISCONNECT,
    CONTROL_HEARTBEAT,
    CONTROL_RECONNECT,
    CONTROL_RESET,
    PriceBook,
    control_messages,
    json_payload,
)

__all__ = [
    "SOCKET_LOG",
    "Batch",
    "Disconnect",
    "HeartbeatEvent",
    "PriceStream",
    "Reconnect",
    "ResetSubscriptions",
    "authorize_url",
    "connect_url",
]


@dataclass(frozen=True, slots=True)
class HeartbeatEvent:
    """Saxo has nothing new for ``reference_id`` (``reason``: why)."""

    reference_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ResetSubscriptions:
    """Re-create these subscriptions (all when ``targets`` is empty)."""

    targets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Saxo ended the session: the login is gone."""


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Saxo asks the client to reconnect."""


Control = HeartbeatEvent | ResetSubscriptions | Disconnect | Reconnect


@dataclass(slots=True)
class Batch:
    """What one websocket message changed."""

    quotes: dict[str, Quote] = field(default_factory=dict)
    """The newest quote per symbol that changed."""
    ticks: list[Quote] = field(default_factory=list)
    """One entry per bid/ask change, in arrival order."""
    controls: list[Control] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    """Reference ids that sent data or a heartbeat."""
    closed: list[str] = field(default_factory=list)
    """Symbols whose market went from open to not open in this message."""
    alive: bool = False
    """The message carried a connection heartbeat (the connection is idle, not dead)."""


class PriceStream:
    """Frames in, quotes and control events out (see the module docstring)."""

    def __init__(self, buffer_limit: int = 10_000) -> None:
        self.books: dict[str, PriceBook] = {}
        """Live subscriptions by reference id."""
        self._waiting: dict[str, list[Any]] = {}
        self._buffer_limit = buffer_limit
        self.last_message_id: int | None = None
        self.messages = 0
        self.frames = 0
        self.skipped = 0
        """Frames skipped: unknown payload format, or a reference id not subscribed."""
        self.unknown_formats = 0

    def expect(self, reference_id: str) -> None:
        """A subscription request for ``reference_id`` is on its way: buffer its deltas."""
        self._waiting[reference_id] = []

    def subscribed(self, reference_id: str, book: PriceBook, snapshot: Any) -> PriceBook:
        """The reply arrived: apply ``snapshot``, then the deltas that came first."""
        book.apply(snapshot)
        for delta in self._waiting.pop(reference_id, ()):
            book.apply(delta)
        self.books[reference_id] = book
        return book

    def drop(self, reference_ids: Iterable[str]) -> None:
        for reference_id in reference_ids:
            self.books.pop(reference_id, None)
            self._waiting.pop(reference_id, None)

    def feed(self, data: bytes, receive_time: int) -> Batch:
        """Process one websocket message."""
        batch = Batch()
        frames = decode(data)
        self.messages += 1
        self.frames += len(frames)
        books = self.books
        for frame in frames:
            reference = frame.reference_id
            if reference == CONTROL_CONNECTION_HEARTBEAT:
                batch.alive = True  # carries no message id to resume from
                continue
            self.last_message_id = frame.message_id
            if frame.payload_format != FORMAT_JSON:
                self.unknown_formats += 1
                self.skipped += 1
                continue
            if reference.startswith("_"):
                self._control(frame, batch)
                continue
            book = books.get(reference)
            if book is None:
                waiting = self._waiting.get(reference)
                if waiting is None:
                    self.skipped += 1
                elif len(waiting) < self._buffer_limit:
                    waiting.append(_object(frame))
                continue
            batch.touched.add(reference)
            was_open = book.market in _OPEN
            ticked = book.apply(_object(frame))
            if was_open and book.market not in _OPEN:
                batch.closed.append(book.symbol)
            if book.complete:
                quote = book.quote(receive_time)
                batch.quotes[book.symbol] = quote
                if ticked and book.market in _OPEN:
                    batch.ticks.append(quote)
        return batch

    def _control(self, frame: Frame, batch: Batch) -> None:
        for message in control_messages(json_payload(frame.payload, frame.reference_id)):
            kind = message.get("ReferenceId", frame.reference_id)
            if kind == CONTROL_HEARTBEAT:
                for beat in message.get("Heartbeats") or ():
                    if isinstance(beat, dict):
                        reference = str(beat.get("OriginatingReferenceId", ""))
                        batch.touched.add(reference)
                        batch.controls.append(
                            HeartbeatEvent(reference, str(beat.get("Reason", "")))
                        )
            elif kind == CONTROL_RESET:
                targets = message.get("TargetReferenceIds") or ()
                batch.controls.append(ResetSubscriptions(tuple(str(t) for t in targets)))
            elif kind == CONTROL_DISCONNECT:
                batch.controls.append(Disconnect())
            elif kind == CONTROL_RECONNECT:
                batch.controls.append(Reconnect())


class _Redact(logging.Filter):
    """Hide credentials in the websockets library's handshake log lines (``> %s: %s``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            isinstance(args, tuple)
            and len(args) == 2
            and isinstance(args[0], str)
            and args[0].lower() in ("authorization", "cookie", "set-cookie")
        ):
            record.args = (args[0], "[redacted]")
        return True


SOCKET_LOG = logging.getLogger("candlewire.feeds.saxo.socket")
"""The logger the streaming websocket reports to: credentials are redacted."""
SOCKET_LOG.addFilter(_Redact())


_OPEN = frozenset((MarketState.OPEN, MarketState.UNSPECIFIED))


def _object(frame: Frame) -> Any:
    payload = json_payload(frame.payload, frame.reference_id)
    if not isinstance(payload, dict):
        raise SaxoError(f"streaming payload of {frame.reference_id!r} is not a JSON object")
    return payload


def connect_url(streaming_url: str, context_id: str, message_id: int | None) -> str:
    # sendHeartbeats: Saxo sends _connectionheartbeat when the connection is idle.
    query = {"contextId": context_id, "sendHeartbeats": "true"}
    if message_id is not None:
        query["messageid"] = str(message_id)
    return f"{streaming_url.rstrip('/')}/connect?{urlencode(query)}"


def authorize_url(streaming_url: str, context_id: str) -> str:
    base = streaming_url.rstrip("/")
    if base.startswith("wss://"):
        base = "https://" + base[len("wss://") :]
    elif base.startswith("ws://"):
        base = "http://" + base[len("ws://") :]
    return f"{base}/authorize?{urlencode({'contextId': context_id})}"
