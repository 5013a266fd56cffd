"""Which feed a deployment runs: a registry from feed name to builder.

``settings.feed`` names the feed; :func:`build_feed` looks its builder up
in :data:`FEEDS`. A venue module is imported only by its builder, so the
embedded defaults start without loading websockets or a venue's code. A new
feed adds one builder here (and its name to the ``feed`` setting); neither
the wiring (:mod:`candlewire.app`) nor the API changes.
"""

from __future__ import annotations

from collections.abc import Callable

from candlewire.config import Settings
from candlewire.feeds.base import Feed

__all__ = ["FEEDS", "FeedBuilder", "build_feed"]

FeedBuilder = Callable[[Settings], Feed]
"""Builds a feed configured from the settings."""


def _sim(settings: Settings) -> Feed:
    from candlewire.feeds.sim import SimFeed

    return SimFeed(
        settings.symbols,
        rate=settings.sim_rate,
        seed=settings.sim_seed,
        history_minutes=settings.sim_history,
    )


def _binance(settings: Settings) -> Feed:
    from candlewire.feeds.binance import BinanceConfig, BinanceFeed

    return BinanceFeed(
        settings.symbols,
        settings.intervals,
        BinanceConfig(
            rest_url=settings.binance_rest_url,
            ws_url=settings.binance_ws_url,
            history=settings.binance_history,
            silence_timeout=settings.binance_silence_timeout,
            weight_share=settings.binance_weight_share,
            connection_lifetime=settings.binance_connection_lifetime,
            # Asked once per attempt: the App asks again with its own backoff
            # (the same for every feed) and reports readiness meanwhile.
            startup_attempts=1,
        ),
    )


def _replay(settings: Settings) -> Feed:
    from candlewire.feeds.replay import ReplayFeed

    return ReplayFeed(
        settings.replay_path,
        settings.symbols,
        settings.intervals,
        speed=settings.replay_speed,
    )


def _saxo(settings: Settings) -> Feed:
    from candlewire.feeds.saxo import setup

    saxo = setup.from_settings(settings)
    return setup.feed(settings.symbols, saxo, setup.build(saxo))


FEEDS: dict[str, FeedBuilder] = {
    "sim": _sim,
    "binance": _binance,
    "replay": _replay,
    "saxo": _saxo,
}
"""Feed name (the ``feed`` setting) -> its builder."""


def build_feed(settings: Settings) -> Feed:
    """The feed ``settings.feed`` names, configured from the settings."""
    try:
        builder = FEEDS[settings.feed]
    except KeyError:
        known = ", ".join(sorted(FEEDS))
        raise ValueError(f"feed {settings.feed!r} has no builder (known: {known})") from None
    return builder(settings)
