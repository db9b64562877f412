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
    from daemon import (
        cli_alerts,
        cli_collect,
        cli_demo,
        cli_eval,
        cli_jobs,
        cli_model,
        cli_produce,
        cli_registry,
        cli_worker,
    )

    for cmd in (cli_model.train, cli_model.score, cli_model.info, cli_model.import_official,
                cli_model.synthetic, cli_eval.evaluate, cli_eval.calibrate,
                cli_demo.demo, cli_demo.redis_server, cli_produce.produce, cli_worker.worker,
                cli_worker.check,
                cli_alerts.alerts, cli_alerts.bridge,
                cli_registry.models, cli_registry.deploy, cli_registry.promote,
                cli_registry.rollback, cli_registry.undeploy, cli_registry.status,
                cli_jobs.trainer, cli_jobs.jobs_group, cli_collect.collect):
        main.add_command(cmd)


_register()


if __name__ == "__main__":
    main()
