"""The deep history tier: closed candles in PostgreSQL under the hot store.

- :mod:`~candlewire.history.schema`: versioned migrations and time partitions
- :mod:`~candlewire.history.blocks`: how candles are packed into rows
- :mod:`~candlewire.history.postgres`: :class:`HistoryStore` (writes, reads, coverage, retention)
- :mod:`~candlewire.history.archive`: the write path behind the hot store
- :mod:`~candlewire.history.tiered`: :class:`TieredStore`, the hot store and history as one store
- :mod:`~candlewire.history.tier`: :class:`HistoryTier`, what a process does with it
- :mod:`~candlewire.history.load`: import of data.binance.vision files, REST backfill, roll-ups
- :mod:`~candlewire.history.options`: its settings, parsed (no driver loaded)

The PostgreSQL driver is loaded only when a name that needs it is used, so
the settings can be read without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from candlewire.history.postgres import HistoryRow, HistoryStore

__all__ = ["HistoryRow", "HistoryStore"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from candlewire.history import postgres

        return getattr(postgres, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
