"""A work-around for Hypercorn's HTTP/2 handling of request bodies that
arrive after the response.

A server may answer before it has read the whole request (RFC 9113, 8.1):
the gateway does for a wrong content type, a refused origin, an oversized
body or a method it does not carry. Hypercorn (0.18) forgets a stream once
its response is complete, and a DATA frame that then arrives for it raises
``KeyError`` in its event handler, which tears down the whole connection,
every other stream on it included (a browser's live subscription, say).
Its handler already ignores a late END_STREAM for the same reason; this
patch does the same for DATA: the bytes are dropped and acknowledged, so
the connection's flow-control window is not lost.
"""

from __future__ import annotations

import logging
from typing import Any

import h2.events
from hypercorn.protocol.h2 import H2Protocol

__all__ = ["install"]

log = logging.getLogger(__name__)

_MARK = "_candlewire_late_data_patch"


def install() -> None:
    """Patch :class:`H2Protocol` once (idempotent)."""
    if getattr(H2Protocol, _MARK, False):
        return
    original = H2Protocol._handle_events

    async def handle_events(self: Any, events: list[h2.events.Event]) -> None:
        # In order: a DATA frame's stream may be opened by an earlier event
        # of the same batch.
        batch: list[h2.events.Event] = []
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                if batch:
                    await original(self, batch)
                    batch = []
                if event.stream_id not in self.streams:
                    self.connection.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                    await self._flush()
                    continue
            batch.append(event)
        if batch:
            await original(self, batch)

    H2Protocol._handle_events = handle_events  # type: ignore[method-assign]
    setattr(H2Protocol, _MARK, True)
