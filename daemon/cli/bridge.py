"""`rlrctl bridge <name>`: one subcommand per registered bridge (`daemon.line.bridges`), built
from the description the bridge gives (`BridgeSpec`: name, help, options)."""

from __future__ import annotations

from typing import Any

import click

from daemon.cli.options import lines_value, redis_options, settings_from
from daemon.line.bridges import registry
from daemon.line.bridges.base import BridgeSpec, Option

_TYPES = {"text": None, "flag": None, "port": click.IntRange(0, 65535)}


def _option(opt: Option):
    kwargs: dict[str, Any] = {"help": opt.help}
    if opt.kind == "flag":
        kwargs["is_flag"] = True
    elif opt.kind == "choice":
        kwargs.update(type=click.Choice(list(opt.choices)), default=opt.default,
                      show_default=True)
    else:
        kwargs.update(type=_TYPES[opt.kind], default=opt.default)
    if opt.multiple:
        kwargs["multiple"] = True
    return click.option(opt.flag, opt.dest, **kwargs)


def command_for(spec: BridgeSpec) -> click.Command:
    """The click command of a bridge: its options, plus `--redis-url` / `--config`."""

    def callback(redis_url: str | None, config_file: str | None, **values: Any) -> None:
        overrides, passed = {}, {}
        for opt in spec.options:
            value = values[opt.dest]
            if opt.setting is None:
                passed[opt.dest] = value
            else:
                overrides[opt.setting] = lines_value(value) if opt.multiple else value
        settings = settings_from(config_file, redis_url, **overrides)
        for opt in spec.options:
            other = opt.runs.get(values[opt.dest])
            if other is not None:  # e.g. `bridge mqtt --format sparkplug`
                registry.get(other).run(settings)
                return
        spec.run(settings, **passed)

    callback = redis_options(callback)
    for opt in reversed(spec.options):
        callback = _option(opt)(callback)
    return click.command(spec.name, help=spec.help)(callback)


class _Bridges(click.Group):
    """The registered bridges as subcommands; running one imports that bridge's module only."""

    def list_commands(self, ctx: click.Context | None) -> list[str]:
        return list(registry.bridges())

    def get_command(self, ctx: click.Context | None, name: str) -> click.Command | None:
        try:
            return command_for(registry.get(name))
        except KeyError:
            return None


@click.group(cls=_Bridges)
def bridge() -> None:
    """Deliver alerts to PLC/SCADA integrations until SIGTERM / Ctrl-C."""
