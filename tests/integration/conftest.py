"""Integration fixtures: a real Redis server (127.0.0.1:6379 when reachable, else embedded)."""

from __future__ import annotations

import contextlib
import uuid

import pytest
import redis

from daemon.line.embedded import EmbeddedRedis

LOCAL_REDIS = "redis://127.0.0.1:6379/0"


def _reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


@pytest.fixture(scope="session")
def redis_url():
    """URL of a real Redis server for this test session."""
    if _reachable(LOCAL_REDIS):
        yield LOCAL_REDIS
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture
def line(redis_url):
    """A fresh line name; its keys are deleted afterwards (the shared Redis stays clean)."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    with contextlib.suppress(redis.RedisError):
        keys = list(client.scan_iter(match=f"rlr:*{{{name}}}*", count=1000))
        if keys:
            client.delete(*keys)


@pytest.fixture
def rclient(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
