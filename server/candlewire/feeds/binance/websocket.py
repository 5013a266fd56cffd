"""Combined-stream websocket connections to Binance, kept open for as long as asked.

A :class:`CombinedStream` owns the connections of one list of streams (at most
1024, Binance's limit per connection). Its :meth:`~CombinedStream.run` loop:

* connects to ``/stream?streams=a/b/...`` (streams beyond ``url_streams`` are
  added with SUBSCRIBE requests, at most a few per second), and calls
  ``on_subscribed`` once every stream is subscribed, so the owner can fill
  the gap since the previous connection from the REST API;
* hands every decoded event to ``on_event``, together with its receive time;
* treats a connection silent for ``silence_timeout`` as dead;
* reconnects after network errors (``OSError``, websockets
  ``ConnectionClosed``, timeouts, 5xx or 429 handshakes) with the service's
  jittered exponential backoff (:class:`~candlewire.retry.Retry`), which
  restarts once a connection stayed healthy for ``backoff_reset`` seconds.
  Anything else (a malformed message, a refused subscription, a bug) ends the
  loop with the error;
* rotates before Binance's 24-hour limit (``lifetime``) and on a
  ``serverShutdown`` event: the replacement is opened first and the old
  connection closed only once the new one delivers, so nothing is missed
  (the overlap is de-duplicated downstream).

Binance pings every 20 s; the websockets client answers pings by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn
from urllib.parse import quote as urlquote

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)

from candlewire.domain import Interval
from candlewire.feeds.binance.errors import BinanceError, BinanceUnavailable
from candlewire.feeds.binance.schemas import (
    ServerShutdown,
    StreamError,
    StreamEvent,
    StreamResponse,
    decode_stream_message,
)
from candlewire.retry import Backoff, Retry
from candlewire.tasks import cancel_and_wait

__all__ = [
    "MAX_STREAMS_PER_CONNECTION",
    "CombinedStream",
    "StreamOptions",
    "is_retryable",
    "stream_names",
]

log = logging.getLogger(__name__)

MAX_STREAMS_PER_CONNECTION = 1024
_SUBSCRIBE_BATCH = 200  # streams per SUBSCRIBE request
_SUBSCRIBE_PERIOD = 0.25  # seconds between requests: Binance allows 5 messages per second


def stream_names(symbol: str, intervals: Sequence[Interval]) -> list[str]:
    """The streams of one symbol: a kline stream per interval, bookTicker and trade."""
    lower = symbol.lower()
    return [f"{lower}@kline_{i.label}" for i in intervals] + [
        f"{lower}@bookTicker",
        f"{lower}@trade",
    ]


def is_retryable(error: BaseException) -> bool:
    """Network trouble, worth a reconnect; anything else is surfaced."""
    if isinstance(error, InvalidStatus):
        status = error.response.status_code
        return status >= 500 or status in (403, 418, 429)
    if isinstance(error, InvalidURI):
        return False
    return isinstance(
        error,
        OSError | TimeoutError | ConnectionClosed | InvalidMessage | BinanceUnavailable,
    )


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How a :class:`CombinedStream` connects, notices death and retries."""

    silence_timeout: float = 30.0
    lifetime: float = 23.5 * 3600
    open_timeout: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    backoff_reset: float = 60.0
    url_streams: int = 200
    """Streams named in the URL; the others are subscribed with SUBSCRIBE requests."""


class _Link:
    """One websocket connection and the task that reads it."""

    def __init__(self, ws: ClientConnection, number: int) -> None:
        self.ws = ws
        self.number = number
        self.opened = asyncio.get_running_loop().time()
        self.reader: asyncio.Task[None] | None = None
        self.rotate = asyncio.Event()
        self.delivered = asyncio.Event()
        self.acks: dict[int, asyncio.Future[None]] = {}

    async def close(self) -> None:
        if self.reader is not None:
            with contextlib.suppress(Exception):
                await cancel_and_wait(self.reader)
        with contextlib.suppress(Exception):
            await self.ws.close()


class CombinedStream:
    """Keeps ``streams`` flowing over one combined-stream connection at a time."""

    def __init__(
        self,
        base_url: str,
        streams: Sequence[str],
        options: StreamOptions,
        *,
        on_event: Callable[[StreamEvent, int], None],
        on_subscribed: Callable[[], None],
        name: str = "stream",
    ) -> None:
        if not 0 < len(streams) <= MAX_STREAMS_PER_CONNECTION:
            raise ValueError(f"1 to {MAX_STREAMS_PER_CONNECTION} streams per connection")
        self.name = name
        self._base = base_url.rstrip("/")
        self._streams = list(streams)
        self._options = options
        self._on_event = on_event
        self._on_subscribed = on_subscribed
        self._up = False
        self._problem = "not connected yet"
        self._next_id = 0
        self.connections = 0
        """Connections opened so far."""
        self.failures = 0
        """Connections lost (not counting planned rotations)."""

    @property
    def up(self) -> bool:
        """True while a subscribed connection is open."""
        return self._up

    @property
    def problem(self) -> str:
        """Why the stream is down (meaningful when not :attr:`up`)."""
        return self._problem

    async def run(self) -> None:
        """Keep the streams flowing until cancelled; raise on non-network errors."""
        options = self._options
        retry = Retry(
            Backoff(initial=options.backoff_initial, maximum=options.backoff_max),
            name=f"Binance {self.name}",
            retryable=is_retryable,
            reset_after=options.backoff_reset,
        )
        current: _Link | None = None  # the connection being read
        link: _Link | None = None  # the newest one (the replacement during a rotation)
        try:
            while True:
                if current is not None and current.reader is not None and current.reader.done():
                    self.failures += 1  # died while its replacement was being opened
                    await current.close()
                    current = None
                try:
                    link = None
                    link = await self._open()
                except Exception as error:
                    if not is_retryable(error):
                        _surface(error)
                    delay = retry.delay_for(error)
                    if current is None:
                        self._down(f"{_describe(error)}; retrying in {delay:.1f}s")
                    await asyncio.sleep(delay)
                    continue
                if current is not None:
                    await self._hand_over(current, link)
                current = link
                self._up = True
                retry.connected()
                self._on_subscribed()
                try:
                    await self._watch(link)
                    log.info("%s: rotating connection #%d", self.name, link.number)
                    continue  # opens the replacement while this one keeps reading
                except Exception as error:
                    if not is_retryable(error):
                        _surface(error)
                    self.failures += 1
                    await link.close()
                    current = None
                    log.info("%s: connection #%d lost", self.name, link.number)
                    delay = retry.delay_for(error)
                    self._down(f"{_describe(error)}; reconnecting in {delay:.1f}s")
                    await asyncio.sleep(delay)
        finally:
            self._up = False
            for open_link in {current, link}:
                if open_link is not None:
                    await open_link.close()

    def _down(self, problem: str) -> None:
        self._up = False
        self._problem = problem

    def _url(self) -> str:
        named = self._streams[: max(1, self._options.url_streams)]
        return f"{self._base}/stream?streams=" + "/".join(urlquote(s, safe="@_!") for s in named)

    async def _open(self) -> _Link:
        """Connect, start reading, subscribe the streams not named in the URL."""
        options = self._options
        ws = await connect(
            self._url(),
            open_timeout=options.open_timeout,
            close_timeout=1.0,
            max_size=2**22,
        )
        self.connections += 1
        link = _Link(ws, self.connections)
        link.reader = asyncio.create_task(self._read(link), name=f"{self.name}#{link.number}")
        try:
            extra = self._streams[max(1, options.url_streams) :]
            for start in range(0, len(extra), _SUBSCRIBE_BATCH):
                if start:
                    await asyncio.sleep(_SUBSCRIBE_PERIOD)
                await self._subscribe(link, extra[start : start + _SUBSCRIBE_BATCH])
        except BaseException:
            await link.close()
            raise
        log.info(
            "%s: connection #%d subscribed to %d streams",
            self.name,
            link.number,
            len(self._streams),
        )
        return link

    async def _subscribe(self, link: _Link, streams: list[str]) -> None:
        self._next_id += 1
        ident = self._next_id
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        link.acks[ident] = ack
        await link.ws.send(json.dumps({"method": "SUBSCRIBE", "params": streams, "id": ident}))
        assert link.reader is not None
        async with asyncio.timeout(self._options.open_timeout):
            done, _ = await asyncio.wait({ack, link.reader}, return_when=asyncio.FIRST_COMPLETED)
        if ack in done:
            ack.result()
            return
        link.reader.result()  # the reader ended: raise its error
        raise BinanceUnavailable("connection closed while subscribing")

    async def _read(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        silence = self._options.silence_timeout
        try:
            async with asyncio.timeout(silence) as deadline:
                while True:
                    message = await link.ws.recv()
                    received = time.time_ns()
                    deadline.reschedule(loop.time() + silence)
                    self._handle(link, decode_stream_message(message), received)
        except TimeoutError:
            raise TimeoutError(f"no message for {silence:g}s") from None

    def _handle(self, link: _Link, event: StreamEvent | None, received: int) -> None:
        if event is None:
            return
        if isinstance(event, StreamResponse | StreamError):
            ack = link.acks.pop(event.id, None) if isinstance(event.id, int) else None
            if isinstance(event, StreamError):
                error = BinanceError(f"stream request {event.id} refused: {event.code} {event.msg}")
                if ack is None or ack.done():
                    raise error
                ack.set_exception(error)
            elif ack is not None and not ack.done():
                ack.set_result(None)
            return
        if isinstance(event, ServerShutdown):
            log.info("%s: serverShutdown on connection #%d", self.name, link.number)
            link.rotate.set()
            return
        link.delivered.set()
        self._on_event(event, received)

    async def _watch(self, link: _Link) -> None:
        """Return when the link should be rotated; raise when it failed."""
        assert link.reader is not None
        remaining = link.opened + self._options.lifetime - asyncio.get_running_loop().time()
        rotate = asyncio.create_task(link.rotate.wait())
        try:
            done, _ = await asyncio.wait(
                {link.reader, rotate},
                timeout=max(0.0, remaining),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            rotate.cancel()
        if link.reader in done:
            link.reader.result()  # the reader only ends with an error
            raise BinanceUnavailable("connection reader ended")

    async def _hand_over(self, old: _Link, new: _Link) -> None:
        """Close ``old`` once ``new`` delivered an event (or after the silence timeout)."""
        assert new.reader is not None
        delivered = asyncio.create_task(new.delivered.wait())
        try:
            await asyncio.wait(
                {delivered, new.reader},
                timeout=self._options.silence_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            delivered.cancel()
        await old.close()
        log.info("%s: connection #%d replaced by #%d", self.name, old.number, new.number)


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _surface(error: Exception) -> NoReturn:
    """Raise a non-retryable error: websockets' own as a BinanceError, others as they are."""
    if isinstance(error, WebSocketException):
        raise BinanceError(f"websocket: {_describe(error)}") from error
    raise error
