"""The feed registry and the store builder: what the settings name is what runs."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from candlewire.config import Settings, load
from candlewire.feeds.binance import BinanceFeed
from candlewire.feeds.registry import FEEDS, build_feed
from candlewire.feeds.replay import ReplayFeed
from candlewire.feeds.sim import SimFeed
from candlewire.store import build_store
from candlewire.store.memory import MemoryStore
from candlewire.store.redis import RedisStore


def test_every_feed_the_setting_accepts_has_a_builder_and_no_other() -> None:
    accepted = set(typing.get_args(Settings.model_fields["feed"].annotation))
    assert set(FEEDS) == accepted


@pytest.mark.parametrize(
    ("settings", "kind"),
    [
        ({"feed": "sim"}, SimFeed),
        ({"feed": "binance", "binance_rest_url": "http://127.0.0.1:1"}, BinanceFeed),
        ({"feed": "replay", "replay_path": "recorded"}, ReplayFeed),
    ],
)
def test_build_feed_builds_the_named_feed(
    settings: dict[str, str], kind: type, tmp_path: Path
) -> None:
    if "replay_path" in settings:
        settings["replay_path"] = str(tmp_path / settings["replay_path"])
    assert type(build_feed(load(**settings))) is kind


def test_binance_is_configured_from_the_settings() -> None:
    feed = build_feed(
        load(feed="binance", binance_rest_url="http://127.0.0.1:1", binance_history=42)
    )
    assert isinstance(feed, BinanceFeed)
    assert feed.config.rest_url == "http://127.0.0.1:1"
    assert feed.config.history == 42


async def test_build_store_is_redis_only_for_a_redis_url() -> None:
    assert type(build_store(load())) is MemoryStore
    store = build_store(load(redis_url="redis://127.0.0.1:1/0", redis_prefix="t9:"))
    try:
        assert type(store) is RedisStore
        assert store.keys.epoch == "t9:epoch"
    finally:
        await store.close()
