"""`rlrctl`: train, score, inspect and import RLR models."""

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
    "train": ("cli_model", "train"), "score": ("cli_model", "score"),
    "info": ("cli_model", "info"), "import-official": ("cli_model", "import_official"),
    "synthetic": ("cli_model", "synthetic"), "eval": ("cli_eval", "evaluate"),
    "calibrate": ("cli_eval", "calibrate"), "demo": ("cli_demo", "demo"),
    "redis": ("cli_demo", "redis_server"), "produce": ("cli_produce", "produce"),
    "worker": ("cli_worker", "worker"), "check": ("cli_worker", "check"),
    "alerts": ("cli_alerts", "alerts"), "bridge": ("cli_alerts", "bridge"),
    "models": ("cli_registry", "models"), "deploy": ("cli_registry", "deploy"),
    "promote": ("cli_registry", "promote"), "rollback": ("cli_registry", "rollback"),
    "undeploy": ("cli_registry", "undeploy"), "status": ("cli_registry", "status"),
    "trainer": ("cli_jobs", "trainer"), "jobs": ("cli_jobs", "jobs_group"),
    "collect": ("cli_collect", "collect"),
}


def _load(name: str) -> click.Command:
    module, attr = _COMMANDS[name]
    return getattr(importlib.import_module(f"daemon.{module}"), attr)


if __name__ == "__main__":
    main()
