"""`rlrctl`: train, score, inspect and import RLR models."""

from __future__ import annotations

import sys

import click

from rlr.errors import RLRError


def _fail(exc: Exception) -> None:
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(2)


class _Group(click.Group):
    """Turns rlr's own errors into one readable line and exit status 2, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RLRError as exc:
            _fail(exc)


@click.group(cls=_Group)
@click.version_option(package_name="rlr")
def main() -> None:
    """Unified multi-class visual anomaly detection (RLR) for factory lines."""


def _register() -> None:
    from daemon.cli_eval import calibrate, evaluate
    from daemon.cli_model import import_official, info, score, synthetic, train

    for cmd in (train, score, info, import_official, synthetic, evaluate, calibrate):
        main.add_command(cmd)


_register()


if __name__ == "__main__":
    main()
