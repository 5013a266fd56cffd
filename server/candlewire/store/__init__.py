"""Stores: where prices, candles and the update log live.

:class:`~candlewire.store.base.Store` is the interface; :class:`MemoryStore`
keeps everything in the process (the embedded default);
:mod:`candlewire.store.redis` shares it between processes, and
:mod:`candlewire.store.cached` is a serving replica's view of a shared store.
:func:`build_store` picks the store the settings name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from candlewire.store.base import CandleSlice, Snapshot, Store, Update
from candlewire.store.memory import MemoryStore

if TYPE_CHECKING:
    from candlewire.config import Settings

__all__ = ["CandleSlice", "MemoryStore", "Snapshot", "Store", "Update", "build_store"]


def build_store(settings: Settings) -> Store:
    """The Redis store when ``settings.redis_url`` is set, else the memory store.

    Redis (and redis-py) is imported only when a Redis URL is set.
    """
    if settings.redis_url:
        from candlewire.store.redis import RedisStore

        return RedisStore(
            settings.redis_url,
            prefix=settings.redis_prefix,
            retention=settings.retention,
            log_size=settings.update_log_size,
            quote_ttl=settings.quote_ttl,
            ticks=settings.recent_ticks,
            trade_retention=settings.trade_retention,
            trade_window=_window(settings),
        )
    return MemoryStore(
        retention=settings.retention,
        log_size=settings.update_log_size,
        ticks=settings.recent_ticks,
        trade_retention=settings.trade_retention,
        trade_window=_window(settings),
    )


def _window(settings: Settings) -> int | None:
    """The trade window in nanoseconds (None: no limit)."""
    return round(settings.trade_window * 1e9) or None
