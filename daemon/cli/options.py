"""Options and set-up shared by the commands: `--config` / `--redis-url`, settings, and a
Redis connection that answered before the command goes on. Defined once, used everywhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from daemon.cli.settings import AllSettings, load_settings
from daemon.wire.settings import RedisSettings

F = TypeVar("F", bound=Callable[..., Any])


def redis_options(f: F) -> F:
    """`--redis-url` and `--config FILE`: every command that talks to Redis takes them."""
    f = click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="Settings file (KEY=value lines) [RLR_CONFIG].")(f)
    return click.option("--redis-url", help="Redis URL [RLR_REDIS_URL].")(f)


def settings_from(config_file: str | None, redis_url: str | None, **overrides: Any) -> AllSettings:
    """Settings from the options (a group's own `--config` / `--redis-url` count too), the
    environment and the settings file. Overrides left None keep what those say."""
    ctx = click.get_current_context(silent=True)
    parent = ctx.parent.params if ctx is not None and ctx.parent is not None else {}
    return load_settings(config_file or parent.get("config_file"),
                         redis_url=redis_url or parent.get("redis_url"), **overrides)


def connect(settings: RedisSettings, timeout_s: float | None = None):
    """A Redis client whose server answered (waiting up to `timeout_s`); a one-line error
    naming RLR_REDIS_URL otherwise."""
    from daemon.wire.clients import connect_ready

    return connect_ready(settings, timeout_s)


def lines_value(values: tuple[str, ...]) -> str | None:
    """Repeated `--line` options as the RLR_LINES value (None: not given)."""
    return ",".join(values) if values else None
