"""The composition of every part's settings: what `rlrctl` loads, what the unknown-name check
knows, and what docs/configuration.md is generated from.

    python -m daemon.cli.settings --markdown > docs/configuration.md   (make docs)
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

from daemon.console.settings import ConsoleServerSettings, ConsoleSettings
from daemon.jobs.settings import JobSettings, TrainerSettings
from daemon.line.settings import (
    AlertBridgeSettings,
    BridgeSettings,
    ModbusSettings,
    MqttSettings,
    OpcuaSettings,
    PlcBridgeSettings,
    PlcSettings,
    ProducerSettings,
    SparkplugSettings,
    WebhookSettings,
)
from daemon.logs import LogSettings
from daemon.models.settings import DeviceSettings, RolloutSettings
from daemon.recipes.settings import RecipeSettings
from daemon.records.settings import RecorderSettings, RecordsSettings
from daemon.serve.settings import (
    AlertSettings,
    BatchSettings,
    CameraHealthSettings,
    DecodeSettings,
    DeliverySettings,
    EngineSettings,
    MetricsSettings,
    PublishSettings,
    StationSettings,
    WorkerSettings,
)
from daemon.settings import PartSettings, describe_settings, load, own_fields
from daemon.supervisor import SupervisorSettings
from daemon.wire.settings import GroupSettings, LivenessSettings, RedisSettings, StreamCapSettings

# Every part, in the order docs/configuration.md lists them.
PARTS: tuple[type[PartSettings], ...] = (
    RedisSettings, GroupSettings, StreamCapSettings, LivenessSettings,
    BatchSettings, DeliverySettings, DecodeSettings, DeviceSettings, EngineSettings,
    PublishSettings, StationSettings, AlertSettings, CameraHealthSettings, MetricsSettings,
    LogSettings, SupervisorSettings, RolloutSettings, ConsoleSettings, JobSettings,
    MqttSettings, WebhookSettings, BridgeSettings, PlcSettings, ModbusSettings, OpcuaSettings,
    SparkplugSettings, RecordsSettings, RecipeSettings,
)


class AllSettings(WorkerSettings, TrainerSettings, ConsoleServerSettings, AlertBridgeSettings,
                  PlcBridgeSettings, ProducerSettings, RecorderSettings, RecipeSettings):
    """Every process's settings: what `rlrctl` loads, so any command can pass it on."""


def load_settings(config_file: str | os.PathLike[str] | None = None,
                  **overrides: Any) -> AllSettings:
    """Every setting from the environment, `config_file` (or `RLR_CONFIG`) and `overrides`
    (None: not given). Raises `SettingsError` naming every bad setting."""
    return load(AllSettings, config_file, **overrides)


_HEAD = """\
# Configuration

What every `RLR_*` setting of the daemon commands does, part by part, with its default.

The model library takes explicit configuration objects and never reads the environment. The
daemon commands read `RLR_*` settings (pydantic-settings), in this order of precedence: CLI
option > environment > settings file (`--config FILE` or `RLR_CONFIG=FILE`, `KEY=value` lines:
the format of systemd `EnvironmentFile=`, compose `env_file:` and Kubernetes ConfigMaps) >
default. An invalid value, a misspelt `RLR_` name or an inconsistent pair (e.g.
`RLR_ALERT_K` > `RLR_ALERT_N`) stops the command at start with the variable's name.

A settings file:

```
# /etc/rlr/rlr.env
RLR_REDIS_URL=redis://10.0.0.5:6379/0
RLR_LINES=press,paint
export RLR_BATCH_SIZE=16
```

Comments, blank lines and `export ` are allowed; names without the `RLR_` prefix are left
alone (the file may hold other programs' settings), except ours with the prefix forgotten.

This page is generated from the settings classes: `make docs` (`python -m daemon.cli.settings
--markdown > docs/configuration.md`) rewrites it.
"""


# Each process's composition, for the page's last section.
PROCESSES: tuple[tuple[str, type[PartSettings]], ...] = (
    ("rlrctl worker", WorkerSettings), ("rlrctl trainer", TrainerSettings),
    ("rlrctl console", ConsoleServerSettings),
    ("rlrctl bridge mqtt / webhook", AlertBridgeSettings),
    ("rlrctl bridge modbus / opcua / sparkplug", PlcBridgeSettings),
    ("rlrctl produce", ProducerSettings),
    ("rlrctl recorder / records", RecorderSettings),
)


_ACRONYMS = {"Mqtt": "MQTT", "Opcua": "OPC UA", "Plc": "PLC"}


def _title(part: type[PartSettings]) -> str:
    """`CameraHealthSettings` -> "Camera health"."""
    words = re.findall(r"[A-Z][a-z]*", part.__name__.removesuffix("Settings"))
    words = [_ACRONYMS.get(w, w if i == 0 else w.lower()) for i, w in enumerate(words)]
    return " ".join(words)


def markdown() -> str:
    """docs/configuration.md: a section per part (its purpose, then its settings), then which
    parts each process reads."""
    out = [_HEAD]
    for part in PARTS:
        purpose = " ".join((part.__doc__ or "").split("\n\n")[0].split())
        out += [f"## {_title(part)}", "", purpose, "",
                f"`{part.__name__}` in `{part.__module__.replace('.', '/')}.py`", "",
                "| variable | default | meaning |", "|---|---|---|"]
        for var, default, text in describe_settings(part, own_fields(part)):
            shown = f"`{default}`" if default else ""
            out.append(f"| `{var}` | {shown} | {text.replace('|', '/')} |")
        out.append("")
    out += ["## Processes", "",
            "Each process's settings class inherits the parts it reads; `rlrctl` loads "
            "`AllSettings` (every part), so a setting of any part is known to every command.", "",
            "| process | class | parts |", "|---|---|---|"]
    for name, cls in PROCESSES:
        parts = ", ".join(p.__name__ for p in PARTS if issubclass(cls, p))
        out.append(f"| `{name}` | `{cls.__name__}` in `{cls.__module__.replace('.', '/')}.py` "
                   f"| {parts} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m daemon.cli.settings --markdown > docs/configuration.md")
    sys.stdout.write(markdown())
