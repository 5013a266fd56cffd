"""The Redis store (one Redis, or a Redis Cluster) and its key schema.

Importing this package imports redis-py: the service imports it only when
its settings name a Redis URL.
"""

from candlewire.store.redis.store import CLUSTER_SCHEMES, Bounds, RedisStore

__all__ = ["CLUSTER_SCHEMES", "Bounds", "RedisStore"]
