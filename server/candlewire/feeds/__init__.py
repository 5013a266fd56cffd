"""Upstream feeds: one module per venue, each emitting domain events."""

from candlewire.feeds.base import Feed, FeedSink

__all__ = ["Feed", "FeedSink"]
