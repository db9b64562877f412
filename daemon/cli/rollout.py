"""`rlrctl deploy`, `promote`, `rollback`, `undeploy`: a line's rollout of model versions
(production, canary, shadow)."""

from __future__ import annotations

from pathlib import Path

import click

from daemon.cli.models import open_registry
from daemon.cli.options import redis_options
from daemon.models.registry import Registry
from daemon.models.rollout import Rollout
from daemon.models.versions import who


def _describe(ro: Rollout) -> str:
    return (f"line {ro.line} (revision {ro.revision}): production {ro.production or '-'}"
            f" (previous {ro.previous or '-'}), canary {ro.describe_canary()}, "
            f"shadow {ro.shadow or '-'}")


def _resolve_model(reg: Registry, model: str, note: str) -> str:
    path = Path(model)
    if path.is_file():
        known = {v.id for v in reg.list()}
        v = reg.register_file(path, who(), note=note)
        click.echo(f"{'already registered' if v.id in known else 'registered'} {path} as {v.id}")
        return v.id
    if path.suffix in (".rlr", ".safetensors") or "/" in model:
        raise click.BadParameter(f"{model} does not exist; give a model version id "
                                 "(rlrctl models) or the path of a .rlr file", param_hint="MODEL")
    return reg.resolve(model).id


@click.command()
@click.argument("model")
@click.option("--line", required=True, help="Line to deploy on.")
@click.option("--canary", is_flag=True, help="Serve it to some cameras only (--cameras or "
              "--percent).")
@click.option("--cameras", help="Canary cameras, comma-separated.")
@click.option("--percent", type=float, help="Canary share of cameras (stable per camera id).")
@click.option("--shadow", is_flag=True, help="Score every frame with it too, into its "
              "own results stream; it never alerts.")
@click.option("--why", default="", help="Reason, kept in the rollout history.")
@click.option("--note", default="", help="Note for a version registered from a file.")
@redis_options
def deploy(model, line, canary, cameras, percent, shadow, why, note, redis_url, config_file):
    """Deploy MODEL (a version id, or a .rlr file to register first) on a line.

    Default: it becomes the line's production model (the old one is kept for rollback).
    """
    if canary and shadow:
        raise click.UsageError("choose --canary or --shadow, not both")
    if (cameras or percent is not None) and not canary:
        raise click.UsageError("--cameras / --percent go with --canary")
    if canary and (not cameras) == (percent is None):
        raise click.UsageError("--canary needs --cameras a,b or --percent P (one of them)")
    _, reg = open_registry(redis_url, config_file)
    vid = _resolve_model(reg, model, note)
    mode = "canary" if canary else "shadow" if shadow else "production"
    cams = [c for c in cameras.split(",")] if cameras else None
    ro = reg.deploy(line, vid, mode=mode, cameras=cams, percent=percent, by=who(), why=why)
    click.echo(f"{vid} deployed as {mode}; " + _describe(ro))


@click.command()
@click.option("--line", required=True, help="Line whose canary becomes production.")
@click.option("--why", default="", help="Reason, kept in the rollout history.")
@redis_options
def promote(line, why, redis_url, config_file):
    """Make the line's canary its production model."""
    _, reg = open_registry(redis_url, config_file)
    ro = reg.promote(line, by=who(), why=why)
    click.echo(f"promoted {ro.production}; " + _describe(ro))


@click.command()
@click.option("--line", required=True, help="Line to roll back.")
@click.option("--why", default="", help="Reason, kept in the rollout history.")
@redis_options
def rollback(line, why, redis_url, config_file):
    """Put the previous production model back on the line."""
    _, reg = open_registry(redis_url, config_file)
    ro = reg.rollback(line, by=who(), why=why)
    click.echo(f"rolled back to {ro.production}; " + _describe(ro))


@click.command()
@click.option("--line", required=True)
@click.option("--canary", "alias", flag_value="canary", help="End the canary.")
@click.option("--shadow", "alias", flag_value="shadow", help="End the shadow.")
@click.option("--why", default="", help="Reason, kept in the rollout history.")
@redis_options
def undeploy(line, alias, why, redis_url, config_file):
    """End a line's canary or shadow (production changes with deploy or rollback)."""
    if alias is None:
        raise click.UsageError("say what to end: --canary or --shadow")
    _, reg = open_registry(redis_url, config_file)
    ro = reg.clear(line, alias, by=who(), why=why)
    click.echo(f"{alias} ended; " + _describe(ro))


