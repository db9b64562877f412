"""Redis clients built from settings (URL, TLS, unix socket, ACL user / password), the errors
that mean "Redis is away or refuses writes for now" (`away`, `TRANSIENT`); reconnect loops wait
with `daemon.wire.backoff.Backoff`.

Multi-stream reads and consumer groups live in `daemon.wire.groups`.
"""

from __future__ import annotations

import time

import redis
import redis.asyncio
import redis.exceptions

from daemon.errors import RedisUnavailable
from daemon.wire.settings import RedisSettings

# Errors that mean "Redis is away, or refuses writes, for now": wait and retry, never crash.
# Out of memory (maxmemory with noeviction) and read-only replicas clear without restarting
# anything, as do cluster fail-overs.
TRANSIENT = (redis.ConnectionError, redis.TimeoutError, ConnectionError, OSError,
             redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError,
             redis.exceptions.TryAgainError, redis.exceptions.ClusterDownError,
             redis.exceptions.MasterDownError)
# Replies that mean the same but that redis-py cannot always classify: inside a script or a
# pipeline the reply is wrapped ("Error running script ... -OOM command not allowed"). MISCONF:
# persistence failed (a full disk): writes are refused until it works again.
_AWAY_REPLIES = ("OOM command not allowed", "MISCONF ", "READONLY ", "BUSY ", "LOADING ",
                 "NOREPLICAS ", "MASTERDOWN ", "TRYAGAIN ", "CLUSTERDOWN ")


def away(exc: BaseException) -> bool:
    """True when `exc` means Redis is away or refuses writes for now (retry later)."""
    if isinstance(exc, TRANSIENT):
        return True
    message = str(exc)
    return isinstance(exc, redis.ResponseError) and any(r in message for r in _AWAY_REPLIES)


def _kwargs(settings: RedisSettings) -> dict:
    kwargs: dict = {"socket_timeout": settings.redis_timeout_s,
                    "socket_connect_timeout": min(settings.redis_timeout_s, 5.0),
                    "health_check_interval": 15}
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    if settings.redis_password is not None:
        kwargs["password"] = settings.redis_password.get_secret_value()
    return kwargs


def connect(settings: RedisSettings) -> redis.Redis:
    """A synchronous client (binary replies). Does not contact the server yet.

    With RLR_REDIS_CLUSTER the URL names any node of a Redis Cluster and the cluster client
    routes each command to the shard of its key (every key of a line shares `{line}`)."""
    if settings.redis_cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(settings.effective_redis_url, **_cluster_kwargs(settings))
    return redis.Redis.from_url(settings.effective_redis_url, **_kwargs(settings))


def connect_async(settings: RedisSettings) -> redis.asyncio.Redis:
    if settings.redis_cluster:
        from redis.asyncio.cluster import RedisCluster

        return RedisCluster.from_url(settings.effective_redis_url, **_cluster_kwargs(settings))
    return redis.asyncio.Redis.from_url(settings.effective_redis_url, **_kwargs(settings))


def is_cluster(client) -> bool:
    return type(client).__name__ == "RedisCluster"


def _cluster_kwargs(settings: RedisSettings) -> dict:
    kwargs = _kwargs(settings)
    kwargs.pop("health_check_interval", None)
    return kwargs


def describe(exc: Exception, url: str) -> RedisUnavailable:
    shown = _hide_password(url)
    if isinstance(exc, redis.exceptions.AuthenticationError) or \
            "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
        return RedisUnavailable(f"Redis at {shown} refused the credentials ({exc}); set "
                                "RLR_REDIS_USERNAME / RLR_REDIS_PASSWORD or fix RLR_REDIS_URL")
    return RedisUnavailable(f"cannot reach Redis at {shown} ({exc}); start it, or point "
                            "RLR_REDIS_URL at your server (rlrctl demo starts an embedded one)")


def ping(client: redis.Redis, url: str) -> None:
    try:
        client.ping()
    except redis.RedisError as exc:
        raise describe(exc, url) from None


def connect_ready(settings: RedisSettings, timeout_s: float | None = None) -> redis.Redis:
    """A synchronous client whose server answered a PING (waiting up to `timeout_s`, by
    default the socket timeout capped at 10 s); `RedisUnavailable` otherwise."""
    client = connect(settings)
    wait = min(settings.redis_timeout_s, 10.0) if timeout_s is None else timeout_s
    wait_ready(client, settings.effective_redis_url, wait)
    return client


def wait_ready(client: redis.Redis, url: str, timeout_s: float) -> None:
    """Ping until Redis answers or `timeout_s` passes (then `RedisUnavailable`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.ping()
            return
        except redis.AuthenticationError as exc:
            raise describe(exc, url) from None
        except redis.RedisError as exc:
            if time.monotonic() > deadline:
                raise describe(exc, url) from None
            time.sleep(0.2)


def _hide_password(url: str) -> str:
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':***' if ':' in creds else user}@{host}"
