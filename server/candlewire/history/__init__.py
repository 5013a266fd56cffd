"""The deep history tier: closed candles in PostgreSQL under the hot store.

- :mod:`~candlewire.history.schema`: versioned migrations and time partitions
- :mod:`~candlewire.history.postgres`: :class:`HistoryStore` (writes, reads, coverage, retention)
- :mod:`~candlewire.history.archive`: the write path behind the hot store
- :mod:`~candlewire.history.tiered`: :class:`TieredStore`, the hot store and history as one store
- :mod:`~candlewire.history.load`: import of data.binance.vision files, Binance REST backfill
"""

from candlewire.history.postgres import HistoryRow, HistoryStore

__all__ = ["HistoryRow", "HistoryStore"]
