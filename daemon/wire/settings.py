"""The wire's settings: the Redis connection, the lines and consumer group a process reads,
stream caps and worker liveness; `WireSettings` is what every process that reads a stream
composes."""

from __future__ import annotations

import os
import re
import socket
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode
from redis.connection import parse_url

from daemon.settings import PartSettings, check_name

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_URL_SCHEMES = ("redis://", "rediss://", "unix://")


class RedisSettings(PartSettings):
    """The Redis connection every process opens."""

    redis_url: str | None = Field(None, description="redis://, rediss:// (TLS) or unix:// URL; "
                                  "unset: 127.0.0.1:6379 (the demo starts an embedded Redis)")
    redis_username: str | None = Field(None, description="ACL user (overrides the URL's)")
    redis_password: SecretStr | None = Field(None, description="password (overrides the URL's)")
    redis_timeout_s: float = Field(10.0, gt=0, description="socket timeout for Redis calls")
    redis_cluster: bool = Field(False, description="RLR_REDIS_URL names one node of a Redis "
                                "Cluster: use the cluster client (lines spread over shards)")

    @field_validator("redis_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        hint = ("use redis://host:port/db, rediss://host:port/db (TLS) or "
                "unix:///path/to/redis.sock")
        if value is not None and not value.startswith(_URL_SCHEMES):
            raise ValueError(f"{value!r} is not a Redis URL; {hint}")
        if value is not None:
            try:
                parse_url(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a valid Redis URL ({exc}); {hint}") from None
            path = urlsplit(value).path
            if not value.startswith("unix://") and not re.fullmatch(r"/?|/\d+", path):
                # redis-py would silently use db 0 for redis://host:6379/abc
                raise ValueError(f"{value!r}: {path!r} is not a database number; {hint}")
        return value

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or DEFAULT_REDIS_URL


class GroupSettings(PartSettings):
    """The lines a process serves and how it reads them through its consumer group."""

    lines: Annotated[list[str], NoDecode] = Field(["line1"], description="comma-separated lines")
    group: str = Field("rlr-workers", description="consumer group of the workers on a line")
    consumer: str | None = Field(None, description="this worker's name (default host-pid)")
    block_ms: int = Field(500, ge=1, le=60_000, description="XREADGROUP BLOCK when idle")
    claim_idle_ms: int = Field(30_000, ge=100,
                               description="idle time after which a pending frame is taken over")
    claim_interval_s: float = Field(5.0, gt=0, description="how often to look for stale frames")

    @field_validator("lines", mode="before")
    @classmethod
    def _split_lines(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("lines")
    @classmethod
    def _check_lines(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one line name")
        for name in value:
            check_name(name)
        if len(set(value)) != len(value):
            raise ValueError(f"line names repeat: {value}")
        return value

    @field_validator("group", "consumer")
    @classmethod
    def _check_names(cls, value: str | None) -> str | None:
        return value if value is None else check_name(value)

    @property
    def line(self) -> str:
        """The first line: what single-line commands (produce, alerts) use."""
        return self.lines[0]

    @property
    def consumer_name(self) -> str:
        return self.consumer or f"{socket.gethostname()}-{os.getpid()}"


class StreamCapSettings(PartSettings):
    """How long each stream of a line may grow (MAXLEN ~)."""

    frames_maxlen: int = Field(10_000, ge=10, description="cap of rlr:frames:{line}")
    results_maxlen: int = Field(100_000, ge=10, description="cap of rlr:results:{line}")
    alerts_maxlen: int = Field(10_000, ge=10, description="cap of rlr:alerts:{line}")
    dlq_maxlen: int = Field(10_000, ge=10, description="cap of rlr:dlq:{line}")
    health_maxlen: int = Field(10_000, ge=10, description="cap of rlr:health:{line}")
    parts_maxlen: int = Field(100_000, ge=10, description="cap of rlr:parts:{line}")
    health_camera_maxlen: int = Field(500, ge=1, description="events of one camera kept in "
                                      "rlr:health:{line}: its oldest go first, so one camera "
                                      "cannot push the others' history out")


class LivenessSettings(PartSettings):
    """Heartbeats a daemon writes, and when `rlrctl check` calls it dead or stuck."""

    heartbeat_s: float = Field(2.0, gt=0, description="heartbeat interval")
    heartbeat_ttl_s: float = Field(10.0, gt=0, description="heartbeat key TTL")
    stall_s: float = Field(60.0, gt=0, description="`rlrctl check` fails when the worker loop "
                           "made no progress for this long")

    @model_validator(mode="after")
    def _check_heartbeat(self) -> LivenessSettings:
        if self.heartbeat_ttl_s <= self.heartbeat_s:
            raise ValueError(f"RLR_HEARTBEAT_TTL_S={self.heartbeat_ttl_s} must exceed "
                             f"RLR_HEARTBEAT_S={self.heartbeat_s}, or healthy workers look dead")
        return self


class WireSettings(RedisSettings, GroupSettings):
    """A process that reads lines' streams: the connection and the consumer group."""

    @model_validator(mode="after")
    def _check_block(self) -> WireSettings:
        if self.block_ms >= self.redis_timeout_s * 1000:
            raise ValueError(f"RLR_BLOCK_MS={self.block_ms} must be below RLR_REDIS_TIMEOUT_S="
                             f"{self.redis_timeout_s} (in ms), or idle reads time out")
        return self
