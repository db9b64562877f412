"""Settings of the line console (`rlrctl console`) and of the process that serves it."""

from __future__ import annotations

from pydantic import Field, SecretStr

from daemon.logs import LogSettings
from daemon.settings import PartSettings
from daemon.wire.settings import WireSettings


class ConsoleSettings(PartSettings):
    """Where the console listens and the operator token it asks for."""

    console_host: str = Field("127.0.0.1", description="address `rlrctl console` binds")
    console_port: int = Field(8780, ge=1, le=65535, description="port of the console")
    console_hosts: str | None = Field(None, description="Host names the console answers, "
                                      "comma-separated (* for any); unset: the loopback "
                                      "names, the bind address and this machine's name")
    console_token: SecretStr | None = Field(None, description="operator token: needed for every "
                                            "console action, and for every request when the "
                                            "console is bound beyond loopback")


class ConsoleServerSettings(WireSettings, LogSettings, ConsoleSettings):
    """The console process (`rlrctl console`)."""
