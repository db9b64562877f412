"""`rlrctl`, the command line: one module per command or command group, named after it
(`rollout` holds deploy, promote, rollback and undeploy), shared options in `options`.

Commands load lazily (a command's module, and torch for the model commands, are imported only
when that command runs), so `rlrctl check` answers a probe quickly. rlr's and the daemon's own
errors become one line on stderr and exit status 2, not a traceback.

May import every other part. The only part that imports `click`.
"""

from __future__ import annotations

import importlib
import sys

import click

from rlr.errors import RLRError


def _fail(exc: Exception) -> None:
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(2)


class _Group(click.Group):
    """Loads commands lazily; turns rlr's own errors into one readable line and exit status
    2, not a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return _load(name) if name in _COMMANDS else None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RLRError as exc:
            _fail(exc)


@click.group(cls=_Group)
@click.version_option(package_name="rlr")
def main() -> None:
    """Unified multi-class visual anomaly detection (RLR) for factory lines."""


# command name -> (module, attribute): a command's module (and torch, for the model commands)
# is imported only when that command runs, so `rlrctl check` answers a probe quickly.
_COMMANDS = {
    "train": ("train", "train"), "score": ("score", "score"),
    "info": ("info", "info"), "import-official": ("import_official", "import_official"),
    "synthetic": ("synthetic", "synthetic"), "eval": ("evaluate", "evaluate"),
    "calibrate": ("calibrate", "calibrate"), "demo": ("demo", "demo"),
    "redis": ("demo", "redis_server"), "produce": ("produce", "produce"),
    "worker": ("worker", "worker"), "check": ("check", "check"),
    "alerts": ("alerts", "alerts"), "bridge": ("bridge", "bridge"),
    "models": ("models", "models"), "deploy": ("rollout", "deploy"),
    "promote": ("rollout", "promote"), "rollback": ("rollout", "rollback"),
    "undeploy": ("rollout", "undeploy"), "status": ("status", "status"),
    "trainer": ("jobs", "trainer"), "jobs": ("jobs", "jobs_group"),
    "collect": ("collect", "collect"), "health": ("camera_health", "health"),
    "export": ("engines", "export"), "engines": ("engines", "engines_group"),
    "console": ("console", "console"),
    "records": ("records", "records"), "recorder": ("records", "recorder"),
    "trigger": ("trigger", "trigger"), "recipe": ("recipe", "recipe"),
}


def _load(name: str) -> click.Command:
    module, attr = _COMMANDS[name]
    return getattr(importlib.import_module(f"daemon.cli.{module}"), attr)
