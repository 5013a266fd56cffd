"""gRPC over raw HTTP/2 (the ``h2`` library on an asyncio socket), for inputs
a gRPC client library does not produce: many streams opened at once before
anything is read, chosen SETTINGS (initial window, concurrent streams), and
streams whose data is never acknowledged (a client that does not read).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.settings

__all__ = ["RawGrpc", "RawStream"]

_PREFIX = struct.Struct(">?I")


@dataclass
class RawStream:
    """What one stream received."""

    stream_id: int
    headers: dict[str, str] | None = None
    trailers: dict[str, str] | None = None
    reset: int | None = None
    buffer: bytearray = field(default_factory=bytearray)
    messages: list[bytes] = field(default_factory=list)
    ended: bool = False

    @property
    def status(self) -> str | None:
        """grpc-status from the trailers (or a trailers-only response)."""
        for block in (self.trailers, self.headers):
            if block is not None and "grpc-status" in block:
                return block["grpc-status"]
        return None

    def _data(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= _PREFIX.size:
            _, length = _PREFIX.unpack_from(self.buffer)
            if len(self.buffer) < _PREFIX.size + length:
                break
            self.messages.append(bytes(self.buffer[_PREFIX.size : _PREFIX.size + length]))
            del self.buffer[: _PREFIX.size + length]


def _text(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


class RawGrpc:
    """One HTTP/2 connection (prior knowledge, no TLS) to a gRPC server.

    ``reading=False``: received data is never acknowledged (no WINDOW_UPDATE),
    as by a client that does not read; ``initial_window`` is the stream
    window this client advertises.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        reading: bool = True,
        initial_window: int | None = None,
        max_concurrent_streams: int | None = None,
    ) -> None:
        self._address = (host, port)
        self._authority = f"{host}:{port}"
        self.reading = reading
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self._settings: dict[int, int] = {}
        if initial_window is not None:
            self._settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = initial_window
        if max_concurrent_streams is not None:
            self._settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] = max_concurrent_streams
        self.streams: dict[int, RawStream] = {}
        self.closed = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._changed = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RawGrpc:
        self._reader, self._writer = await asyncio.open_connection(*self._address)
        self._conn.initiate_connection()
        if self._settings:
            self._conn.update_settings(self._settings)
        if self.reading:  # a large connection window, as gRPC clients open
            self._conn.increment_flow_control_window(16 << 20)
        await self.flush()
        self._pump = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
        if self._writer is not None:
            self._writer.close()
            await asyncio.gather(self._writer.wait_closed(), return_exceptions=True)

    def open(self, path: str, message: bytes, metadata: dict[str, str] | None = None) -> RawStream:
        """Start a call (HEADERS and its one request message); send with :meth:`flush`."""
        stream_id = self._conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", self._authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            *(metadata or {}).items(),
        ]
        self._conn.send_headers(stream_id, [(k.encode(), v.encode()) for k, v in headers])
        self._conn.send_data(
            stream_id, _PREFIX.pack(False, len(message)) + message, end_stream=True
        )
        stream = self.streams[stream_id] = RawStream(stream_id)
        return stream

    async def grant(self, stream: RawStream, size: int) -> None:
        """Let the server send ``size`` more bytes on ``stream`` (a WINDOW_UPDATE)."""
        self._conn.increment_flow_control_window(size, stream_id=stream.stream_id)
        await self.flush()

    async def flush(self) -> None:
        assert self._writer is not None
        data = self._conn.data_to_send()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def until(self, done: Callable[[], bool], within: float) -> None:
        """Wait until ``done()`` holds (re-checked after every frame), with a deadline."""
        async with asyncio.timeout(within):
            while not done():
                if self.closed:
                    raise ConnectionError("the server closed the connection")
                self._changed.clear()
                await self._changed.wait()

    async def _read(self) -> None:
        assert self._reader is not None
        try:
            while data := await self._reader.read(65536):
                for event in self._conn.receive_data(data):
                    self._handle(event)
                await self.flush()
                self._changed.set()
        finally:
            self.closed = True
            self._changed.set()

    def _handle(self, event: h2.events.Event) -> None:
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.ResponseReceived) and stream is not None:
            stream.headers = _text(event.headers)
        elif isinstance(event, h2.events.TrailersReceived) and stream is not None:
            stream.trailers = _text(event.headers)
        elif isinstance(event, h2.events.DataReceived) and stream is not None:
            stream._data(event.data)
            if self.reading and event.flow_controlled_length:
                self._conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded) and stream is not None:
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            stream.reset = event.error_code
            stream.ended = True
