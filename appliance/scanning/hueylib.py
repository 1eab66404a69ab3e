"""Huey, loaded without the Redis client: :func:`with_redis` hands it over when a Redis queue is made.

``huey.storage`` imports the Redis client whenever it is installed, and that import (redis's asyncio
client, its parsers, its package metadata) was the largest single part of the appliance's start, in
the binary most of all, though only ``queue.backend = "redis"`` and remote workers use it. Everything
the scan queue takes from huey is imported from here, so that this runs first.
"""
from __future__ import annotations

import sys

if "redis" in sys.modules:
    import huey.storage
else:
    sys.modules["redis"] = None  # type: ignore[assignment]  # huey's `import redis` raises ImportError
    try:
        import huey.storage
    finally:
        del sys.modules["redis"]

from huey import Huey
from huey.api import Task, TaskWrapper
from huey.consumer import Consumer
from huey.registry import Message
from huey.serializer import Serializer
from huey.storage import PriorityRedisStorage, SqliteStorage

__all__ = ["Consumer", "Huey", "Message", "PriorityRedisStorage", "Serializer", "SqliteStorage", "Task",
           "TaskWrapper", "with_redis"]


def with_redis() -> None:
    """Give huey's Redis storages the names its import would have bound (``RedisStorage`` reads the
    client class from a class attribute, the rest from module globals at call time)."""
    storage = huey.storage
    if storage.Redis is not None:
        return
    from redis import ConnectionPool, Redis
    from redis.exceptions import ConnectionError, TimeoutError

    storage.ConnectionPool, storage.Redis = ConnectionPool, Redis
    storage.ConnectionError, storage.TimeoutError = ConnectionError, TimeoutError
    storage.RedisStorage.redis_client = Redis
