"""Stores: where prices, candles and the update log live.

:class:`~candlewire.store.base.Store` is the interface; :class:`MemoryStore`
keeps everything in the process (the embedded default).
"""

from candlewire.store.base import CandleSlice, Snapshot, Store, Update
from candlewire.store.memory import MemoryStore

__all__ = ["CandleSlice", "MemoryStore", "Snapshot", "Store", "Update"]
